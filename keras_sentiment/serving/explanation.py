"""Explanations: each word's share of the score, in plain TensorFlow ops the served graph runs.

The score explained is the log-odds of the predicted class k under the probabilities the model
serves, the n-gram mix included: F = log p_k - log(1 - p_k), from the logits in the log
domain, so a confident answer stays finite. Integrated gradients (Sundararajan et al. 2017)
run along one straight path for both branches at once:
- the baseline: every word's embedding a zero vector at its own position (the ids' mask kept:
  the LSTM reads as many steps) and every n-gram indicator 0 (the NB-LR logit is its bias);
  `baseline_score` is F there;
- the LSTM part: the gradient of F with respect to each word's embedding at the path's points,
  averaged by the trapezoidal rule (TensorFlow's tutorial), times the embedding; the points
  run as one batch through `ServingNetwork`'s padded path, differentiable
  (`serving_network._differentiable_lstm`: BlockLSTMV2's registered gradient is wrong);
- the n-gram part: the NB-LR logit is linear in the binary indicators, so n-gram j's gradient
  is dF/dlogit * c_j (c_j: its coefficient times its NB ratio) and its attribution c_j times
  the path's mean of dF/dlogit: its exact contribution, weighted by what the mix passes on.
  Each present n-gram counts once, as in the model, shared equally among the words of all
  its occurrences.
The attributions then sum to F(text) - F(baseline) up to the trapezoid's error (completeness:
within 5% of the gap or 0.02, `TOLERANCE`). Max pooling's switches make the gradient jump
along the path, so the error falls as 1/steps, not 1/steps^2: on 200 IMDB test reviews (a
2,000-review BiLSTM-128 with the mix), error over its bound with 8 intervals p50 0.47, worst
1.64, 14.5% over; 16 worst 0.78; 32 worst 0.40. Each point costs a forward and a backward
pass, so `STEPS` is 8; a text past `REFINE_AT` of its bound then gets its intervals' midpoints
(trapezoid(2m) = (trapezoid(m) + midpoints(m)) / 2), again until complete or MAX_INTERVALS.
A model whose score swings wildly along the path (an untrained LSTM under a sharpened head,
in tests/test_explain.py) can need 128 or more.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.network.model import class_names_of, split_text_model
from keras_sentiment.network.ngrams import NgramScoring
from keras_sentiment.network.serving_network import ServingNetwork
from keras_sentiment.text.preprocessing import DROPPED, OOV, PAD, TextPreprocessor, separate

STEPS = 8  # trapezoid intervals along the path (measured: see the module's docstring)
TOLERANCE = (0.05, 0.02)  # completeness: within 5% of score - baseline_score, or 0.02
REFINE_AT = 0.9  # of the bound: what is returned keeps a margin
MAX_INTERVALS = 512  # refining stops there (7 passes: 8, 16, ... 512 intervals)
CHUNK_CELLS = 2**15  # path rows x time steps explained at once: bounds a request's memory

LogitsFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def tokens_and_ids(pre: TextPreprocessor, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The words the model reads and their ids, aligned: [batch, time], padded with "" and 0.

    The same ids as `pre(texts)` (tests/test_explain.py checks): standardized tokens, dropped
    stopwords gone, cut to the sequence length. An empty text reads one unknown token, shown
    as the vocabulary's (`[UNK]`).
    """
    tokens = tf.strings.split(separate(texts))
    ids = tokens.with_flat_values(pre.table.lookup(tokens.flat_values))
    if pre.drop:
        kept = tf.not_equal(ids, DROPPED)
        tokens, ids = tf.ragged.boolean_mask(tokens, kept), tf.ragged.boolean_mask(ids, kept)
    n = pre.sequence_length
    tokens, ids = (r[:, -n:] if pre.truncate == "pre" else r[:, :n] for r in (tokens, ids))
    shape = tf.stack([ids.nrows(), tf.maximum(ids.bounding_shape(1), 1)])
    ids = tf.cast(ids.to_tensor(PAD, shape=shape), tf.int32)
    tokens = tokens.to_tensor("", shape=shape)
    empty = tf.equal(ids[:, :1], PAD)
    ids = tf.concat([tf.where(empty, OOV, ids[:, :1]), ids[:, 1:]], 1)
    unknown = tf.constant(pre.vocabulary[OOV])
    return tf.concat([tf.where(empty, unknown, tokens[:, :1]), tokens[:, 1:]], 1), ids


def ngram_shares(scoring: NgramScoring, ids: tf.Tensor) -> tf.Tensor:
    """Each word's share of the NB-LR logit less its bias: [batch, time] for right-padded ids.

    Each distinct n-gram of a row counts once (binary features); its coefficient is split
    equally among the words of all its occurrences. A row's shares sum to its logit - bias.
    """
    grams = scoring.grams(ids)  # [batch, width + (width - 1) + ...], one order after another
    batch, width, columns = tf.shape(ids)[0], tf.shape(ids)[1], tf.shape(grams)[1]
    spans = [tf.maximum(width - n + 1, 0) for n in range(1, scoring.order + 1)]
    order = tf.concat([tf.fill([s], n) for n, s in enumerate(spans, 1)], 0)  # per column
    start = tf.concat([tf.range(s) for s in spans], 0)  # the n-gram's first word
    index, known = scoring.find(tf.reshape(grams, [-1]))
    rows = tf.range(tf.size(grams, out_type=tf.int64)) // tf.cast(tf.maximum(columns, 1), tf.int64)
    _, slot, counts = tf.unique_with_counts(tf.where(known, rows * scoring.size + index, -1))
    weight = tf.where(known, scoring.weight_of(tf.where(known, index, 0)), 0.0)
    occurrences = tf.cast(tf.gather(counts, slot), tf.float32)
    share = tf.reshape(weight / occurrences, [batch, columns]) / tf.cast(order, tf.float32)
    values, targets = [], []
    row_start = tf.range(batch)[:, None] * width
    for k in range(scoring.order):  # the n-gram's (k + 1)-th word, where it has one
        values.append(tf.where(k < order, share, 0.0))
        targets.append(row_start + start + tf.minimum(k, order - 1))
    flat = [tf.reshape(tf.stack(t, -1), [-1]) for t in (values, targets)]
    return tf.reshape(tf.math.unsorted_segment_sum(*flat, batch * width), [batch, width])


def _log_probs(lstm_logits: tf.Tensor | None, ngram: tf.Tensor | None, weight: float):
    """log p of the served probabilities [rows, classes], stable where p is near 0 or 1."""
    parts = []
    if lstm_logits is not None:
        parts.append(tf.nn.log_softmax(lstm_logits) + float(np.log(weight)))
    if ngram is not None:  # the NB-LR's two classes: [1 - sigmoid, sigmoid]
        nb = tf.stack([tf.math.log_sigmoid(-ngram), tf.math.log_sigmoid(ngram)], 1)
        parts.append(nb + float(np.log1p(-weight)))
    return parts[0] if len(parts) == 1 else tf.reduce_logsumexp(tf.stack(parts), 0)


def _log_odds(log_probs: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """log p_k - log(1 - p_k) of class k [batch] for log probabilities [..., batch, classes]."""
    own = tf.equal(tf.range(tf.shape(log_probs)[-1]), k[:, None])
    chosen = tf.reduce_sum(tf.where(own, log_probs, 0.0), -1)
    return chosen - tf.reduce_logsumexp(tf.where(own, -np.inf, log_probs), -1)


def _rule(steps: int, midpoints: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Points on [0, 1] and their weights: the trapezoidal rule with `steps` intervals, or
    (`midpoints`) their midpoints, which halve the intervals of a trapezoid already taken:
    trapezoid(2m) = (trapezoid(m) + midpoint(m)) / 2. Both have steps + 1 points (the
    midpoints' last has weight 0), so one graph runs either."""
    ends = np.float32([0.5] + [1.0] * (steps - 1) + [0.5]) / steps
    middle = np.float32([1.0] * steps + [0.0]) / steps
    grid = np.linspace(0, 1, steps + 1, dtype=np.float32)
    centres = np.float32(list((np.arange(steps) + 0.5) / steps) + [1.0])
    return tf.where(midpoints, centres, grid), tf.where(midpoints, middle, ends)


def integrated_gradients(
    logits_fn: LogitsFn,
    x: tf.Tensor,
    lengths: tf.Tensor,
    ngram: tuple[tf.Tensor, tf.Tensor, float] | None,
    steps: int,
    segment: tuple,
    k: tf.Tensor,
    midpoints: bool | tf.Tensor = False,
) -> dict[str, tf.Tensor]:
    """Integrated gradients over one segment of the straight path, both branches at once.

    Args:
        logits_fn: embedded rows [rows, time, dim] and their lengths [rows] -> the LSTM's
            logits [rows, classes] (not called when the mix gives the LSTM no weight).
        x: the texts' embeddings [batch, time, dim], zero on padding.
        lengths: each text's real steps [batch].
        ngram: (the n-gram sum c_j of each text [batch], the NB-LR bias, the LSTM's weight in
            the mix), or None for a model without the branch.
        steps: intervals; the segment's steps + 1 points run as one batch.
        segment: (start, stop), the part of the path from the baseline (0) to the text (1).
        k: the class whose log-odds are explained [batch]; -1: the predicted one, which a
            trapezoid's segment must then end at the text to see.
        midpoints: the intervals' midpoints instead of the trapezoidal rule (see `_rule`).

    Returns:
        `lstm` [batch, time] (each word's LSTM attribution over the segment), `dlogit`
        [batch] (the integral of dF/d NB-LR logit over it), `first` and `last` (F at the
        trapezoid's ends), `probabilities` (at its end) and `label_id` (k).
    """
    points, batch = steps + 1, tf.shape(x)[0]
    grid, weights = _rule(steps, midpoints)
    alphas = segment[0] + (segment[1] - segment[0]) * grid
    xs = tf.reshape(alphas[:, None, None, None] * x[None], [-1, tf.shape(x)[1], tf.shape(x)[2]])
    weight = 1.0 if ngram is None else ngram[2]
    logit = None if ngram is None else ngram[1] + alphas[:, None] * ngram[0][None]  # [A, B]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        if logit is not None:
            tape.watch(logit)
        lstm = logits_fn(xs, tf.tile(lengths, [points])) if weight > 0 else None
        flat_logit = None if logit is None or weight == 1 else tf.reshape(logit, [-1])
        log_probs = tf.reshape(_log_probs(lstm, flat_logit, weight), [points, batch, -1])
        predicted = tf.argmax(log_probs[-1], -1, output_type=tf.int32)
        k = tf.where(k < 0, predicted, k)
        f = _log_odds(log_probs, k)  # [A, B]
        total = tf.reduce_sum(f)
    sources = [xs] + ([logit] if logit is not None else [])
    grads = tape.gradient(total, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    path = tf.reshape(grads[0], tf.concat([[points], tf.shape(x)], 0))
    weights *= segment[1] - segment[0]
    return {
        "lstm": tf.reduce_sum(x * tf.tensordot(weights, path, 1), -1),
        "dlogit": tf.tensordot(weights, grads[1], 1) if logit is not None else tf.zeros([batch]),
        "first": f[0],
        "last": f[-1],
        "probabilities": tf.exp(log_probs[-1]),
        "label_id": k,
    }


def _explain_chunk(ids, embeddings, logits_fn, scoring, classes: int, path: tuple, k) -> dict:
    """Attributions and scores of right-padded ids [batch, time] (no column all padding),
    the path (steps, segments, midpoints) cut into `segments` of `steps` intervals, run from
    the text back to the baseline, so that the first finds the predicted class where `k` is -1.
    """
    lengths = tf.math.count_nonzero(ids, 1, dtype=tf.int32)
    real = tf.sequence_mask(lengths, tf.shape(ids)[1], tf.float32)
    x = tf.gather(embeddings, ids) * real[:, :, None]
    ngram, shares = None, None
    if scoring is not None:
        shares = ngram_shares(scoring, ids)
        bias = tf.convert_to_tensor(scoring.bias)
        ngram = (tf.reduce_sum(shares, 1), bias, float(scoring.lstm_weight))
    steps, segments, midpoints = path
    cut = tf.cast(segments, tf.float32)

    def body(s, out):
        at, k = tf.cast(s, tf.float32), out["label_id"]
        part = integrated_gradients(
            logits_fn, x, lengths, ngram, steps, (at / cut, (at + 1) / cut), k, midpoints
        )
        last = tf.equal(s, segments - 1)
        return s - 1, {
            "lstm": out["lstm"] + part["lstm"],
            "dlogit": out["dlogit"] + part["dlogit"],
            "score": tf.where(last, part["last"], out["score"]),
            "baseline_score": part["first"],
            "probabilities": tf.where(last, part["probabilities"], out["probabilities"]),
            "label_id": part["label_id"],
        }

    n = tf.shape(ids)[0]
    out = {"lstm": tf.zeros_like(real), "dlogit": tf.zeros([n]), "score": tf.zeros([n])}
    out.update(baseline_score=tf.zeros([n]), probabilities=tf.zeros([n, classes]), label_id=k)
    out = tf.while_loop(lambda s, _: s >= 0, body, (segments - 1, out))[1]
    attributions = out.pop("lstm") * real
    dlogit = out.pop("dlogit")
    if shares is not None:
        attributions += shares * dlogit[:, None]
    return {"attributions": attributions, **out}


def _in_chunks(ids, embeddings, logits_fn, scoring, classes: int, path: tuple, k) -> dict:
    """`_explain_chunk` over right-padded ids [batch, time], CHUNK_CELLS path cells at a time.

    Texts go longest first, so a chunk pads little; each chunk holds as many texts as fit
    (at least one), which bounds the memory of a request of any size: more segments take
    more time, never more memory.
    """
    n, width = tf.shape(ids)[0], tf.shape(ids)[1]
    lengths = tf.math.count_nonzero(ids, 1, dtype=tf.int32)
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)

    def body(start, results):
        longest = tf.maximum(tf.gather(lengths, order[start]), 1)
        count = tf.clip_by_value(CHUNK_CELLS // ((path[0] + 1) * longest), 1, n - start)
        rows = order[start : start + count]
        chunk = tf.gather(ids, rows)[:, :longest]
        out = _explain_chunk(
            chunk, embeddings, logits_fn, scoring, classes, path, tf.gather(k, rows)
        )
        out["attributions"] = tf.pad(out["attributions"], [[0, 0], [0, width - longest]])
        at = rows[:, None]
        return start + count, {
            key: tf.tensor_scatter_nd_update(v, at, out[key]) for key, v in results.items()
        }

    results = {"attributions": tf.zeros([n, width]), "score": tf.zeros([n])}
    results.update(baseline_score=tf.zeros([n]), probabilities=tf.zeros([n, classes]))
    results["label_id"] = k
    return tf.while_loop(lambda start, _: start < n, body, (0, results))[1]


def completeness_error(out: dict) -> tf.Tensor:
    """|sum of attributions - (score - baseline_score)| over its bound per text (<= 1: complete)."""
    gap = out["score"] - out["baseline_score"]
    error = tf.abs(tf.reduce_sum(out["attributions"], 1) - gap)
    return error / tf.maximum(TOLERANCE[0] * tf.abs(gap), TOLERANCE[1])


def explain_ids(
    ids: tf.Tensor,
    embeddings: tf.Tensor,
    logits_fn: LogitsFn,
    scoring: NgramScoring | None,
    classes: int,
    steps: int = STEPS,
) -> dict[str, tf.Tensor]:
    """Explain right-padded ids [batch, time]: the trapezoid with `steps` intervals, in chunks;
    then, while a text's completeness error passes REFINE_AT of its bound, the midpoints of
    its intervals, which halve them (up to MAX_INTERVALS).

    Returns:
        `attributions` [batch, time], `score`, `baseline_score`, `probabilities`, `label_id`.
    """
    n = tf.shape(ids)[0]
    results = {"attributions": tf.zeros(tf.shape(ids)), "score": tf.zeros([n])}
    results.update(baseline_score=tf.zeros([n]), probabilities=tf.zeros([n, classes]))
    results["label_id"] = tf.fill([n], -1)  # the predicted class, found on the first pass

    def body(segments, rough, results):
        refining = segments > 0  # 0: the first pass, the trapezoid over the whole path
        path = (steps, tf.maximum(segments, 1), refining)
        k, at = tf.gather(results["label_id"], rough), rough[:, None]
        again = _in_chunks(tf.gather(ids, rough), embeddings, logits_fn, scoring, classes, path, k)
        halved = (tf.gather(results["attributions"], rough) + again["attributions"]) / 2
        again["attributions"] = tf.where(refining, halved, again["attributions"])
        updated = {
            key: tf.tensor_scatter_nd_update(v, at, again[key]) for key, v in results.items()
        }
        # A refining pass only halves the intervals: scores, probabilities and labels stay.
        results = {
            key: v if key == "attributions" else tf.where(refining, results[key], v)
            for key, v in updated.items()
        }
        rough = tf.cast(tf.where(completeness_error(results) > REFINE_AT)[:, 0], tf.int32)
        return tf.maximum(segments * 2, 1), rough, results

    def unfinished(segments, rough, _):
        return tf.logical_and(tf.size(rough) > 0, segments * 2 * steps <= MAX_INTERVALS)

    return tf.while_loop(unfinished, body, (0, tf.range(n), results))[2]


def _outputs(tokens: tf.Tensor, out: dict, class_names: list[str]) -> dict[str, tf.Tensor]:
    names = tf.constant(class_names)
    columns = tf.tile(names[None, :], [tf.shape(tokens)[0], 1])
    return {"tokens": tokens, **out, "label": tf.gather(names, out["label_id"]), "classes": columns}


def explain_function(
    pre: TextPreprocessor,
    network: ServingNetwork,
    class_names: list[str],
    ngrams: NgramScoring | None = None,
    steps: int = STEPS,
):
    """The `explain` signature: raw strings `text` -> each word's share of the score.

    Args:
        pre: the preprocessing layer (its tables serve as they are).
        network: the served LSTM network; its padded path is differentiated.
        class_names: the classes, in the order of the probability columns.
        ngrams: the served n-gram branch (`serving.ServingNgrams`), or None.
        steps: trapezoid intervals along the path.

    Returns:
        A `tf.function` with one input, `text` (`tf.string`, `[None]`), and the outputs
        `tokens` ([None, None] strings, padded with ""), `attributions` (float32, same shape,
        0 on padding), `score` and `baseline_score` (the predicted class's log-odds for the
        text and the baseline), `probabilities`, `label`, `label_id` and `classes`.

    Example:
        >>> explain = explain_function(pre, ServingNetwork(model), ["neg", "pos"])  # doctest: +SKIP
        >>> explain(tf.constant(["A dull film."]))["attributions"]  # doctest: +SKIP
    """

    def logits_fn(xs: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        return network.padded_logits(tf.transpose(xs, [1, 0, 2]), lengths, differentiable=True)

    # No autograph: the loops are tf.while_loop already, and converting them costs each export.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")], autograph=False)
    def explain(text):
        tokens, ids = tokens_and_ids(pre, text)
        out = explain_ids(ids, network.embeddings, logits_fn, ngrams, len(class_names), steps)
        return _outputs(tokens, out, class_names)

    return explain


def keras_explain_function(model: keras.Model, steps: int = STEPS):
    """The `explain` signature's equivalent for a raw-text Keras model (`text_model`).

    The same path, baseline and n-gram shares, computed through the Keras layers themselves
    (Keras' LSTM with the ids' mask, the NB-LR's binary search) rather than the served ops.

    Args:
        model: raw strings in, probabilities out, as `fit` makes it (`run.model`).
        steps: trapezoid intervals along the path.

    Returns:
        A `tf.function` from texts (`tf.string`, `[None]`) to the `explain` outputs.

    Example:
        >>> explain = keras_explain_function(run.model)  # doctest: +SKIP
        >>> explain(tf.constant(["A dull film."]))["tokens"]  # doctest: +SKIP
    """
    (pre, network, mix), class_names = split_text_model(model), class_names_of(model)
    embedding, *body, dense = network.layers

    def logits_fn(xs: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        h, mask = xs, tf.sequence_mask(lengths, tf.shape(xs)[1])
        for layer in body:
            masked = "mask" in inspect.signature(layer.call).parameters
            h = layer(h, mask=mask, training=False) if masked else layer(h, training=False)
        return tf.matmul(h, dense.kernel) + dense.bias

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def explain(text):
        tokens, ids = tokens_and_ids(pre, text)
        embeddings = tf.convert_to_tensor(embedding.embeddings)
        out = explain_ids(ids, embeddings, logits_fn, mix, len(class_names), steps)
        return _outputs(tokens, out, class_names)

    return explain

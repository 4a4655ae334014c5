"""Explanations: each word's share of the score, in plain TensorFlow ops the served graph runs.

The score explained is the log-odds of the predicted class k under the probabilities the model
serves: F = log p_k - log(1 - p_k). With the mix (two classes) that is +-s, the mix's log-odds
of the second class, a sum of its parts' log-odds each times its coefficient
(`network/mix.py`), so each part is explained on its own and the shares add up:
- the n-gram members: linear in their binary n-gram features, so each n-gram's contribution is
  exactly its coefficient; it is shared equally among the words of all its occurrences (each
  present n-gram counts once, as in the model), times the member's coefficient in the mix;
- the LSTM: integrated gradients (Sundararajan et al. 2017) of its part of F along a straight
  path from the baseline, every word's embedding a zero vector at its own position (the ids'
  mask kept: the LSTM reads as many steps), to the text: the gradient at the path's points,
  averaged by the trapezoidal rule (TensorFlow's tutorial), times the embedding. The points run
  as one batch through `ServingNetwork`'s padded path, differentiable
  (`serving_network._differentiable_lstm`: BlockLSTMV2's registered gradient is wrong).
  Without the mix (more than two classes, or no n-gram member) F is the LSTM's own log-odds,
  computed in the log domain so a confident answer stays finite.
`baseline_score` is F at the baseline: the zero embeddings, and no n-gram present (each
member's logit its bias). The attributions sum to F(text) - F(baseline) up to the trapezoid's
error (completeness: within RELATIVE_TOLERANCE of the gap or ABSOLUTE_TOLERANCE). Max pooling's
switches make the gradient jump along the path, so the error falls as 1/steps, not 1/steps^2,
and a few texts need many more intervals than most (benchmarks/README.md, "explain: intervals
along the path"). Each point costs a forward and a backward pass, so every text gets `STEPS`
intervals first; a text past `REFINE_AT` of its bound then gets its intervals' midpoints
(trapezoid(2m) = (trapezoid(m) + midpoints(m)) / 2), again until complete or MAX_INTERVALS.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.config import UserError
from keras_sentiment.network.mix import MixScoring, as_probabilities, log_odds
from keras_sentiment.network.model import class_names_of, split_text_model
from keras_sentiment.network.ngrams import NgramMix
from keras_sentiment.network.serving_network import ServingNetwork
from keras_sentiment.serving.graph import known_words
from keras_sentiment.text.preprocessing import TextPreprocessor, tokens_and_ids

STEPS = 8  # trapezoid intervals along the path on the first pass
RELATIVE_TOLERANCE = 0.05  # completeness: within 5% of score - baseline_score ...
ABSOLUTE_TOLERANCE = 0.02  # ... or within 0.02, whichever is larger
REFINE_AT = 0.9  # of the bound: what is returned keeps a margin
MAX_INTERVALS = 512  # refining stops there (7 passes: 8, 16, ... 512 intervals)
CHUNK_CELLS = 2**15  # path rows x time steps explained at once: bounds a request's memory

LogitsFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class Explained:
    """The model an explanation runs, as the path needs it.

    Attributes:
        embeddings: the embedding matrix [vocabulary, dim].
        logits_fn: embedded rows [rows, time, dim] and their lengths [rows] -> the LSTM's
            logits [rows, classes] (not called when the mix gives the LSTM no weight).
        classes: the number of classes.
        mix: the mix with the n-gram members (two classes), or None.
    """

    embeddings: tf.Tensor
    logits_fn: LogitsFn
    classes: int
    mix: MixScoring | None = None

    @property
    def lstm_coefficient(self) -> float:
        """The LSTM's coefficient in the mix (1 without a mix: F is its own log-odds)."""
        return 1.0 if self.mix is None else float(self.mix.lstm_coefficient)


@dataclasses.dataclass(frozen=True)
class MemberTerm:
    """What the n-gram members give s, for a batch of texts: exact, no path needed.

    Attributes:
        score: bias + sum of c_m * logit_m at the texts [batch].
        baseline: the same with no n-gram present (each logit its member's bias) [batch].
        shares: each word's share of score - baseline [batch, time].
    """

    score: tf.Tensor
    baseline: tf.Tensor
    shares: tf.Tensor

    @classmethod
    def of(cls, mix: MixScoring, words: tf.Tensor, ids: tf.Tensor) -> MemberTerm:
        """The members' term of right-padded words and ids [batch, time]."""
        base = tf.constant(mix.bias, tf.float32)
        shares = tf.zeros(tf.shape(ids), tf.float32)
        for member, c in zip(mix.members, mix.coefficients):
            base += c * tf.cast(tf.convert_to_tensor(member.bias), tf.float32)
            shares += c * member.shares(words, ids)
        baseline = tf.fill([tf.shape(ids)[0]], base)
        return cls(baseline + tf.reduce_sum(shares, 1), baseline, shares)


@dataclasses.dataclass(frozen=True)
class PathPass:
    """One pass along the path: cut into `segments` of `steps` intervals each, taken by the
    trapezoidal rule or (`midpoints`) by the intervals' midpoints (see `_rule`)."""

    steps: int
    segments: tf.Tensor
    midpoints: tf.Tensor | bool = False


def _log_odds(log_probs: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """log p_k - log(1 - p_k) of class k [batch] for log probabilities [..., batch, classes]."""
    own = tf.equal(tf.range(tf.shape(log_probs)[-1]), k[:, None])
    chosen = tf.reduce_sum(tf.where(own, log_probs, 0.0), -1)
    return chosen - tf.reduce_logsumexp(tf.where(own, -np.inf, log_probs), -1)


def _rule(steps: int, midpoints: bool | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
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
    k: tf.Tensor,
    steps: int,
    start: float | tf.Tensor = 0.0,
    stop: float | tf.Tensor = 1.0,
    midpoints: bool | tf.Tensor = False,
    mix_coefficient: float | None = None,
    offset: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Integrated gradients of the LSTM's part of F over one segment of the straight path.

    Args:
        logits_fn: as `Explained.logits_fn`.
        x: the texts' embeddings [batch, time, dim], zero on padding.
        lengths: each text's real steps [batch].
        k: the class whose log-odds are explained [batch]; -1: the predicted one, which a
            trapezoid's segment must then end at the text to see.
        steps: intervals; the segment's steps + 1 points run as one batch.
        start: where the segment starts on the path from the baseline (0) to the text (1).
        stop: where it ends.
        midpoints: the intervals' midpoints instead of the trapezoidal rule (see `_rule`).
        mix_coefficient: the LSTM's coefficient in the mix, or None without a mix: F is then
            the LSTM's own log-odds of class k.
        offset: with the mix, what its members give s at the texts [batch], which with the
            LSTM's part decides the predicted class and the probabilities.

    Returns:
        `lstm` [batch, time] (each word's attribution over the segment), `first` and `last`
        (the LSTM's part of F at the trapezoid's ends), `probabilities` (at its end) and
        `label_id` (k).
    """
    points = steps + 1
    grid, weights = _rule(steps, midpoints)
    alphas = start + (stop - start) * grid
    xs = tf.reshape(alphas[:, None, None, None] * x[None], [-1, tf.shape(x)[1], tf.shape(x)[2]])
    with tf.GradientTape() as tape:
        tape.watch(xs)
        logits = logits_fn(xs, tf.tile(lengths, [points]))
        logits = tf.reshape(logits, [points, tf.shape(x)[0], -1])
        if mix_coefficient is None:
            log_probs = tf.nn.log_softmax(logits)
            k = tf.where(k < 0, tf.argmax(log_probs[-1], -1, output_type=tf.int32), k)
            f = _log_odds(log_probs, k)  # [points, batch]
            probabilities = tf.exp(log_probs[-1])
        else:
            # The LSTM's log-odds as the mix reads them (floored probabilities), [points, batch]
            z = mix_coefficient * log_odds(tf.nn.softmax(logits))
            score = z[-1] + offset
            k = tf.where(k < 0, tf.cast(score > 0, tf.int32), k)
            f = tf.cast(2 * k - 1, tf.float32) * z  # F is s for the second class, -s for the first
            probabilities = as_probabilities(score)
        total = tf.reduce_sum(f)
    path = tf.reshape(tape.gradient(total, xs), tf.concat([[points], tf.shape(x)], 0))
    weights *= stop - start
    return {
        "lstm": tf.reduce_sum(x * tf.tensordot(weights, path, 1), -1),
        "first": f[0],
        "last": f[-1],
        "probabilities": probabilities,
        "label_id": k,
    }


def _explain_chunk(
    ids: tf.Tensor, words: tf.Tensor, model: Explained, path: PathPass, k: tf.Tensor
) -> dict:
    """Attributions and scores of right-padded ids and words [batch, time] (no column all
    padding) over one pass, its segments run from the text back to the baseline, so that the
    first finds the predicted class where `k` is -1."""
    lengths = tf.math.count_nonzero(ids, 1, dtype=tf.int32)
    real = tf.sequence_mask(lengths, tf.shape(ids)[1], tf.float32)
    members = None if model.mix is None else MemberTerm.of(model.mix, words, ids)
    if members is not None and not model.lstm_coefficient:  # the members alone: exact
        k = tf.where(k < 0, tf.cast(members.score > 0, tf.int32), k)
        sign = tf.cast(2 * k - 1, tf.float32)
        return {
            "attributions": sign[:, None] * members.shares * real,
            "score": sign * members.score,
            "baseline_score": sign * members.baseline,
            "probabilities": as_probabilities(members.score),
            "label_id": k,
        }
    x = tf.gather(model.embeddings, ids) * real[:, :, None]
    coefficient = None if members is None else model.lstm_coefficient
    offset = None if members is None else members.score
    cut = tf.cast(path.segments, tf.float32)

    def body(s, out):
        at = tf.cast(s, tf.float32)
        part = integrated_gradients(
            model.logits_fn, x, lengths, out["label_id"], path.steps,
            start=at / cut, stop=(at + 1) / cut, midpoints=path.midpoints,
            mix_coefficient=coefficient, offset=offset,
        )  # fmt: skip
        last = tf.equal(s, path.segments - 1)
        return s - 1, {
            "lstm": out["lstm"] + part["lstm"],
            "score": tf.where(last, part["last"], out["score"]),
            "baseline_score": part["first"],
            "probabilities": tf.where(last, part["probabilities"], out["probabilities"]),
            "label_id": part["label_id"],
        }

    n = tf.shape(ids)[0]
    out = {"lstm": tf.zeros_like(real), "label_id": k, **_zero_scores(n, model.classes)}
    out = tf.while_loop(lambda s, _: s >= 0, body, (path.segments - 1, out))[1]
    attributions = out.pop("lstm") * real
    if members is not None:  # the members' exact part, signed like F
        sign = tf.cast(2 * out["label_id"] - 1, tf.float32)
        attributions += sign[:, None] * members.shares * real
        out["score"] += sign * members.score
        out["baseline_score"] += sign * members.baseline
    return {"attributions": attributions, **out}


def _zero_scores(n: tf.Tensor, classes: int) -> dict[str, tf.Tensor]:
    """The scores and probabilities of `n` texts before any pass: zeros."""
    return {
        "score": tf.zeros([n]),
        "baseline_score": tf.zeros([n]),
        "probabilities": tf.zeros([n, classes]),
    }


def _in_chunks(
    ids: tf.Tensor, words: tf.Tensor, model: Explained, path: PathPass, k: tf.Tensor
) -> dict:
    """`_explain_chunk` over right-padded ids and words [batch, time], CHUNK_CELLS path cells
    at a time.

    Texts go longest first, so a chunk pads little; each chunk holds as many texts as fit
    (at least one), which bounds the memory of a request of any size: more segments take
    more time, never more memory.
    """
    n = tf.shape(ids)[0]
    width = tf.shape(ids)[1]
    lengths = tf.math.count_nonzero(ids, 1, dtype=tf.int32)
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)

    def body(start, results):
        longest = tf.maximum(tf.gather(lengths, order[start]), 1)
        count = tf.clip_by_value(CHUNK_CELLS // ((path.steps + 1) * longest), 1, n - start)
        rows = order[start : start + count]
        chunk = [tf.gather(a, rows)[:, :longest] for a in (ids, words)]
        out = _explain_chunk(*chunk, model, path, tf.gather(k, rows))
        out["attributions"] = tf.pad(out["attributions"], [[0, 0], [0, width - longest]])
        return start + count, {
            key: tf.tensor_scatter_nd_update(v, rows[:, None], out[key])
            for key, v in results.items()
        }

    results = {"attributions": tf.zeros([n, width]), "label_id": k}
    results.update(_zero_scores(n, model.classes))
    return tf.while_loop(lambda start, _: start < n, body, (0, results))[1]


def completeness_error(out: dict) -> tf.Tensor:
    """|sum of attributions - (score - baseline_score)| over its bound per text (<= 1: complete)."""
    gap = out["score"] - out["baseline_score"]
    error = tf.abs(tf.reduce_sum(out["attributions"], 1) - gap)
    return error / tf.maximum(RELATIVE_TOLERANCE * tf.abs(gap), ABSOLUTE_TOLERANCE)


def explain_ids(
    ids: tf.Tensor, words: tf.Tensor, model: Explained, steps: int = STEPS
) -> dict[str, tf.Tensor]:
    """Explain right-padded ids and their words [batch, time]: the trapezoid with `steps`
    intervals, in chunks;
    then, while a text's completeness error passes REFINE_AT of its bound, the midpoints of
    its intervals, which halve them (up to MAX_INTERVALS).

    Returns:
        `attributions` [batch, time], `score`, `baseline_score`, `probabilities`, `label_id`.
    """
    n = tf.shape(ids)[0]
    results = {"attributions": tf.zeros(tf.shape(ids)), **_zero_scores(n, model.classes)}
    results["label_id"] = tf.fill([n], -1)  # the predicted class, found on the first pass

    def body(segments, rough, results):
        refining = segments > 0  # 0: the first pass, the trapezoid over the whole path
        path = PathPass(steps, tf.maximum(segments, 1), midpoints=refining)
        k = tf.gather(results["label_id"], rough)
        again = _in_chunks(tf.gather(ids, rough), tf.gather(words, rough), model, path, k)
        halved = (tf.gather(results["attributions"], rough) + again["attributions"]) / 2
        again["attributions"] = tf.where(refining, halved, again["attributions"])
        updated = {
            key: tf.tensor_scatter_nd_update(v, rough[:, None], again[key])
            for key, v in results.items()
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


def _outputs(
    tokens: tf.Tensor, ids: tf.Tensor, out: dict, class_names: list[str]
) -> dict[str, tf.Tensor]:
    names = tf.constant(class_names)
    columns = tf.tile(names[None, :], [tf.shape(tokens)[0], 1])
    label = tf.gather(names, out["label_id"])
    return {
        "tokens": tokens,
        **out,
        "label": label,
        "classes": columns,
        "known_words": known_words(ids),
    }


def explain_function(
    pre: TextPreprocessor,
    network: ServingNetwork,
    class_names: list[str],
    mix: MixScoring | None = None,
    steps: int = STEPS,
):
    """The `explain` signature: raw strings `text` -> each word's share of the score.

    Args:
        pre: the preprocessing layer (its tables serve as they are).
        network: the served LSTM network; its padded path is differentiated.
        class_names: the classes, in the order of the probability columns.
        mix: the served mix with the n-gram members (`serving.graph.ServingMix`), or None.
        steps: trapezoid intervals along the path.

    Returns:
        A `tf.function` with one input, `text` (`tf.string`, `[None]`), and the outputs
        `tokens` ([None, None] strings, padded with ""), `attributions` (float32, same shape,
        0 on padding), `score` and `baseline_score` (the predicted class's log-odds for the
        text and the baseline), `probabilities`, `label`, `label_id`, `classes` and
        `known_words`, as `serving_default` gives them.

    Example:
        >>> pre, model, _ = split_text_model(run.model)
        >>> explain = explain_function(pre, ServingNetwork(model), ["neg", "pos"])
        >>> [t.decode() for t in explain(tf.constant(["A dull film."]))["tokens"][0].numpy()]
        ['a', 'dull', 'film']
    """

    def logits_fn(xs: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        return network.padded_logits(tf.transpose(xs, [1, 0, 2]), lengths, differentiable=True)

    # No autograph: the loops are tf.while_loop already, and converting them costs each export.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")], autograph=False)
    def explain(text):
        tokens, ids = tokens_and_ids(pre, text)
        model = Explained(network.embeddings, logits_fn, len(class_names), mix)
        out = explain_ids(ids, tokens, model, steps)
        return _outputs(tokens, ids, out, class_names)

    return explain


def keras_explain_function(model: keras.Model, steps: int = STEPS):
    """The `explain` signature's equivalent for a raw-text Keras model (`text_model`), with
    the same outputs.

    The same path, baseline and members' shares, computed through the Keras layers themselves
    (Keras' LSTM with the ids' mask, the members' binary search) rather than the served ops.

    Args:
        model: raw strings in, probabilities out, as `fit` makes it (`run.model`).
        steps: trapezoid intervals along the path.

    Returns:
        A `tf.function` from texts (`tf.string`, `[None]`) to the `explain` outputs.

    Example:
        >>> explain = keras_explain_function(run.model)
        >>> explain(tf.constant(["A dull film."]))["label"].numpy()
        array([b'neg'], dtype=object)
    """
    pre, network, mix = split_text_model(model)
    if isinstance(mix, NgramMix):
        raise UserError(
            "this model mixes its parts the way models did before the stacked mix, which "
            "explanations no longer follow; fit it again to explain it"
        )
    class_names = class_names_of(model)
    embedding, *body, dense = network.layers

    def logits_fn(xs: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        h = xs
        mask = tf.sequence_mask(lengths, tf.shape(xs)[1])
        for layer in body:
            masked = "mask" in inspect.signature(layer.call).parameters
            h = layer(h, mask=mask, training=False) if masked else layer(h, training=False)
        return tf.matmul(h, dense.kernel) + dense.bias

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def explain(text):
        tokens, ids = tokens_and_ids(pre, text)
        embeddings = tf.convert_to_tensor(embedding.embeddings)
        model = Explained(embeddings, logits_fn, len(class_names), mix)
        out = explain_ids(ids, tokens, model, steps)
        return _outputs(tokens, ids, out, class_names)

    return explain

"""N-gram members of the mix: NB-LR on a text's binary n-gram features, exact to explain.

Wang & Manning's (2012) NBSVM idea with a logistic regression: binary n-gram features scaled by
their naive-Bayes log-count ratios. Two kinds of n-gram, one model:
- `words`: the token ids' 1..N-grams. An n-gram is one int64 key (ids in base
  vocabulary-size), so the member adds no string work to serving.
- `chars`: the 2..N-character n-grams inside each word as the model read it (its surface form,
  a space added each side, as scikit-learn's `char_wb`), each fingerprinted to an int64 key.
  They carry what a word's spelling says where the word itself is rare or unknown ("unfunny",
  "overlong"), which short texts need most.
Either way a member's logit is a bias plus one coefficient per distinct known n-gram, so each
word's share of it is exact: an n-gram's coefficient split among the words of its
occurrences. The kept n-grams are found by binary search in the Keras layer and by a hash
table in the served graph (`serving/graph.py`); `NgramScoring` is the math both share.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from scipy.sparse import csr_matrix, diags

from keras_sentiment.config import UserError

WORDS, CHARS = "words", "chars"
C_GRID = (0.1, 0.3, 1.0)  # inverse L2 strength of the logistic regression, picked on validation
MIN_COUNT = 2  # an n-gram seen in one training text only is noise
FINGERPRINTS = 2**63 - 1  # char n-grams hash into [0, 2^63 - 1): collisions are negligible


def ngram_keys(ids: np.ndarray, order: int, vocabulary_size: int) -> np.ndarray:
    """The distinct 1..order-grams of one unpadded row of ids, as sorted int64 keys."""
    ids = np.asarray(ids, np.int64)
    grams, gram = [ids], ids
    for n in range(2, order + 1):
        # Ids are >= 1, so each order keeps to its own range: [V^(n-1), V^n).
        gram = gram[:-1] * vocabulary_size + ids[n - 1 :]
        grams.append(gram)
    return np.unique(np.concatenate(grams))


class NgramScoring:
    """A member's math, shared by the Keras layer and its served twin.

    Needs `kind`, `order`, `vocabulary_size`, `size`, `bias`, `weight_of` (the coefficient of
    a kept n-gram's index) and `find` (each key's index among the kept ones, and whether it is
    one of them).
    """

    def grams(self, ids: tf.Tensor) -> tf.Tensor:
        """Every 1..order-gram key of word ids along the last axis ([time] or [batch, time])."""
        ids = tf.cast(ids, tf.int64)
        grams, gram = [ids], ids
        for n in range(2, self.order + 1):
            gram = gram[..., :-1] * self.vocabulary_size + ids[..., n - 1 :]
            grams.append(gram)
        return tf.concat(grams, -1)

    def occurrences(self, words: tf.Tensor, ids: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Every n-gram occurrence of right-padded texts, flat.

        Args:
            words: the words as read [batch, time], "" on padding (read by `chars`).
            ids: their ids [batch, time], 0 on padding (read by `words`).

        Returns:
            `rows` (int64), `keys` (int64), `starts` and `lengths` (int32: the words the
            occurrence covers), one entry per occurrence. A word n-gram reaching into the
            padding ends in the padding id's digit 0, which no kept n-gram has.
        """
        if self.kind == CHARS:
            return self._char_occurrences(words)
        grams = self.grams(ids)  # [batch, width + (width - 1) + ...], one order after another
        batch, width, columns = tf.shape(ids)[0], tf.shape(ids)[1], tf.shape(grams)[1]
        spans = [tf.maximum(width - n + 1, 0) for n in range(1, self.order + 1)]
        lengths = tf.concat([tf.fill([s], n) for n, s in enumerate(spans, 1)], 0)  # per column
        starts = tf.concat([tf.range(s) for s in spans], 0)
        rows = tf.repeat(tf.range(tf.cast(batch, tf.int64)), columns)
        return rows, tf.reshape(grams, [-1]), tf.tile(starts, [batch]), tf.tile(lengths, [batch])

    def _char_occurrences(self, words: tf.Tensor) -> tuple[tf.Tensor, ...]:
        width = tf.shape(words, out_type=tf.int64)[1]
        flat = tf.reshape(words, [-1])
        chars = tf.strings.unicode_split(tf.strings.join([" ", flat, " "]), "UTF-8")
        grams = tf.strings.ngrams(chars, list(range(2, self.order + 1)), separator="")
        word = grams.value_rowids()  # which of the batch's words each n-gram is from
        real = tf.gather(tf.not_equal(flat, ""), word)  # padding reads no n-gram
        keys = tf.strings.to_hash_bucket_fast(
            tf.boolean_mask(grams.flat_values, real), FINGERPRINTS
        )
        word = tf.boolean_mask(word, real)
        starts = tf.cast(word % width, tf.int32)
        return word // width, keys, starts, tf.ones_like(starts)

    def logits(self, words: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The member's logit of the second class for right-padded texts: [batch]."""
        rows, keys, _, _ = self.occurrences(words, ids)
        index, known = self.find(keys)
        # Binary features: each (row, n-gram) pair counts once.
        pairs, _ = tf.unique(tf.boolean_mask(rows * self.size + index, known))
        weights = self.weight_of(pairs % self.size)
        return (
            tf.math.unsorted_segment_sum(weights, pairs // self.size, tf.shape(ids)[0]) + self.bias
        )

    def shares(self, words: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """Each word's share of the logit less the bias: [batch, time], exact.

        Each distinct n-gram of a row counts once (binary features); its coefficient is split
        equally among the words of all its occurrences, so a row's shares sum to its logit
        minus the bias (the logit of a text with no known n-gram).
        """
        rows, keys, starts, lengths = self.occurrences(words, ids)
        batch, width = tf.shape(ids)[0], tf.shape(ids)[1]
        index, known = self.find(keys)
        _, slot, counts = tf.unique_with_counts(tf.where(known, rows * self.size + index, -1))
        weight = tf.where(known, self.weight_of(tf.where(known, index, 0)), 0.0)
        share = weight / tf.cast(tf.gather(counts, slot), tf.float32) / tf.cast(lengths, tf.float32)
        at = tf.cast(rows, tf.int32) * width + starts
        words_covered = range(self.order if self.kind == WORDS else 1)
        values = [tf.where(k < lengths, share, 0.0) for k in words_covered]
        targets = [at + tf.minimum(k, lengths - 1) for k in words_covered]
        flat = [tf.concat(t, 0) for t in (values, targets)]
        total = tf.math.unsorted_segment_sum(*flat, batch * width)
        return tf.reshape(total, [batch, width])

    def weight_of(self, index: tf.Tensor) -> tf.Tensor:
        """The coefficient of each kept n-gram's index."""
        return tf.gather(tf.convert_to_tensor(self.coefficients), index)

    def find(self, keys: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Each key's index among the kept ones, and whether it is one of them."""
        kept = tf.convert_to_tensor(self.keys)
        index = tf.minimum(tf.searchsorted(kept, keys, out_type=tf.int64), self.size - 1)
        return index, tf.gather(kept, index) == keys


def _add_tables(layer: keras.layers.Layer, size: int) -> None:
    """A member layer's kept n-grams (sorted keys), their coefficients and the bias: weights,
    not config, so the n-grams (hundreds of thousands on IMDB) stay out of JSON."""
    layer.keys = layer.add_weight((size,), "zeros", dtype="int64", trainable=False, name="keys")
    layer.coefficients = layer.add_weight((size,), "zeros", trainable=False, name="coefficients")
    layer.bias = layer.add_weight((), "zeros", trainable=False, name="bias")
    layer.built = True


@keras.saving.register_keras_serializable(package="keras_sentiment")
class NgramMember(NgramScoring, keras.layers.Layer):
    """[words, ids] -> the NB-LR logit of the second class [batch], for one kind of n-gram."""

    def __init__(self, kind: str, order: int, vocabulary_size: int, size: int, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.kind, self.order = kind, order
        self.vocabulary_size, self.size = vocabulary_size, size
        _add_tables(self, size)

    def call(self, inputs):
        words, ids = inputs
        return self.logits(words, ids)

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0],)

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "order": self.order,
            "vocabulary_size": self.vocabulary_size,
            "size": self.size,
        }


@keras.saving.register_keras_serializable(package="keras_sentiment")
class NgramMix(NgramScoring, keras.layers.Layer):
    """The mix of models from before the stacked mix: w * LSTM + (1 - w) * NB-LR probabilities.

    Kept so that their `.keras` files still load and predict; `Mix` replaced it.
    """

    kind = WORDS

    def __init__(self, order: int, vocabulary_size: int, size: int, lstm_weight: float, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.order, self.vocabulary_size = order, vocabulary_size
        self.size, self.lstm_weight = size, lstm_weight
        _add_tables(self, size)

    def call(self, inputs):
        ids, probabilities = inputs
        positive = tf.sigmoid(self.logits(tf.zeros(tf.shape(ids), tf.string), ids))
        ngram = tf.stack([1 - positive, positive], 1)
        return self.lstm_weight * probabilities + (1 - self.lstm_weight) * ngram

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {
            **super().get_config(),
            "order": self.order,
            "vocabulary_size": self.vocabulary_size,
            "size": self.size,
            "lstm_weight": self.lstm_weight,
        }


# --- fitting ---------------------------------------------------------------------------------


def text_keys(member: NgramScoring, words: list[np.ndarray], rows: list[np.ndarray]) -> list:
    """The distinct n-gram keys of each text (sorted int64), read by the member's own TF code,
    so training sees exactly the keys the served graph will look up."""
    if member.kind == WORDS:
        return [ngram_keys(row, member.order, member.vocabulary_size) for row in rows]
    found = []
    for start in range(0, len(words), 512):
        part = words[start : start + 512]
        width = max(1, max((len(w) for w in part), default=1))
        dense = np.full((len(part), width), b"", dtype=object)
        for i, w in enumerate(part):
            dense[i, : len(w)] = w
        batch, keys, _, _ = member.occurrences(tf.constant(dense, tf.string), None)
        batch, keys = batch.numpy(), keys.numpy()
        order = np.lexsort((keys, batch))
        batch, keys = batch[order], keys[order]
        bounds = np.searchsorted(batch, np.arange(len(part) + 1))
        found += [np.unique(keys[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return found


def _features(row_keys: list[np.ndarray], keys: np.ndarray) -> csr_matrix:
    """Binary features: row i has a 1 in the column of each kept n-gram it contains."""
    columns, pointers = [], [0]
    for found in row_keys:
        index = np.minimum(np.searchsorted(keys, found), len(keys) - 1)
        columns.append(index[keys[index] == found])
        pointers.append(pointers[-1] + len(columns[-1]))
    columns = np.concatenate(columns) if columns else np.zeros(0, np.int64)
    values = np.ones(len(columns), np.float32)
    return csr_matrix((values, columns, pointers), shape=(len(row_keys), len(keys)))


def _nb_lr(x, labels: np.ndarray, c: float, seed: int) -> tuple[np.ndarray, float]:
    """NB log-count ratios times the logistic regression's coefficients, and its bias."""
    from sklearn.linear_model import LogisticRegression

    positive = 1 + np.asarray(x[labels == 1].sum(0)).ravel()
    negative = 1 + np.asarray(x[labels == 0].sum(0)).ravel()
    ratio = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
    model = LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=3000, random_state=seed)
    model.fit(x @ diags(ratio), labels)
    return (ratio * model.coef_.ravel()).astype(np.float32), float(model.intercept_[0])


def _kept(row_keys: list[np.ndarray]) -> np.ndarray:
    keys, counts = np.unique(
        np.concatenate(row_keys or [np.zeros(0, np.int64)]), return_counts=True
    )
    return keys[counts >= MIN_COUNT]


def _member(kind, order, vocabulary_size, keys, coefficients, bias, name) -> NgramMember:
    member = NgramMember(kind, order, vocabulary_size, len(keys), name=name)
    member.keys.assign(keys)
    member.coefficients.assign(coefficients)
    member.bias.assign(bias)
    return member


def fit_member(
    kind: str,
    order: int,
    vocabulary_size: int,
    train: tuple[list, list, np.ndarray],
    val: tuple[list, list, np.ndarray],
    seed: int,
) -> tuple[NgramMember | None, np.ndarray | None, dict]:
    """An n-gram member on the training texts, C picked on validation, then refitted on both.

    Args:
        kind: `words` or `chars`.
        order: the longest n-gram.
        vocabulary_size: the preprocessor's vocabulary, the base of word n-gram keys.
        train: the training texts' words (arrays of UTF-8 bytes), ids and labels (0 or 1).
        val: the validation texts', the same way.
        seed: the logistic regression's.

    Returns:
        The member refitted on train and validation (None when no n-gram occurs in two
        training texts), its logits on the validation texts from the fit on train alone (for
        the mix to weigh it by), and what it did.
    """
    start = time.perf_counter()
    if kind == WORDS and vocabulary_size**order >= 2**63:
        raise UserError(
            f"config: ngrams {order} with a vocabulary of {vocabulary_size} overflows int64 "
            "n-gram keys; lower ngrams or vocab_size"
        )
    probe = NgramMember(kind, order, vocabulary_size, 1)
    train_keys, val_keys = (text_keys(probe, words, rows) for words, rows, _ in (train, val))
    keys = _kept(train_keys)
    labels, val_labels = train[2], val[2]
    if not len(keys) or len(np.unique(labels)) < 2:
        return None, None, {}
    x, x_val = _features(train_keys, keys), _features(val_keys, keys)
    best = None
    for c in C_GRID:
        coefficients, bias = _nb_lr(x, labels, c, seed)
        logits = x_val @ coefficients + bias
        accuracy = float(np.mean((logits > 0) == val_labels))
        if best is None or accuracy > best[0]:
            best = (accuracy, c, logits)
    accuracy, c, val_logits = best
    # Refitted on every labeled text: validation has done its part, picking C.
    all_keys = train_keys + val_keys
    keys = _kept(all_keys)
    coefficients, bias = _nb_lr(
        _features(all_keys, keys), np.concatenate([labels, val_labels]), c, seed
    )
    member = _member(kind, order, vocabulary_size, keys, coefficients, bias, f"{kind}_ngrams")
    info = {"kind": kind, "order": order, "ngrams": int(len(keys)), "C": c}
    info.update(validation_accuracy=accuracy, seconds=round(time.perf_counter() - start, 1))
    return member, val_logits.astype(np.float32), info

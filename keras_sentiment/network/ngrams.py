"""N-grams: a linear NB-LR model on the token ids' 1..n-grams, mixed with the LSTM.

Wang & Manning's (2012) NBSVM idea with a logistic regression: binary n-gram features scaled
by their naive-Bayes log-count ratios. It reads the ids the preprocessor already made, so it
adds no string work to serving; an n-gram is one int64 (ids in base vocabulary-size), found
among the n-grams kept from training by binary search in the Keras layer and by a hash table
in the served graph (`serving/graph.py`). Both the mixing weight and the regularization are
picked on the validation split.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from scipy.sparse import csr_matrix, diags

from keras_sentiment.config import Config, UserError

C_GRID = (0.1, 0.3, 1.0)  # inverse L2 strength of the logistic regression, picked on validation
LSTM_WEIGHTS = np.round(np.arange(0, 1.01, 0.1), 1)  # the mix's LSTM share, picked likewise
MIN_COUNT = 2  # an n-gram seen in one training text only is noise


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
    """The branch's math, shared by the Keras layer and the served module below.

    Needs `order`, `vocabulary_size`, `size`, `lstm_weight`, `bias`, `weight_of` (here from
    the weight `coefficients`, one per kept n-gram) and `find` (here a binary search in the
    sorted weight `keys`).
    """

    def grams(self, ids: tf.Tensor) -> tf.Tensor:
        """Every 1..order-gram key along the last axis of ids ([time] or [batch, time])."""
        ids = tf.cast(ids, tf.int64)
        grams, gram = [ids], ids
        for n in range(2, self.order + 1):
            gram = gram[..., :-1] * self.vocabulary_size + ids[..., n - 1 :]
            grams.append(gram)
        return tf.concat(grams, -1)

    def logits(self, ids: tf.Tensor) -> tf.Tensor:
        """NB-LR logit of the positive class for right-padded ids [batch, time]."""
        # An n-gram reaching into the padding ends in the padding id's digit 0, which no kept
        # n-gram has, so the search below rejects it: no mask needed.
        grams = self.grams(ids)
        flat = tf.reshape(grams, [-1])
        index, known = self.find(flat)
        width = tf.maximum(tf.shape(grams, out_type=tf.int64)[1], 1)
        rows = tf.range(tf.size(flat, out_type=tf.int64)) // width
        # Binary features: each (row, n-gram) pair counts once.
        pairs, _ = tf.unique(tf.boolean_mask(rows * self.size + index, known))
        weights = self.weight_of(pairs % self.size)
        batch = tf.shape(ids)[0]
        return tf.math.unsorted_segment_sum(weights, pairs // self.size, batch) + self.bias

    def weight_of(self, index: tf.Tensor) -> tf.Tensor:
        """The coefficient of each kept n-gram's index."""
        return tf.gather(tf.convert_to_tensor(self.coefficients), index)

    def find(self, grams: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Each n-gram's index among the kept ones, and whether it is one of them."""
        keys = tf.convert_to_tensor(self.keys)
        index = tf.minimum(tf.searchsorted(keys, grams, out_type=tf.int64), self.size - 1)
        return index, tf.gather(keys, index) == grams

    def mixed(self, ids: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        """The LSTM's probabilities [batch, 2] mixed with the NB-LR's."""
        return self.combine(tf.sigmoid(self.logits(ids)), probabilities)

    def combine(self, positive: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        """w * LSTM + (1 - w) * NB-LR, from the NB-LR's probabilities of the positive class."""
        ngram = tf.stack([1 - positive, positive], 1)
        return self.lstm_weight * probabilities + (1 - self.lstm_weight) * ngram


@keras.saving.register_keras_serializable(package="keras_sentiment")
class NgramMix(NgramScoring, keras.layers.Layer):
    """[token ids, LSTM probabilities] -> w * LSTM + (1 - w) * NB-LR, two classes."""

    def __init__(self, order: int, vocabulary_size: int, size: int, lstm_weight: float, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.order, self.vocabulary_size = order, vocabulary_size
        self.size, self.lstm_weight = size, lstm_weight
        # Weights, not config: the sorted n-grams (one per kept n-gram) stay out of JSON.
        self.keys = self.add_weight((size,), "zeros", dtype="int64", trainable=False, name="keys")
        self.coefficients = self.add_weight((size,), "zeros", trainable=False, name="coefficients")
        self.bias = self.add_weight((), "zeros", trainable=False, name="bias")
        self.built = True

    def call(self, inputs):
        ids, probabilities = inputs
        return self.mixed(ids, probabilities)

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


def fit_ngrams(
    cfg: Config,
    vocabulary_size: int,
    train: tuple[list[np.ndarray], np.ndarray],
    val: tuple[list[np.ndarray], np.ndarray],
    lstm_val: np.ndarray,
) -> tuple[NgramMix | None, dict]:
    """NB-LR on the training ids, its C and its mix with the LSTM picked on validation.

    Args:
        cfg: `ngrams` (the order) and `seed` are read.
        vocabulary_size: the preprocessor's vocabulary, the base of the n-gram keys.
        train: token-id rows and labels the branch learns from.
        val: rows and labels that pick C and the LSTM's weight in the mix.
        lstm_val: the LSTM's probabilities on `val`.

    Returns:
        The mix layer (None when no n-gram occurs in two training texts) and what it measured.
    """
    start, order = time.perf_counter(), cfg.ngrams
    if vocabulary_size**order >= 2**63:
        raise UserError(
            f"config: ngrams {order} with a vocabulary of {vocabulary_size} overflows int64 "
            "n-gram keys; lower ngrams or vocab_size"
        )
    (rows, labels), (val_rows, val_labels) = train, val
    train_keys = [ngram_keys(row, order, vocabulary_size) for row in rows]
    keys, counts = np.unique(np.concatenate(train_keys), return_counts=True)
    keys = keys[counts >= MIN_COUNT]
    if not len(keys) or len(np.unique(labels)) < 2:
        print("n-grams: off (no n-gram in 2+ training texts, or one class only)", flush=True)
        return None, {}
    val_keys = [ngram_keys(row, order, vocabulary_size) for row in val_rows]
    x, x_val = _features(train_keys, keys), _features(val_keys, keys)
    ratio, c, model, ngram_val_accuracy = _nb_lr(x, labels, x_val, val_labels, cfg.seed)
    p = model.predict_proba(x_val @ diags(ratio))
    scores = [
        float(np.mean((w * lstm_val + (1 - w) * p).argmax(1) == val_labels)) for w in LSTM_WEIGHTS
    ]
    w = float(LSTM_WEIGHTS[int(np.argmax(scores))])
    mix = NgramMix(order, vocabulary_size, len(keys), w, name="ngram_mix")
    mix.keys.assign(keys)
    mix.coefficients.assign((ratio * model.coef_.ravel()).astype(np.float32))
    mix.bias.assign(float(model.intercept_[0]))
    accuracy = {"lstm": float(np.mean(lstm_val.argmax(1) == val_labels))}
    accuracy.update(ngrams=ngram_val_accuracy, mixed=max(scores))
    info = {"order": order, "ngrams": int(len(keys)), "C": c, "lstm_weight": w}
    info.update(validation_accuracy=accuracy, seconds=round(time.perf_counter() - start, 1))
    alone = " (0: this model answers with the n-gram branch alone)" if w == 0 else ""
    print(
        f"n-grams: {len(keys):,} 1-{order}-grams seen in {MIN_COUNT}+ training texts, NB-LR "
        f"C={c}; validation accuracy LSTM {accuracy['lstm']:.4f}, NB-LR "
        f"{ngram_val_accuracy:.4f}, mixed {max(scores):.4f} at LSTM weight {w}{alone} "
        f"({info['seconds']:.1f}s)",
        flush=True,
    )
    return mix, info


def _nb_lr(x, labels: np.ndarray, x_val, val_labels: np.ndarray, seed: int) -> tuple:
    """NB log-count ratios and the logistic regression on the scaled features, C picked on
    validation: (ratio, C, model, its validation accuracy)."""
    from sklearn.linear_model import LogisticRegression

    positive = 1 + np.asarray(x[labels == 1].sum(0)).ravel()
    negative = 1 + np.asarray(x[labels == 0].sum(0)).ravel()
    ratio = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
    scale = diags(ratio)
    best = None
    for c in C_GRID:
        model = LogisticRegression(
            C=c, solver="liblinear", dual=True, max_iter=3000, random_state=seed
        ).fit(x @ scale, labels)
        accuracy = float(np.mean(model.predict(x_val @ scale) == val_labels))
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    accuracy, c, model = best
    return ratio, c, model, accuracy

"""The n-gram branch: NB-LR on the ids' n-grams, the same in the graph as in its reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sentiment.config import Config, UserError
from keras_sentiment.network.model import split_text_model
from keras_sentiment.network.ngrams import LSTM_WEIGHTS, fit_ngrams, ngram_keys
from keras_sentiment.reporting.evaluation import mix_rows
from keras_sentiment.text.preprocessing import vectorize

from .helpers import HOSTILE_BYTES, synthetic_reviews


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """The tiny run's preprocessor, network and n-gram mix, and 600 new labeled reviews."""
    pre, network, mix = split_text_model(tiny_run["run"].model)
    texts, labels = synthetic_reviews(600, seed=1)
    texts = np.array([t.encode() for t in texts], dtype=object)
    return pre, network, mix, texts, np.array([int(y == "pos") for y in labels])


def reference_logit(row: np.ndarray, mix) -> float:
    """The logit by hand: every distinct n-gram of the row as a tuple, looked up in a dict."""
    v = mix.vocabulary_size
    weights = dict(zip(mix.keys.numpy().tolist(), mix.coefficients.numpy().tolist()))
    orders = range(1, mix.order + 1)
    grams = {tuple(row[i : i + n]) for n in orders for i in range(len(row) - n + 1)}
    total = float(mix.bias.numpy())
    for gram in grams:
        key = 0
        for token in gram:
            key = key * v + int(token)
        total += weights.get(key, 0.0)
    return total


def test_the_graph_scores_as_the_reference(tiny):
    pre, network, _, texts, labels = tiny
    rows = vectorize(pre, texts)
    train, val = (rows[:400], labels[:400]), (rows[400:], labels[400:])
    lstm_val = network.predict(keras.utils.pad_sequences(rows[400:], padding="post"), verbose=0)
    mix, info = fit_ngrams(Config(ngrams=3, seed=1), len(pre.vocabulary), train, val, lstm_val)
    assert info["ngrams"] == mix.size > 500
    assert info["validation_accuracy"]["ngrams"] > 0.8  # it learned from 400 reviews
    # The mix's weight is the best on validation: no weight on the grid mixes better.
    val_ids = tf.constant(keras.utils.pad_sequences(rows[400:], padding="post"))
    positive = tf.sigmoid(mix.logits(val_ids)).numpy()[:, None]
    ngram_val = np.concatenate([1 - positive, positive], 1)

    def accuracy(w: float) -> float:
        return float(np.mean((w * lstm_val + (1 - w) * ngram_val).argmax(1) == labels[400:]))

    scores = {float(w): accuracy(w) for w in LSTM_WEIGHTS}
    assert info["validation_accuracy"]["mixed"] == pytest.approx(scores[mix.lstm_weight])
    assert scores[mix.lstm_weight] == max(scores.values()), scores
    # Rows of different lengths padded together, with repeats of n-grams, and a 1-id row.
    hostile = vectorize(pre, np.array(HOSTILE_BYTES, dtype=object))
    batch = rows[400:440] + hostile + [np.array([1], np.int32)]
    ids = tf.constant(keras.utils.pad_sequences(batch, padding="post"))
    got = mix.logits(ids).numpy()
    expected = [reference_logit(row, mix) for row in batch]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # One row at a time is the same as padded among longer rows.
    alone = [mix.logits(tf.constant(row[None, :])).numpy()[0] for row in batch[:5]]
    np.testing.assert_allclose(alone, got[:5], rtol=0, atol=1e-5)
    # The mix: w * LSTM + (1 - w) * NB-LR, and it sums to one.
    lstm = np.full((len(batch), 2), 0.5, np.float32)
    mixed, ngram = mix_rows(mix, batch, lstm)
    positive = 1 / (1 + np.exp(-got))
    np.testing.assert_allclose(ngram[:, 1], positive, atol=1e-5)
    w = mix.lstm_weight
    np.testing.assert_allclose(mixed[:, 1], w * 0.5 + (1 - w) * positive, atol=1e-5)
    np.testing.assert_allclose(mixed.sum(1), 1, atol=1e-5)


def test_keys_keep_each_order_apart():
    keys = ngram_keys(np.array([3, 1, 3, 1]), 3, 10)
    # 1-grams 1, 3; 2-grams 31, 13; 3-grams 313, 131: distinct, each once.
    assert keys.tolist() == [1, 3, 13, 31, 131, 313]
    with pytest.raises(UserError, match="overflows int64"):
        fit_ngrams(Config(ngrams=4), 3_000_000, ([], np.array([])), ([], np.array([])), None)

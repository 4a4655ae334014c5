"""The served graph: the same answers as the Keras model, in plain TensorFlow ops only."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sentiment.network.model import split_text_model
from keras_sentiment.serving.prediction import SavedModelPredictor

from .helpers import (
    ALLOWED_OPS,
    HOSTILE_BYTES,
    graph_op_types,
    saved_model_proto,
    synthetic_reviews,
)


def test_exported_graph_uses_only_allowed_ops(tiny_with_lstm):
    ops = graph_op_types(tiny_with_lstm)
    assert not ops - ALLOWED_OPS, f"op types outside the allowed set: {sorted(ops - ALLOWED_OPS)}"
    assert "BlockLSTMV2" in ops and "StatelessWhile" in ops  # both paths are in the graph
    assert "UnsortedSegmentSum" in ops  # and the n-gram branch
    assert "UniqueWithCounts" in ops  # and the explain signature


def test_batch_path_is_a_call_kept_out_of_line(tiny_with_lstm):
    library = saved_model_proto(tiny_with_lstm).meta_graphs[0].graph_def.library
    functions = {f.signature.name: f for f in library.function}

    def ops_under(name: str) -> set[str]:
        """Op types of a function and of every function its ops call (branches, loops)."""
        ops, seen, todo = set(), set(), [name]
        while todo:
            f = functions[todo.pop()]
            seen.add(f.signature.name)
            for node in f.node_def:
                ops.add(node.op)
                called = [a.func.name for a in node.attr.values() if a.HasField("func")]
                todo += [c for c in called if c in functions and c not in seen]
        return ops

    kept = [name for name, f in functions.items() if f.attr["_noinline"].b]
    # The packed loop lives in a function no optimizer inlines, so a single review's branch
    # of the served cond skips it as one op.
    assert any("StatelessWhile" in ops_under(name) for name in kept)
    # The LSTM and dense weights are constants of the graph; only the embeddings (and the
    # n-gram weights) are variables a call passes in.
    served = tf.saved_model.load(str(tiny_with_lstm)).signatures["serving_default"]
    variables = [t for t in served.captured_inputs if t.dtype == tf.resource]
    assert len(variables) <= 6  # embeddings, two tables, each member's weights


@pytest.fixture(scope="module")
def reviews() -> list[bytes]:
    """300 reviews of many lengths: two dozen of them longer than the tiny model reads."""
    texts, _ = synthetic_reviews(300, seed=2)
    for i in range(0, 300, 12):
        texts[i] = " ".join(texts[i : i + 4])
    return [t.encode() for t in texts]


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The tiny run's raw-text Keras model and its preprocessor, as `fit` left them."""
    model = keras.models.load_model(tiny_run["run_dir"] / "model.keras")
    return model, split_text_model(model)[0]


def keras_probabilities(model, texts) -> np.ndarray:
    return model(tf.constant(texts), training=False).numpy()


def test_savedmodel_answers_as_the_keras_model(tiny_run, trained, reviews):
    model, _ = trained
    served = SavedModelPredictor(tiny_run["version"])
    texts = reviews + HOSTILE_BYTES
    # The predictor's batches (length-sorted, 256) and single-review requests, both paths.
    expected = keras_probabilities(model, texts)
    got = served(texts)["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # Many small batches, two in flight, still answer in input order.
    small = served(texts, batch_size=16)["probabilities"]
    np.testing.assert_allclose(small, got, rtol=0, atol=1e-5)
    for text in reviews[:5] + HOSTILE_BYTES:
        one = served.signature(text=tf.constant([text]))["probabilities"].numpy()
        np.testing.assert_allclose(one, keras_probabilities(model, [text]), atol=1e-5)
    # One request of 10,000 texts, in arrival order: each answers as the Keras model did above
    # (its answer for a text does not depend on the batch: test_training's padding test).
    many = (reviews * 34)[:10_000]
    got = served.signature(text=tf.constant(many))["probabilities"].numpy()
    np.testing.assert_allclose(got, np.tile(expected[: len(reviews)], (34, 1))[:10_000], atol=1e-5)

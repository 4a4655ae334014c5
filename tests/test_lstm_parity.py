"""One parity suite: every LSTM kernel of the package against Keras' own LSTM, forward and
gradient, for every configuration `build_model` makes.

The kernels (`network/lstm_math.py` holds the math they share):
- training: `CompiledLSTM`'s XLA loops (the model called with `training=True`);
- serving: `ServingNetwork`, its fused-kernel path (BlockLSTMV2, a few rows), its packed loop
  (wide steps with fused gates, narrow steps, a BlockLSTMV2 tail) and its single-review path;
- explanations: `ServingNetwork.padded_logits(differentiable=True)`, BlockLSTMV2 forward and
  the hand-written backward pass.
The reference is the same Keras model through Keras' LSTM (`training=False`) and its tape
gradient.
"""

import inspect
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sentiment.config import Config
from keras_sentiment.network.compiled_lstm import CompiledLSTM, cpu_has_bfloat16
from keras_sentiment.network.model import build_model
from keras_sentiment.network.serving_network import (
    FUSED_ROWS,
    SMALL_BATCH,
    UNROLL,
    ServingNetwork,
    _block_lstm,
    _differentiable_lstm,
)

ON_GPU = bool(tf.config.list_logical_devices("GPU"))
# Every (bidirectional, layers, pooling) build_model makes. The fast tier runs six that hold
# every pair of two settings (the default, one bidirectional layer with max pooling, first);
# the slow tier the other six.
FAST = {(True, 1, "max"), (False, 2, "max"), (True, 2, "mean"), (False, 1, "mean")}
FAST |= {(True, 2, "last"), (False, 1, "last")}
SLOW = set(itertools.product((True, False), (1, 2), ("max", "mean", "last"))) - FAST


def configurations(which: set) -> list:
    """`build_model` settings of these (bidirectional, layers, pooling), as test cases."""
    return [
        pytest.param(
            {"bidirectional": bidirectional, "lstm_layers": layers, "pooling": pooling},
            id=f"{'bi' if bidirectional else 'uni'}-{layers}-{pooling}",
        )
        for bidirectional, layers, pooling in sorted(which, reverse=True)
    ]


def lengths_of_a_hard_batch() -> np.ndarray:
    """Row lengths that take every branch of every kernel: more than FUSED_ROWS rows at first
    (wide packed steps), then fewer (narrow ones), then a ladder of SMALL_BATCH + 1 longest
    rows that drop out one by one into the packed loop's BlockLSTMV2 tail; length-1 rows;
    rows that need more than one block of UNROLL steps in the explanation's backward pass."""
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 9, FUSED_ROWS), [1, 1], 13 + np.arange(6)])
    assert len(lengths) > FUSED_ROWS and lengths.max() > 2 * UNROLL
    return rng.permutation(lengths)  # not sorted: the packed path sorts and scatters back


def random_model(settings: dict, vocabulary: int = 40) -> keras.Model:
    """A model as `build_model` makes it (no dropout, so training runs the same function),
    its weights random and spread out, so that a wrong step shows."""
    keras.utils.set_random_seed(3)
    cfg = Config(lstm_units=8, embeddings="none", embedding_dim=6, dropout=0.0, **settings)
    model = build_model(cfg, vocabulary, 2, None)
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in model.weights])
    return model


def padded_ids(lengths: np.ndarray, vocabulary: int = 40) -> tf.Tensor:
    rng = np.random.default_rng(2)
    ids = rng.integers(1, vocabulary, (len(lengths), lengths.max())).astype(np.int32)
    return tf.constant(np.where(np.arange(lengths.max()) < lengths[:, None], ids, 0))


def lstm_layers(model: keras.Model) -> list:
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            found += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, keras.layers.LSTM):
            found.append(layer)
    return found


def value_and_gradients(fn, sources: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """fn() and the gradients of a fixed weighted sum of it with respect to `sources`."""
    with tf.GradientTape() as tape:
        tape.watch([s for s in sources if isinstance(s, tf.Tensor)])  # variables watch themselves
        out = fn()
        weights = np.linspace(-1, 1, out.shape[-1], dtype=np.float32)
        loss = tf.reduce_sum(out * weights)
    return out.numpy(), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, sources)]


@pytest.fixture(scope="module")
def hard_batch() -> tuple[tf.Tensor, np.ndarray]:
    lengths = lengths_of_a_hard_batch()
    return padded_ids(lengths), lengths


@pytest.mark.parametrize("settings", configurations(FAST))
def test_every_kernel_computes_keras_lstm(settings, hard_batch):
    every_kernel_computes_keras_lstm(settings, hard_batch)


@pytest.mark.slow
@pytest.mark.parametrize("settings", configurations(SLOW))
def test_every_kernel_computes_keras_lstm_in_the_other_configurations(settings, hard_batch):
    every_kernel_computes_keras_lstm(settings, hard_batch)


def every_kernel_computes_keras_lstm(settings: dict, hard_batch) -> None:
    ids, lengths = hard_batch
    model = random_model(settings)
    weights = model.trainable_weights
    expected, expected_grads = value_and_gradients(lambda: model(ids, training=False), weights)
    assert expected[:, 1].std() > 1e-2  # the rows' answers differ

    # Training: the compiled loops, forward and gradient.
    if not ON_GPU:
        assert all(layer._compiled(True) for layer in lstm_layers(model))
    got, grads = value_and_gradients(lambda: model(ids, training=True), weights)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    for g, e, w in zip(grads, expected_grads, weights):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=w.path)

    # Serving: one trace, as the served graph has; every request size runs it.
    serving = ServingNetwork(model)
    network = tf.function(serving, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    np.testing.assert_allclose(network(ids).numpy(), expected, rtol=0, atol=1e-5)  # packed
    few = ids[:SMALL_BATCH, : lengths[:SMALL_BATCH].max()]  # BlockLSTMV2 over padded rows
    np.testing.assert_allclose(network(few).numpy(), expected[:SMALL_BATCH], rtol=0, atol=1e-5)
    one = tf.function(serving.one, input_signature=[tf.TensorSpec([None], tf.int32)])
    for row in (int(np.argmin(lengths)), int(np.argmax(lengths)), 0):
        got = one(ids[row, : lengths[row]]).numpy()
        np.testing.assert_allclose(got, expected[row : row + 1], rtol=0, atol=1e-5)

    # Explanations: the gradient of the logits with respect to the embedded words.
    embedded = model.get_layer("embedding")(ids)
    real = tf.sequence_mask(lengths, ids.shape[1])
    body, dense = model.layers[1:-1], model.layers[-1]

    def keras_logits():
        h = embedded
        for layer in body:
            masked = "mask" in inspect.signature(layer.call).parameters
            h = layer(h, mask=real) if masked else layer(h)
        return tf.matmul(h, dense.kernel) + dense.bias

    def served_logits():
        x = tf.transpose(embedded, [1, 0, 2])
        return serving.padded_logits(x, tf.constant(lengths, tf.int32), differentiable=True)

    expected, [expected_grad] = value_and_gradients(keras_logits, [embedded])
    got, [grad] = value_and_gradients(served_logits, [embedded])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-5)
    assert np.all(grad[~real.numpy()] == 0)  # padding has no say


def test_tensorflow_registered_block_lstm_gradient_is_wrong():
    """Why the explanation has a backward pass of its own: TensorFlow registers BlockLSTMV2's
    gradient as BlockLSTM's, whose kernel assumes the V1 gate order (i, c, f, o). If this test
    fails, TensorFlow has fixed it, and `_differentiable_lstm` could use the tape instead."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (9, 16)).astype(np.float32)
    b = rng.normal(0, 0.5, 16).astype(np.float32)
    x = tf.constant(rng.normal(0, 1, (19, 3, 5)), tf.float32)
    np.testing.assert_allclose(_differentiable_lstm(x, w, b), _block_lstm(x, w, b), atol=1e-6)
    _, [ours] = value_and_gradients(lambda: _differentiable_lstm(x, w, b), [x])
    _, [registered] = value_and_gradients(lambda: _block_lstm(x, w, b), [x])
    assert np.abs(ours - registered).max() > 1e-2


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("splits, dtype", [(1, "float32"), (3, "float32"), (2, "bfloat16")])
def test_compiled_lstm_trains_exactly_like_keras_lstm(
    bidirectional, return_sequences, splits, dtype
):
    """The training kernel's own options: its batch cut into parts, bfloat16 weight gradients."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 11, 5)).astype(np.float32)
    mask = np.arange(11)[None, :] < np.array([11, 1, 4, 7, 9, 2])[:, None]

    def wrap(layer):
        return keras.layers.Bidirectional(layer) if bidirectional else layer

    compiled = CompiledLSTM(
        7, return_sequences=return_sequences, batch_splits=splits, matmul_dtype=dtype
    )
    ours = wrap(compiled)
    ref = wrap(keras.layers.LSTM(7, return_sequences=return_sequences))
    ours.build(x.shape), ref.build(x.shape)
    weights = [w + rng.normal(size=w.shape).astype(np.float32) for w in ours.get_weights()]
    ours.set_weights(weights), ref.set_weights(weights)
    results = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            inputs = tf.constant(x)
            tape.watch(inputs)
            out = layer(inputs, mask=tf.constant(mask), training=True)
            # Padded outputs are masked downstream, so only real steps carry a loss.
            real = out if not return_sequences else tf.where(mask[..., None], out, 0.0)
            loss = tf.reduce_sum(real * np.linspace(-1, 1, real.shape[-1]))
        grads = tape.gradient(loss, [inputs, *layer.trainable_weights])
        results.append([out.numpy()] + [g.numpy() for g in grads])
    inner = [ours.forward_layer, ours.backward_layer] if bidirectional else [ours]
    assert all(layer._compiled(True) for layer in inner)  # the compiled path was tested
    assert all(layer.batch_splits == splits for layer in inner)  # kept through Bidirectional
    bfloat16 = dtype == "bfloat16" and cpu_has_bfloat16()
    exact = {0, 4, len(results[0]) - 1}  # outputs and bias gradients stay float32
    for i, (a, b) in enumerate(zip(*results)):
        if not bfloat16 or i in exact:
            assert np.allclose(a, b, atol=1e-5)
        else:  # gradients from bfloat16 products: 8 bits of mantissa
            assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()
    if bfloat16:  # and the bfloat16 products did run: the weight gradients are rounded
        assert not np.allclose(results[0][2], results[1][2], atol=1e-6)


@pytest.mark.skipif(ON_GPU, reason="on a GPU both layers run cuDNN")
@pytest.mark.parametrize("case", ["go_backwards", "stacked", "initial_state"])
def test_compiled_lstm_matches_keras_lstm_beyond_the_defaults(case):
    """What a Keras LSTM offers beyond `build_model`'s use: reversed input, a given state."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(5, 9, 4)).astype(np.float32))
    mask = tf.constant(np.arange(9)[None, :] < np.array([9, 1, 3, 6, 8])[:, None])
    state = [tf.constant(rng.normal(size=(5, 6)).astype(np.float32)) for _ in range(2)]

    def stack(kind):
        if case == "stacked":
            return [kind(6, return_sequences=True), kind(6, return_sequences=True)]
        return [kind(6, return_sequences=True, go_backwards=case == "go_backwards")]

    ours, ref = stack(CompiledLSTM), stack(keras.layers.LSTM)
    shape = x.shape
    for a, b in zip(ours, ref):  # the same random weights in both
        a.build(shape), b.build(shape)
        weights = [w + rng.normal(0, 0.5, w.shape).astype(np.float32) for w in a.get_weights()]
        a.set_weights(weights), b.set_weights(weights)
        shape = (*shape[:2], 6)
    kwargs = {"initial_state": state} if case == "initial_state" else {}
    results = []
    for layers in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch([x, *state])
            out = x
            for layer in layers:
                out = layer(out, mask=mask, training=True, **kwargs)
            real = tf.where(mask[..., None], out, 0.0)
            loss = tf.reduce_sum(real * np.linspace(-1, 1, 6))
        weights = [w for layer in layers for w in layer.trainable_weights]
        grads = tape.gradient(loss, [x, *state, *weights])
        results.append([out.numpy()] + [g.numpy() for g in grads if g is not None])
    assert all(layer._compiled(True) for layer in ours)
    assert len(results[0]) == len(results[1])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)

"""The training kernel: CompiledLSTM trains exactly as keras.layers.LSTM, and bfloat16 runs
exactly where asked and where the CPU has it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sentiment.config import Config
from keras_sentiment.network import compiled_lstm as kernel_module
from keras_sentiment.network.compiled_lstm import CompiledLSTM, cpu_has_bfloat16, gradient_dtype
from keras_sentiment.network.model import build_model
from keras_sentiment.training.train import set_precision


def tiny(**kw) -> Config:
    return Config(**{"lstm_units": 8, "embeddings": "none", "embedding_dim": 8, **kw})


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("splits, dtype", [(1, "float32"), (3, "float32"), (2, "bfloat16")])
def test_compiled_lstm_trains_exactly_like_keras_lstm(
    bidirectional, return_sequences, splits, dtype
):
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


@pytest.mark.skipif(
    bool(tf.config.list_logical_devices("GPU")), reason="on a GPU both layers run cuDNN"
)
@pytest.mark.parametrize("case", ["go_backwards", "stacked", "initial_state"])
def test_compiled_lstm_matches_keras_lstm_beyond_the_defaults(case):
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


@pytest.mark.parametrize("has_bfloat16", [True, False])
def test_bfloat16_runs_exactly_where_asked_and_the_cpu_has_it(monkeypatch, capsys, has_bfloat16):
    monkeypatch.setattr(kernel_module, "cpu_has_bfloat16", lambda: has_bfloat16)
    assert Config().precision == "float32"  # bfloat16: at most 10% faster in fit (README)
    cfg = tiny(bidirectional=False, precision="auto")
    assert build_model(cfg, 30, 2, None).layers[2].matmul_dtype == "auto"
    used = "bfloat16" if has_bfloat16 else "float32"
    assert gradient_dtype("auto") == gradient_dtype("bfloat16") == used
    assert gradient_dtype("float32") == "float32"
    # The strategy line says where bfloat16 runs; only an explicit request that cannot be
    # met prints the fallback, auto falls back silently.
    assert ("bfloat16" in set_precision(cfg)) == has_bfloat16
    assert capsys.readouterr().out == ""
    assert set_precision(tiny()) == "float32"
    assert ("bfloat16" in set_precision(tiny(precision="bfloat16"))) == has_bfloat16
    fallback = "bfloat16 needs a CPU with AVX512_BF16 or AMX: training in float32\n"
    assert capsys.readouterr().out == ("" if has_bfloat16 else fallback)

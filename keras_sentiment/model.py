"""Stage 6, model: Embedding (GloVe start, padding masked) -> LSTM stack -> Dense softmax."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import activations, layers, ops

from .config import Config


@keras.saving.register_keras_serializable(package="keras_sentiment")
class MaskedGlobalMaxPooling1D(layers.Layer):
    """Max over the real time steps only: padded steps never win the max."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            inputs = ops.where(ops.expand_dims(mask, -1), inputs, ops.full_like(inputs, -1e9))
        return ops.max(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


# Keras' generic LSTM differentiates a graph while-loop: every step runs dozens of small ops
# through TensorFlow's executor plus two weight-gradient matmuls. On a CPU that loop, not the
# arithmetic, is most of the time. CompiledLSTM trains the way cuDNN does: the input
# projection and every weight gradient are one large matmul per batch, and each step's
# elementwise work is fused by XLA, so a step is one small matmul and a few fused loops.
# Gate order is Keras' (i, f, g, o); tanh(z) = 2*sigmoid(2z) - 1 lets one sigmoid cover all four.


def _gate_scale(units: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    one = tf.ones([units], dtype)
    return tf.concat([one, one, 2 * one, one], 0)


@tf.function(jit_compile=True, reduce_retracing=True)
def _lstm_forward(xw, mt, h0, c0, u):
    """The recurrence over time-major input projections; keeps what the backward pass needs."""
    steps = tf.shape(xw)[0]
    hs, cs, gates = (tf.TensorArray(xw.dtype, size=steps) for _ in range(3))

    def step(t, h, c, hs, cs, gates):
        s = tf.sigmoid(xw[t] + tf.matmul(h, u))
        i, f, g, o = tf.split(s, 4, axis=1)
        c_new = f * c + i * (2.0 * g - 1.0)
        h_new = o * tf.tanh(c_new)
        h = tf.where(mt[t], h_new, h)  # padded steps carry the state through
        c = tf.where(mt[t], c_new, c)
        return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, s)

    _, h, c, hs, cs, gates = tf.while_loop(
        lambda t, *_: t < steps, step, (0, h0, c0, hs, cs, gates)
    )
    return hs.stack(), h, c, cs.stack(), gates.stack()


@tf.function(jit_compile=True, reduce_retracing=True)
def _lstm_backward(mt, c0, recurrent_kernel, cs, gates, d_hs, d_h, d_c):
    """Backpropagation through time: the gate gradients of every step, and of h0 and c0."""
    steps = tf.shape(cs)[0]
    u_t = tf.transpose(recurrent_kernel)
    mf = tf.cast(mt, cs.dtype)
    d_gates = tf.TensorArray(cs.dtype, size=steps)

    def step(t, dh, dc, d_gates):
        i, f, g, o = tf.split(gates[t], 4, axis=1)
        g = 2.0 * g - 1.0
        c_prev = tf.where(t > 0, cs[tf.maximum(t - 1, 0)], c0)
        m, tc = mf[t], tf.tanh(cs[t])
        dh = dh + d_hs[t]
        dc_new = (dc + dh * o * (1 - tc * tc)) * m
        dz = tf.concat(
            [
                dc_new * g * i * (1 - i),
                dc_new * c_prev * f * (1 - f),
                dc_new * i * (1 - g * g),
                dh * m * tc * o * (1 - o),
            ],
            1,
        )
        skip = 1.0 - m  # a padded step passed its gradient straight through
        return t - 1, tf.matmul(dz, u_t) + dh * skip, dc_new * f + dc * skip, d_gates.write(t, dz)

    _, dh0, dc0, d_gates = tf.while_loop(lambda t, *_: t >= 0, step, (steps - 1, d_h, d_c, d_gates))
    return d_gates.stack(), dh0, dc0


@tf.custom_gradient
def _lstm_train(xt, mt, h0, c0, kernel, recurrent_kernel, bias):
    # The tape must not trace into the compiled loops: grad() is their gradient. The large
    # matmuls stay outside XLA, where TensorFlow's oneDNN kernels run them faster.
    args = [tf.stop_gradient(a) for a in (xt, mt, h0, c0, kernel, recurrent_kernel, bias)]
    xt, mt, h0, c0, kernel, recurrent_kernel, bias = args
    units = tf.shape(recurrent_kernel)[0]
    steps, batch, dim = tf.shape(xt)[0], tf.shape(xt)[1], tf.shape(xt)[2]
    scale = _gate_scale(units, xt.dtype)
    flat_x = tf.reshape(xt, [-1, dim])
    xw = tf.matmul(flat_x, kernel * scale) + bias * scale
    xw = tf.reshape(xw, [steps, batch, 4 * units])
    hs, h, c, cs, gates = _lstm_forward(xw, mt, h0, c0, recurrent_kernel * scale)

    def grad(d_hs, d_h, d_c):
        d_gates, dh0, dc0 = _lstm_backward(mt, c0, recurrent_kernel, cs, gates, d_hs, d_h, d_c)
        dz = tf.reshape(d_gates, [-1, 4 * units])
        h_prev = tf.reshape(hs[:-1], [-1, units])
        d_recurrent = tf.matmul(h_prev, dz[batch:], transpose_a=True)
        d_recurrent += tf.matmul(h0, dz[:batch], transpose_a=True)
        d_kernel = tf.matmul(flat_x, dz, transpose_a=True)
        d_x = tf.reshape(tf.matmul(dz, kernel, transpose_b=True), tf.shape(xt))
        return d_x, None, dh0, dc0, d_kernel, d_recurrent, tf.reduce_sum(dz, 0)

    return (hs, h, c), grad


@keras.saving.register_keras_serializable(package="keras_sentiment")
class CompiledLSTM(layers.LSTM):
    """keras.layers.LSTM that trains on a CPU with compiled loops and hand-written backprop.

    Same weights, config, masking and Bidirectional behaviour as the Keras layer; inference,
    GPUs (cuDNN) and options the compiled path lacks (dropout inside the LSTM, other
    activations, float16) use Keras' own implementation.
    """

    def _compiled(self, training: bool) -> bool:
        cell = self.cell
        return bool(
            training
            and keras.backend.backend() == "tensorflow"
            and not tf.config.list_logical_devices("GPU")
            and cell.activation is activations.tanh
            and cell.recurrent_activation is activations.sigmoid
            and cell.use_bias
            and not (cell.dropout or cell.recurrent_dropout or self.unroll)
            and self.compute_dtype == "float32"
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._compiled(training):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        xt = tf.transpose(sequences, [1, 0, 2])
        mt = tf.ones(tf.shape(xt)[:2], tf.bool) if mask is None else tf.transpose(mask)
        mt = tf.cast(mt, tf.bool)[:, :, None]
        if self.go_backwards:  # Keras' contract: outputs in processing (reversed) order
            xt, mt = tf.reverse(xt, [0]), tf.reverse(mt, [0])
        cell = self.cell
        hs, h, c = _lstm_train(
            xt,
            mt,
            initial_state[0],
            initial_state[1],
            cell.kernel.value,
            cell.recurrent_kernel.value,
            cell.bias.value,
        )
        if self.zero_output_for_mask:
            hs = tf.where(mt, hs, tf.zeros_like(hs))
        last = hs[-1]
        outputs = tf.transpose(hs, [1, 0, 2]) if self.return_sequences else last[:, None]
        return last, outputs, [h, c]


def build_model(
    cfg: Config, vocab_size: int, num_classes: int, matrix: np.ndarray | None
) -> keras.Sequential:
    """The classifier over token ids, as one readable Sequential."""
    dim = cfg.embedding_dim if matrix is None else matrix.shape[1]
    init = "uniform" if matrix is None else keras.initializers.Constant(matrix)
    stack: list[layers.Layer] = [
        keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        layers.Embedding(
            vocab_size,
            dim,
            embeddings_initializer=init,
            mask_zero=True,
            trainable=cfg.train_embeddings or matrix is None,
            name="embedding",
        ),
        layers.SpatialDropout1D(cfg.dropout / 2),
    ]
    for i in range(cfg.lstm_layers):
        last = i == cfg.lstm_layers - 1
        lstm = CompiledLSTM(cfg.lstm_units, return_sequences=not last or cfg.pooling != "last")
        stack.append(layers.Bidirectional(lstm) if cfg.bidirectional else lstm)
    if cfg.pooling == "max":
        stack.append(MaskedGlobalMaxPooling1D())
    elif cfg.pooling == "mean":
        stack.append(layers.GlobalAveragePooling1D())
    stack += [
        layers.Dropout(cfg.dropout),
        # float32 output even under mixed precision, for a stable softmax.
        layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities"),
    ]
    return keras.Sequential(stack, name="sentiment_lstm")


def disable_cudnn(model: keras.Model) -> None:
    """Trace LSTMs with the generic kernel, so a graph exported on a GPU still serves on CPU."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.LSTM):
            layer.use_cudnn = False

"""The training kernel: an LSTM layer that trains on a CPU with XLA-compiled loops.

Keras' generic LSTM differentiates a graph while-loop: every step runs dozens of small ops
through TensorFlow's executor plus two weight-gradient matmuls. On a CPU that loop, not the
arithmetic, is most of the time. `CompiledLSTM` trains the way cuDNN does: the input
projection and every weight gradient are one large matmul per batch, and each step's
elementwise work is fused by XLA, so a step is one small matmul and a few fused loops. The
loops are a schedule around `lstm_math` (its step, its backward step, one sigmoid for all four
gates), which holds the equations.

Only training takes this path; inference, GPUs (cuDNN) and the served graph
(`serving_network.py`) never do.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import keras
import tensorflow as tf

from keras_sentiment.compat import LSTMWithOwnLoop
from keras_sentiment.network import lstm_math


@functools.cache
def cpu_has_bfloat16() -> bool:
    """Whether this CPU has bfloat16 matmul instructions (Linux: AVX512_BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gradient_dtype(precision: str) -> str:
    """The dtype of the training LSTM's gradient matmuls for a `Config.precision` value."""
    # Without bfloat16 instructions, oneDNN would emulate them, slower than float32.
    wanted = precision in ("auto", "bfloat16")
    return "bfloat16" if wanted and cpu_has_bfloat16() else "float32"


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@tf.function(jit_compile=True, reduce_retracing=True)
def _lstm_forward(xw, mt, h0, c0, u, bias):
    """The recurrence over time-major input projections; keeps what the backward pass needs.

    `xw`, `u` and `bias` are scaled by `lstm_math.one_sigmoid_scale`: one sigmoid a step.
    """
    steps = tf.shape(xw)[0]
    hs, cs, gates = (tf.TensorArray(xw.dtype, size=steps) for _ in range(3))

    def forward(t, h, c, hs, cs, gates):
        s = lstm_math.one_sigmoid(xw[t] + bias + tf.matmul(h, u))  # the bias add fused here
        h_new, c_new = lstm_math.step(lstm_math.one_sigmoid_gates(s), c)
        h = tf.where(mt[t], h_new, h)  # padded steps carry the state through
        c = tf.where(mt[t], c_new, c)
        return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, s)

    _, h, c, hs, cs, gates = tf.while_loop(
        lambda t, *_: t < steps, forward, (0, h0, c0, hs, cs, gates)
    )
    return hs.stack(), h, c, cs.stack(), gates.stack()


@tf.function(jit_compile=True, reduce_retracing=True)
def _lstm_backward(mt, c0, recurrent_kernel, cs, gates, d_hs, d_h, d_c):
    """Backpropagation through time: the gate gradients of every step, and of h0, c0, bias."""
    steps = tf.shape(cs)[0]
    u_t = tf.transpose(recurrent_kernel)
    mf = tf.cast(mt, cs.dtype)
    d_gates = tf.TensorArray(cs.dtype, size=steps)

    def backward(t, dh, dc, d_bias, d_gates):
        step_gates = lstm_math.one_sigmoid_gates(gates[t])
        c_prev = tf.where(t > 0, cs[tf.maximum(t - 1, 0)], c0)
        slopes, dh_to_dc = lstm_math.gate_slopes(step_gates, c_prev, cs[t])
        m, dh = mf[t], dh + d_hs[t]
        # A padded step passes its gradients straight through: it computed nothing.
        dz, dc_in = lstm_math.backward_step(slopes, dh_to_dc, step_gates[1], dh * m, dc * m)
        dh, dc = tf.matmul(dz, u_t) + dh * (1.0 - m), dc_in + dc * (1.0 - m)
        return t - 1, dh, dc, d_bias + dz, d_gates.write(t, dz)

    d_bias = tf.zeros_like(gates[0])
    _, dh0, dc0, d_bias, d_gates = tf.while_loop(
        lambda t, *_: t >= 0, backward, (steps - 1, d_h, d_c, d_bias, d_gates)
    )
    return d_gates.stack(), dh0, dc0, tf.reduce_sum(d_bias, 0)


def _make_lstm_train(dtype: tf.DType):
    """The training LSTM; its weight-gradient matmuls run in `dtype` (float32 or bfloat16)."""

    @tf.custom_gradient
    def lstm_train(xt, mt, h0, c0, kernel, recurrent_kernel, bias):
        # The tape must not trace into the compiled loops: grad() is their gradient. The large
        # matmuls stay outside XLA, where TensorFlow's oneDNN kernels run them faster, and in
        # bfloat16 on the CPU's bfloat16 instructions, which XLA's CPU dots do not use. The
        # input projection stays float32: with 50 inputs it is bound by memory, not arithmetic.
        args = [tf.stop_gradient(a) for a in (xt, mt, h0, c0, kernel, recurrent_kernel, bias)]
        xt, mt, h0, c0, kernel, recurrent_kernel, bias = args
        units = tf.shape(recurrent_kernel)[0]
        steps, batch, dim = tf.shape(xt)[0], tf.shape(xt)[1], tf.shape(xt)[2]
        scale = lstm_math.one_sigmoid_scale(units, xt.dtype)
        flat_x = tf.reshape(xt, [-1, dim])
        xw = tf.reshape(tf.matmul(flat_x, kernel * scale), [steps, batch, 4 * units])
        loop = _lstm_forward(xw, mt, h0, c0, recurrent_kernel * scale, bias * scale)
        hs, h, c, cs, gates = loop

        def grad(d_hs, d_h, d_c):
            d_gates, dh0, dc0, d_bias = _lstm_backward(
                mt, c0, recurrent_kernel, cs, gates, d_hs, d_h, d_c
            )
            # Cast once here: XLA's own float32 -> bfloat16 conversion in the loop is slow.
            dz = tf.cast(tf.reshape(d_gates, [-1, 4 * units]), dtype)
            h_prev = tf.cast(tf.reshape(hs[:-1], [-1, units]), dtype)
            x, h_first, k = (tf.cast(a, dtype) for a in (flat_x, h0, kernel))

            def matmul(a, b, **kwargs):  # in bfloat16: float32 accumulation, rounded product
                return tf.cast(tf.matmul(a, b, **kwargs), tf.float32)

            d_recurrent = matmul(h_prev, dz[batch:], transpose_a=True)
            d_recurrent += matmul(h_first, dz[:batch], transpose_a=True)
            d_kernel = matmul(x, dz, transpose_a=True)
            d_x = tf.reshape(matmul(dz, k, transpose_b=True), tf.shape(xt))
            return d_x, None, dh0, dc0, d_kernel, d_recurrent, d_bias

        return (hs, h, c), grad

    return lstm_train


_lstm_train = {dtype: _make_lstm_train(dtype) for dtype in (tf.float32, tf.bfloat16)}


@keras.saving.register_keras_serializable(package="keras_sentiment")
class CompiledLSTM(LSTMWithOwnLoop):
    """keras.layers.LSTM that trains on a CPU with compiled loops and hand-written backprop.

    Same weights, config, masking and Bidirectional behaviour as the Keras layer; inference,
    GPUs (cuDNN) and options the compiled path lacks (dropout inside the LSTM, other
    activations, float16) use Keras' own implementation. `matmul_dtype="bfloat16"` runs the
    large matmuls outside the compiled loops in bfloat16 (float32 accumulation; the state, the
    gates and the weights stay float32); "auto" does so where the CPU has bfloat16 instructions.
    """

    def __init__(self, units: int, matmul_dtype: str = "float32", batch_splits: int = 1, **kwargs):
        super().__init__(units, **kwargs)
        self.matmul_dtype = matmul_dtype
        self.batch_splits = batch_splits

    def get_config(self) -> dict:
        extra = {"matmul_dtype": self.matmul_dtype, "batch_splits": self.batch_splits}
        return {**super().get_config(), **extra}

    def _compiled(self, training: bool) -> bool:
        cell = self.cell
        return bool(
            training
            and keras.backend.backend() == "tensorflow"
            and not tf.config.list_logical_devices("GPU")
            and lstm_math.has_standard_activations(cell)
            and cell.use_bias
            and not (cell.dropout or cell.recurrent_dropout or self.unroll)
            and self.compute_dtype == "float32"
        )

    def own_loop(self, sequences, initial_state, mask, training: bool):
        if not self._compiled(training):
            return None  # Keras' own loop
        mask = mask[0] if isinstance(mask, (list, tuple)) else mask
        xt = tf.transpose(sequences, [1, 0, 2])
        mt = tf.ones(tf.shape(xt)[:2], tf.bool) if mask is None else tf.transpose(mask)
        mt = tf.cast(mt, tf.bool)[:, :, None]
        if self.go_backwards:  # Keras' contract: outputs in processing (reversed) order
            xt, mt = tf.reverse(xt, [0]), tf.reverse(mt, [0])
        cell = self.cell
        weights = (cell.kernel.value, cell.recurrent_kernel.value, cell.bias.value)
        train = _lstm_train[tf.as_dtype(gradient_dtype(self.matmul_dtype))]
        # Parts of the batch are independent loops, which the executor runs at once: one
        # loop's small per-step matmuls keep only one of a CPU's cores busy.
        batch = tf.shape(xt)[1]
        cuts = [batch * i // self.batch_splits for i in range(self.batch_splits + 1)]
        h0, c0 = initial_state[0], initial_state[1]
        parts = [
            train(xt[:, a:b], mt[:, a:b], h0[a:b], c0[a:b], *weights)
            for a, b in zip(cuts[:-1], cuts[1:])
        ]
        hs, h, c = (tf.concat(part, axis) for part, axis in zip(zip(*parts), (1, 0, 0)))
        if self.zero_output_for_mask:
            hs = tf.where(mt, hs, tf.zeros_like(hs))
        last = hs[-1]
        outputs = tf.transpose(hs, [1, 0, 2]) if self.return_sequences else last[:, None]
        return last, outputs, [h, c]

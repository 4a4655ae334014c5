"""Stage 6, model: Embedding (GloVe start, padding masked) -> LSTM stack -> Dense softmax."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import activations, layers, ops

from .config import Config
from .ngrams import NgramMix
from .preprocessing import TextPreprocessor


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


def _cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _gate_scale(units: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    one = tf.ones([units], dtype)
    return tf.concat([one, one, 2 * one, one], 0)


@tf.function(jit_compile=True, reduce_retracing=True)
def _lstm_forward(xw, mt, h0, c0, u, bias):
    """The recurrence over time-major input projections; keeps what the backward pass needs."""
    steps = tf.shape(xw)[0]
    hs, cs, gates = (tf.TensorArray(xw.dtype, size=steps) for _ in range(3))

    def step(t, h, c, hs, cs, gates):
        s = tf.sigmoid(xw[t] + bias + tf.matmul(h, u))  # the bias add is fused here
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
    """Backpropagation through time: the gate gradients of every step, and of h0, c0, bias."""
    steps = tf.shape(cs)[0]
    u_t = tf.transpose(recurrent_kernel)
    mf = tf.cast(mt, cs.dtype)
    d_gates = tf.TensorArray(cs.dtype, size=steps)

    def step(t, dh, dc, d_bias, d_gates):
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
        dh, dc = tf.matmul(dz, u_t) + dh * skip, dc_new * f + dc * skip
        return t - 1, dh, dc, d_bias + dz, d_gates.write(t, dz)

    d_bias = tf.zeros_like(gates[0])
    _, dh0, dc0, d_bias, d_gates = tf.while_loop(
        lambda t, *_: t >= 0, step, (steps - 1, d_h, d_c, d_bias, d_gates)
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
        scale = _gate_scale(units, xt.dtype)
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
class CompiledLSTM(layers.LSTM):
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


def build_model(
    cfg: Config, vocab_size: int, num_classes: int, matrix: np.ndarray | None
) -> keras.Sequential:
    """The classifier over token ids, as one readable Sequential."""
    dim = cfg.embedding_dim if matrix is None else matrix.shape[1]
    # GloVe is assigned after building: as a Constant initializer the whole matrix would be
    # written into every .keras file's config.json (52 MB of JSON for the default model).
    init = "uniform" if matrix is None else "zeros"
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
        lstm = CompiledLSTM(
            cfg.lstm_units,
            return_sequences=not last or cfg.pooling != "last",
            matmul_dtype=cfg.precision,
            # Two directions are already two loops at once; one direction splits its batch
            # in two (benchmarks/README.md: 1.26x at the seed configuration on 2 cores).
            batch_splits=2 if not cfg.bidirectional and _cpu_cores() >= 2 else 1,
        )
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
    model = keras.Sequential(stack, name="sentiment_lstm")
    if matrix is not None:
        model.get_layer("embedding").embeddings.assign(matrix)
    return model


def text_model(
    pre: TextPreprocessor, network: keras.Model, mix: NgramMix | None = None
) -> keras.Model:
    """Raw strings in, probabilities out: the preprocessing layer, the network, the n-gram mix.

    One .keras file holds them all; `import keras_sentiment` registers the package's layers,
    so `keras.saving.load_model` restores it in a new process, in Keras' safe mode.
    """
    text = keras.Input(shape=(), dtype="string", name="text")
    ids = pre(text)
    probabilities = network(ids)
    if mix is not None:
        probabilities = mix([ids, probabilities])
    return keras.Model(text, probabilities, name="sentiment_text")


def split_text_model(
    model: keras.Model,
) -> tuple[TextPreprocessor, keras.Model, NgramMix | None]:
    """The preprocessing layer, token-id network and n-gram mix (or None) of a `text_model`."""
    pre = next(layer for layer in model.layers if isinstance(layer, TextPreprocessor))
    network = next(layer for layer in model.layers if isinstance(layer, keras.Sequential))
    mix = next((layer for layer in model.layers if isinstance(layer, NgramMix)), None)
    return pre, network, mix


# --- serving -----------------------------------------------------------------------------
# TF Serving runs the exported graph with TensorFlow's stock kernels, no XLA. Keras' generic
# LSTM runs a dozen executor ops per step and projects the input at every step; ServingNetwork
# computes the same function the way a server should (benchmarks/README.md has the profile):
# - a few rows: TensorFlow's fused CPU kernel BlockLSTMV2 runs the whole sequence in one op
#   (about 7 us a step at batch 1 against 23 us for the leanest while-loop);
# - more rows: the rows are sorted by length and packed, as PyTorch's PackedSequence: step t
#   runs only the rows still going, so no step is spent on padding, and each step is one
#   matmul per gate (fused with its input projection while the step is wide) plus the cell
#   arithmetic. The last layer pools as it goes, storing no states.
# The backward direction reads each row reversed within its own length, so padding never
# reaches a real step, and the two directions are independent ops the executor runs at once.

SMALL_BATCH = 4  # rows up to which BlockLSTMV2 beats the packed loop (benchmarks/README.md)
FUSED_ROWS = 64  # rows from which a packed step's fused gates win (benchmarks/README.md)


def _lstm_weights(cell) -> tuple[np.ndarray, np.ndarray]:
    # BlockLSTMV2 wants [kernel; recurrent_kernel] and uses Keras' gate order (i, f, c, o).
    if (cell.activation, cell.recurrent_activation) != (activations.tanh, activations.sigmoid):
        raise ValueError("ServingNetwork needs LSTMs with tanh and sigmoid activations")
    w = np.concatenate([np.asarray(cell.kernel), np.asarray(cell.recurrent_kernel)])
    b = np.asarray(cell.bias) if cell.use_bias else np.zeros(w.shape[1], np.float32)
    return w.astype(np.float32), b.astype(np.float32)


def _block_lstm(
    x: tf.Tensor,
    w: tf.Tensor | np.ndarray,
    b: tf.Tensor | np.ndarray,
    h: tf.Tensor | None = None,
    c: tf.Tensor | None = None,
    steps: tf.Tensor | None = None,
) -> tf.Tensor:
    """Hidden states [time, batch, units] of a time-major batch, all steps in one op.

    It starts from the states `h` and `c` [batch, units], or zeros; `steps` is x's time
    length as int64, when the caller has it.
    """
    units = b.shape[0] // 4
    rows = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]  # static: zeros are a Const
    zeros, no_peephole = tf.zeros([rows, units]), tf.zeros([units])
    return tf.raw_ops.BlockLSTMV2(
        seq_len_max=tf.cast(tf.shape(x)[0], tf.int64) if steps is None else steps,
        x=x,
        cs_prev=zeros if c is None else c,
        h_prev=zeros if h is None else h,
        w=w,
        wci=no_peephole,
        wcf=no_peephole,
        wco=no_peephole,
        b=b,
    ).h


def _time_major_mask(lengths: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """[time, batch]: True where step t is a real token of the row."""
    # Built time-major, not transposed: oneDNN has no bool transpose (and logs an error).
    return tf.range(steps)[:, None] < lengths[None, :]


def _packed_lstm(
    x: tf.Tensor,
    sizes: tf.Tensor,
    w: tf.Tensor | np.ndarray,
    b: tf.Tensor | np.ndarray,
    pool: str | None = None,
) -> tf.Tensor:
    """Packed steps [steps, features] (rows by time, then by row) -> their hidden states.

    With `pool` ("max", "mean" or "last") it returns each row's pooled state instead (the
    sum for "mean"), in packed row order: the loop keeps the running pool of the rows still
    going and sets a row's aside when it ends, so no hidden state is stored at all.
    """
    # Three ways to compute a step, each the faster where it runs (benchmarks/README.md);
    # since rows only drop out, each covers a run of consecutive steps:
    # - wide steps (FUSED_ROWS rows or more): per gate, [x_t, h] @ [kernel; recurrent] + bias
    #   and the activation are one oneDNN op (grappler's remapper fuses MatMul, BiasAdd and
    #   Sigmoid or Tanh);
    # - narrow steps, where a fused op's extra 10 us a call would dominate: the input
    #   projection of all of them is one matmul up front, and a step adds its slice to h @ U;
    # - the tail, SMALL_BATCH rows or fewer: one BlockLSTMV2 from the loop's state, about 10 us
    #   a step against some 45-50 for a loop step (most of a request of 32's steps are here; a
    #   tail of up to 8 or 16 rows measured slower, BlockLSTMV2 costing 23 and 30 us a step).
    w, b = tf.convert_to_tensor(w), tf.convert_to_tensor(b)  # one constant for split and tail
    dim = w.shape[0] - b.shape[0] // 4
    kernels, biases = tf.split(w, 4, axis=1), tf.split(b, 4)
    wide = tf.reduce_sum(tf.cast(sizes >= FUSED_ROWS, tf.int32))
    tail = tf.reduce_sum(tf.cast(sizes > SMALL_BATCH, tf.int32))  # the tail's first step
    starts = tf.cumsum(sizes, exclusive=True)
    narrow_start, tail_start = tf.reduce_sum(sizes[:wide]), tf.reduce_sum(sizes[:tail])
    xws = [
        tf.matmul(x[narrow_start:tail_start], k[:dim]) + bias for k, bias in zip(kernels, biases)
    ]
    recurrents = [k[dim:] for k in kernels]
    # Index t holds step t's states; pooled, index tail + 1 - t holds the rows whose last step
    # was t - 1, and index 0 the tail's rows: they concatenate in row order.
    size = tail + 1 if pool is None else tail + 2
    outputs = tf.TensorArray(x.dtype, size, infer_shape=False, element_shape=[None, None])

    def cell(t, start, rows, z, c, pooled, outputs):
        i, f, g, o = z
        c = tf.sigmoid(f) * c[:rows] + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        if pool is None:
            return t + 1, start + rows, h, c, pooled, outputs.write(t, h)
        outputs = outputs.write(tail + 1 - t, pooled[rows:])  # rows whose last step was t - 1
        pooled = pooled[:rows]
        pooled = {"max": tf.maximum(pooled, h), "mean": pooled + h, "last": h}[pool]
        return t + 1, start + rows, h, c, pooled, outputs

    def wide_step(t, start, h, c, pooled, outputs):
        rows = sizes[t]  # the rows still going: a prefix, since rows are sorted by length
        xh = tf.concat([x[start : start + rows], h[:rows]], 1)
        z = [tf.nn.bias_add(tf.matmul(xh, k), bias) for k, bias in zip(kernels, biases)]
        return cell(t, start, rows, z, c, pooled, outputs)

    def narrow_step(t, start, h, c, pooled, outputs):
        rows, at = sizes[t], start - narrow_start
        z = [xw[at : at + rows] + tf.matmul(h[:rows], r) for xw, r in zip(xws, recurrents)]
        return cell(t, start, rows, z, c, pooled, outputs)

    zeros = tf.zeros([sizes[0], b.shape[0] // 4], x.dtype)
    first = tf.fill(tf.shape(zeros), -np.inf) if pool == "max" else zeros
    state = (0, 0, zeros, zeros, first, outputs)
    state = tf.while_loop(lambda t, *_: t < wide, wide_step, state, parallel_iterations=1)
    state = tf.while_loop(lambda t, *_: t < tail, narrow_step, state, parallel_iterations=1)
    _, _, h, c, pooled, outputs = state

    # The tail: its rows' steps gathered time-major ([steps, rows], padded at each row's end,
    # where BlockLSTMV2's extra steps come after every real one and are masked out).
    rows = tf.concat([sizes, [0]], 0)[tail]
    real = tf.range(rows)[None, :] < sizes[tail:, None]
    at = tf.where(real, starts[tail:, None] + tf.range(rows)[None, :], 0)
    states = _block_lstm(tf.gather(x, at), w, b, h[:rows], c[:rows])
    if pool is None:
        return outputs.write(tail, tf.boolean_mask(states, real)).concat()
    outputs = outputs.write(1, pooled[rows:])  # rows whose last step was the tail's start - 1
    pooled, real = pooled[:rows], real[:, :, None]
    if pool == "max":
        pooled = tf.maximum(pooled, tf.reduce_max(tf.where(real, states, -np.inf), 0))
    elif pool == "mean":
        pooled += tf.reduce_sum(tf.where(real, states, 0.0), 0)
    else:
        last = tf.reduce_sum(tf.cast(real[:, :, 0], tf.int32), 0) - 1  # each row's last step
        pooled = tf.gather_nd(states, tf.stack([last, tf.range(rows)], 1))
    return outputs.write(0, pooled).concat()


class ServingNetwork(tf.Module):
    """The trained network for inference in plain TensorFlow ops: token ids -> probabilities.

    Same function as the Keras model with `training=False` (to float rounding), for every
    configuration `build_model` makes: stacked, uni- or bidirectional, max/mean/last pooling.
    Holds its own copy of the weights, laid out for the kernels it runs: the embeddings as a
    variable, the LSTM and dense weights as numpy arrays that become constants of the graph,
    since a served call passes each variable in as an argument, a cost paid on every request
    (benchmarks/README.md).
    """

    def __init__(self, model: keras.Model, small_batch: int = SMALL_BATCH):
        super().__init__(name="serving_network")
        self.small_batch = small_batch
        self.lstms: list[tuple] = []
        self.pooling = "last"
        for layer in model.layers:
            if isinstance(layer, layers.Embedding):
                self.embeddings = tf.Variable(np.asarray(layer.embeddings), trainable=False)
            elif isinstance(layer, layers.Bidirectional):
                forward, backward = layer.forward_layer.cell, layer.backward_layer.cell
                self.lstms.append((_lstm_weights(forward), _lstm_weights(backward)))
            elif isinstance(layer, layers.LSTM):
                self.lstms.append((_lstm_weights(layer.cell), None))
            elif isinstance(layer, MaskedGlobalMaxPooling1D):
                self.pooling = "max"
            elif isinstance(layer, layers.GlobalAveragePooling1D):
                self.pooling = "mean"
            elif isinstance(layer, layers.Dense):
                self.dense = tuple(np.asarray(v, np.float32) for v in layer.weights)
            elif not isinstance(layer, (layers.Dropout, layers.SpatialDropout1D)):
                raise ValueError(f"ServingNetwork: no serving path for layer {layer.name!r}")

    def __call__(self, ids: tf.Tensor) -> tf.Tensor:
        """Right-padded token ids [batch, time], every row non-empty -> [batch, classes]."""
        lengths = tf.math.count_nonzero(ids, axis=1, dtype=tf.int32)
        return tf.cond(
            tf.shape(ids)[0] <= self.small_batch,  # an empty request too: it gets 0 rows
            lambda: self._padded(ids, lengths),
            lambda: self._packed(ids, lengths),
        )

    # In every path the last layer is pooled from each direction's states in the order the
    # direction computed them: max and mean do not care about order, and Keras' last output
    # is each direction's final state (the backward one having read the row backwards).

    def one(self, ids: tf.Tensor) -> tf.Tensor:
        """One review's token ids [time], non-empty and unpadded -> probabilities [1, classes].

        The single-review path: no lengths, masks or condition, the two directions' BlockLSTMV2
        ops started straight from the embedded review.
        """
        x = tf.gather(self.embeddings, ids)[:, None]  # [time, 1, dim]
        # Reversing the ids rather than the embedded review readies both directions' inputs
        # at once, so the executor starts the two BlockLSTMV2 ops together.
        backwards = tf.gather(self.embeddings, tf.reverse(ids, [0]))[:, None]
        steps = tf.size(ids, out_type=tf.int64)
        for i, (forward, backward) in enumerate(self.lstms):
            states = [_block_lstm(x, *forward, steps=steps)]
            if backward:
                states.append(_block_lstm(backwards, *backward, steps=steps))
            if i < len(self.lstms) - 1:
                x = tf.concat(states[:1] + [tf.reverse(h, [0]) for h in states[1:]], -1)
                backwards = tf.reverse(x, [0])
        pool = {"max": tf.reduce_max, "mean": tf.reduce_mean, "last": lambda h, _: h[-1]}
        pooled = tf.concat([pool[self.pooling](h, 0) for h in states], 1)[0]  # [features]
        kernel, bias = self.dense
        # Multiplied and summed rather than a matmul: oneDNN's call for a [1, 256] by [256, 2]
        # product costs more than the product, 0.13 ms of a single review's 2.2
        # (benchmarks/README.md).
        return tf.nn.softmax(tf.reduce_sum(pooled[:, None] * kernel, 0) + bias)[None]

    def _padded(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        steps = tf.maximum(tf.reduce_max(lengths), 1)
        x = tf.gather(self.embeddings, tf.transpose(ids[:, :steps]))  # [time, batch, dim]

        def backwards(seq: tf.Tensor) -> tf.Tensor:
            return tf.reverse_sequence(seq, lengths, seq_axis=0, batch_axis=1)

        for i, (forward, backward) in enumerate(self.lstms):
            states = [_block_lstm(x, *forward)]
            if backward:
                states.append(_block_lstm(backwards(x), *backward))
            if i < len(self.lstms) - 1:  # the next layer reads both directions in time order
                x = tf.concat(states[:1] + [backwards(h) for h in states[1:]], -1)
        real = _time_major_mask(lengths, steps)[:, :, None]
        if self.pooling == "max":
            pooled = [tf.reduce_max(tf.where(real, h, -np.inf), 0) for h in states]
        elif self.pooling == "mean":
            pooled = [tf.reduce_sum(tf.where(real, h, 0.0), 0) for h in states]
        else:
            last = tf.stack([lengths - 1, tf.range(tf.shape(ids)[0])], 1)
            pooled = [tf.gather_nd(h, last) for h in states]
        return self._classify(tf.concat(pooled, 1), lengths)

    def _packed(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        order = tf.argsort(lengths, direction="DESCENDING", stable=True)
        lengths = tf.gather(lengths, order)
        steps = lengths[0]
        real = _time_major_mask(lengths, steps)
        sizes = tf.reduce_sum(tf.cast(real, tf.int32), 1)  # rows still going at each step
        # Packed position of step (t, row), and of its mirror (length - 1 - t, row).
        position = tf.reshape(
            tf.cumsum(tf.reshape(tf.cast(real, tf.int32), [-1]), exclusive=True), tf.shape(real)
        )
        mirror = tf.boolean_mask(tf.reverse_sequence(position, lengths, 0, 1), real)
        ids = tf.transpose(tf.gather(ids, order)[:, :steps])
        x = tf.gather(self.embeddings, tf.boolean_mask(ids, real))  # [packed steps, dim]
        for i, (forward, backward) in enumerate(self.lstms):
            pool = self.pooling if i == len(self.lstms) - 1 else None
            states = [_packed_lstm(x, sizes, *forward, pool)]
            if backward:
                h = _packed_lstm(tf.gather(x, mirror), sizes, *backward, pool)
                states.append(h if pool else tf.gather(h, mirror))
            x = tf.concat(states, -1)
        probabilities = self._classify(x, lengths)
        return tf.scatter_nd(order[:, None], probabilities, tf.shape(probabilities))

    def _classify(self, pooled: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        if self.pooling == "mean":
            pooled /= tf.cast(lengths, pooled.dtype)[:, None]
        kernel, bias = self.dense
        return tf.nn.softmax(tf.matmul(pooled, kernel) + bias)

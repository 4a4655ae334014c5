"""The served network: the trained LSTM stack in TensorFlow's stock CPU kernels.

TF Serving runs the exported graph with TensorFlow's stock kernels, no XLA. Keras' generic
LSTM runs a dozen executor ops per step and projects the input at every step;
`ServingNetwork` computes the same function the way a server should (benchmarks/README.md,
"Serving"):
- a few rows: TensorFlow's fused CPU kernel BlockLSTMV2 runs the whole sequence in one op;
- more rows: the rows are sorted by length and packed, as PyTorch's PackedSequence: step t
  runs only the rows still going, so no step is spent on padding, and each step is one
  matmul per gate (fused with its input projection while the step is wide) plus the cell
  arithmetic. The last layer pools as it goes, storing no states.
The backward direction reads each row reversed within its own length, so padding never
reaches a real step, and the two directions are independent ops the executor runs at once.
Every path is a schedule around `lstm_math`, which holds the equations and the pooling.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from keras_sentiment.network import lstm_math
from keras_sentiment.network.model import MaskedGlobalMaxPooling1D

SMALL_BATCH = 4  # rows up to which BlockLSTMV2 beats the packed loop (benchmarks/README.md)
FUSED_ROWS = 64  # rows from which a packed step's fused gates win (benchmarks/README.md)


def _lstm_weights(cell) -> tuple[np.ndarray, np.ndarray]:
    # BlockLSTMV2 wants [kernel; recurrent_kernel] and uses Keras' gate order (i, f, c, o).
    if not lstm_math.has_standard_activations(cell):
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


UNROLL = 8  # steps per iteration of the gradient's loop: fewer loop ops a step


def _differentiable_lstm(x: tf.Tensor, w: np.ndarray, b: np.ndarray) -> tf.Tensor:
    """`_block_lstm` from zero states, with a correct and fast gradient with respect to `x`.

    TensorFlow registers BlockLSTMV2's gradient as BlockLSTM's (tensorflow/python/ops/
    rnn_grad.py), which calls BlockLSTMGrad, the kernel for the V1 op's gate order (i, c, f,
    o): tape gradients through BlockLSTMV2 come out wrong (tests/test_lstm_parity.py shows
    it). BlockLSTMGradV2, the V2 op's own kernel, is right but slow even for one row
    (benchmarks/README.md, "Tried and did not help"). Here BlockLSTMV2 runs forward (on x
    padded to a multiple of UNROLL steps at its end, which no real step reads) and the
    gradient runs back through time (`_back_through_time`), then projects every step's gate
    gradients onto `x` in one matmul. The executor's cost per op, not arithmetic, bounds this
    loop, hence UNROLL steps an iteration.
    """
    units = b.shape[0] // 4
    dim = w.shape[0] - units
    input_kernel, recurrent_kernel = tf.constant(w[:dim].T), tf.constant(w[dim:].T)
    no_peephole = tf.zeros([units])

    def zeros(rows):
        return tf.zeros([rows, units])

    @tf.custom_gradient
    def run(x):
        steps, rows = tf.shape(x)[0], tf.shape(x)[1]
        blocks = (steps + UNROLL - 1) // UNROLL
        padded = tf.pad(x, [[0, blocks * UNROLL - steps], [0, 0], [0, 0]])
        out = tf.raw_ops.BlockLSTMV2(
            seq_len_max=tf.cast(blocks * UNROLL, tf.int64), x=padded, cs_prev=zeros(rows),
            h_prev=zeros(rows), w=w, wci=no_peephole, wcf=no_peephole, wco=no_peephole, b=b,
        )  # fmt: skip

        def grad(dh_out):
            dz_all = _back_through_time(out, dh_out, recurrent_kernel, blocks)[:steps]
            dx = tf.matmul(tf.reshape(dz_all, [-1, 4 * units]), input_kernel)
            return tf.reshape(dx, tf.shape(x))

        return out.h[:steps], grad

    return run(x)


def _back_through_time(out, dh_out: tf.Tensor, recurrent_kernel: tf.Tensor, blocks):
    """The gate gradients [blocks * UNROLL, rows, 4 units] of a BlockLSTMV2 run from zero
    states (its outputs `out`, on steps padded to `blocks` of UNROLL), given the gradients of
    its hidden states `dh_out` (unpadded): `lstm_math.backward_step`, step by step."""
    zeros = tf.zeros_like(out.cs[0])
    c_before = tf.concat([zeros[None], out.cs[:-1]], 0)
    # All that does not depend on the recurrence, for every step at once, in blocks of UNROLL.
    gates = (out.i, out.f, out.ci, out.o)
    slopes, dh_to_dc = lstm_math.gate_slopes(gates, c_before, out.cs, tanh_c=out.co)
    dh_out = tf.pad(dh_out, [[0, tf.shape(out.cs)[0] - tf.shape(dh_out)[0]], [0, 0], [0, 0]])
    terms = [slopes, dh_to_dc, out.f, dh_out]
    terms = [tf.reshape(t, tf.concat([[blocks, UNROLL], tf.shape(t)[1:]], 0)) for t in terms]

    def back(n, dh, dc, dz_all):
        dz_block = [None] * UNROLL
        unstacked = zip(*(tf.unstack(t[n], UNROLL) for t in terms))
        for k, (step_slopes, step_dh_to_dc, forget, d_out) in reversed(list(enumerate(unstacked))):
            dh += d_out
            dz_block[k], dc = lstm_math.backward_step(step_slopes, step_dh_to_dc, forget, dh, dc)
            dh = tf.matmul(dz_block[k], recurrent_kernel)
        return n - 1, dh, dc, dz_all.write(n, tf.stack(dz_block))

    units = out.cs.shape[-1]
    dz_all = tf.TensorArray(out.cs.dtype, blocks, element_shape=[UNROLL, None, 4 * units])
    state = (blocks - 1, zeros, zeros, dz_all)
    return tf.while_loop(lambda n, *_: n >= 0, back, state)[-1].concat()


def _time_major_mask(lengths: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """[time, batch]: True where step t is a real token of the row."""
    # Built time-major, not transposed: oneDNN has no bool transpose (and logs an error).
    return tf.range(steps)[:, None] < lengths[None, :]


# Three ways to compute a step, each the faster where it runs (benchmarks/README.md);
# since rows only drop out, each covers a run of consecutive steps:
# - wide steps (FUSED_ROWS rows or more): per gate, [x_t, h] @ [kernel; recurrent] + bias
#   and the activation are one oneDNN op (grappler's remapper fuses MatMul, BiasAdd and
#   Sigmoid or Tanh);
# - narrow steps, where a fused op's extra cost a call would dominate: the input
#   projection of all of them is one matmul up front, and a step adds its slice to h @ U;
# - the tail, SMALL_BATCH rows or fewer: one BlockLSTMV2 from the loop's state, faster a
#   step than the loop at so few rows (benchmarks/README.md, "a tail of 8 or 16 rows").
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
        h, c = lstm_math.step(lstm_math.activate(*z), c[:rows])
        if pool is None:
            return t + 1, start + rows, h, c, pooled, outputs.write(t, h)
        outputs = outputs.write(tail + 1 - t, pooled[rows:])  # rows whose last step was t - 1
        pooled = lstm_math.pool_step(pool, pooled[:rows], h)
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

    units = b.shape[0] // 4
    zeros = tf.zeros([sizes[0], units], x.dtype)
    first = zeros if pool is None else lstm_math.pool_start(pool, sizes[0], units, x.dtype)
    state = (0, 0, zeros, zeros, first, outputs)
    state = tf.while_loop(lambda t, *_: t < wide, wide_step, state, parallel_iterations=1)
    state = tf.while_loop(lambda t, *_: t < tail, narrow_step, state, parallel_iterations=1)
    return _packed_tail(x, sizes, starts, tail, w, b, pool, *state[2:])


def _packed_tail(x, sizes, starts, tail, w, b, pool, h, c, pooled, outputs) -> tf.Tensor:
    """The packed loop's last steps, SMALL_BATCH rows or fewer, as one BlockLSTMV2."""
    # Its rows' steps gathered time-major ([steps, rows], padded at each row's end, where
    # BlockLSTMV2's extra steps come after every real one and are masked out).
    rows = tf.concat([sizes, [0]], 0)[tail]
    real = tf.range(rows)[None, :] < sizes[tail:, None]
    at = tf.where(real, starts[tail:, None] + tf.range(rows)[None, :], 0)
    states = _block_lstm(tf.gather(x, at), w, b, h[:rows], c[:rows])
    if pool is None:
        return outputs.write(tail, tf.boolean_mask(states, real)).concat()
    outputs = outputs.write(1, pooled[rows:])  # rows whose last step was the tail's start - 1
    pooled = lstm_math.pool_step(pool, pooled[:rows], lstm_math.pool_steps(pool, states, real))
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

    # In every path the last layer pools each direction's states in the order the direction
    # computed them (`lstm_math`'s pooling says why that is right).

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
        pooled = tf.concat([lstm_math.pool_steps(self.pooling, h) for h in states], 1)
        pooled = lstm_math.pool_finish(self.pooling, pooled, steps)[0]  # [features]
        kernel, bias = self.dense
        # Multiplied and summed rather than a matmul: oneDNN's call for a [1, 256] by [256, 2]
        # product costs more than the product (benchmarks/README.md, "Serving").
        return tf.nn.softmax(tf.reduce_sum(pooled[:, None] * kernel, 0) + bias)[None]

    def _padded(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        steps = tf.maximum(tf.reduce_max(lengths), 1)
        x = tf.gather(self.embeddings, tf.transpose(ids[:, :steps]))  # [time, batch, dim]
        return tf.nn.softmax(self.padded_logits(x, lengths))

    def padded_logits(
        self, x: tf.Tensor, lengths: tf.Tensor, differentiable: bool = False
    ) -> tf.Tensor:
        """Embedded rows, time-major [time, batch, dim], row b real for its first lengths[b]
        steps -> logits [batch, classes] (before the softmax).

        All steps in BlockLSTMV2; `differentiable`: with `_differentiable_lstm`'s gradient with
        respect to `x`, which `serving/explanation.py` takes.
        """
        block_lstm = _differentiable_lstm if differentiable else _block_lstm

        def backwards(seq: tf.Tensor) -> tf.Tensor:
            return tf.reverse_sequence(seq, lengths, seq_axis=0, batch_axis=1)

        for i, (forward, backward) in enumerate(self.lstms):
            states = [block_lstm(x, *forward)]
            if backward:
                states.append(block_lstm(backwards(x), *backward))
            if i < len(self.lstms) - 1:  # the next layer reads both directions in time order
                x = tf.concat(states[:1] + [backwards(h) for h in states[1:]], -1)
        real = _time_major_mask(lengths, tf.shape(x)[0])
        pooled = [lstm_math.pool_steps(self.pooling, h, real) for h in states]
        return self._logits(tf.concat(pooled, 1), lengths)

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
        return tf.nn.softmax(self._logits(pooled, lengths))

    def _logits(self, pooled: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        kernel, bias = self.dense
        return tf.matmul(lstm_math.pool_finish(self.pooling, pooled, lengths), kernel) + bias

"""The LSTM's math, once: its gates, its step, its backward step, and the pooling of its states.

Every kernel of the package is a schedule around these functions; none writes an equation of
its own:
- training (`compiled_lstm.CompiledLSTM`): `step` and `backward_step` in XLA-compiled loops;
- serving (`serving_network.ServingNetwork`): `step` in a packed loop over the rows still
  going, and TensorFlow's fused CPU kernel BlockLSTMV2, which computes these same equations in
  Keras' gate order, where rows are few;
- explanations (`serving_network._differentiable_lstm`): `backward_step` over the gates that
  BlockLSTMV2 kept;
- every path pools its last layer's states with the `pool_*` family, the Keras model's
  `MaskedGlobalMaxPooling1D` included.
`tests/test_lstm_parity.py` compares each kernel with Keras' own LSTM, forward and gradient.

The equations, gate order (i, f, g, o) as Keras stores its weights, z = x W + h U + b:

    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o)      g = tanh(z_g)
    c' = f * c + i * g                                       h' = o * tanh(c')

and backwards, given the gradients dh' and dc' that reach h' and c':

    dc    = dc' + dh' * o * (1 - tanh(c')^2)
    dz    = [dc g i (1 - i),  dc c f (1 - f),  dc i (1 - g^2),  dh' tanh(c') o (1 - o)]
    dc_in = dc * f                                           dh_in = dz U^T

Example:
    >>> z = tf.zeros([1, 8])  # one row, two units: every gate's input 0
    >>> h, c = step(activate(*split_gates(z)), tf.ones([1, 2]))
    >>> [round(float(v), 4) for v in (c[0, 0], h[0, 0])]
    [0.5, 0.2311]
"""

from __future__ import annotations

import tensorflow as tf
from keras import activations

# Below any hidden state (|h| < 1), yet finite: a row without a real step pools to a finite
# value rather than infinities that would turn the dense layer's answer into NaN.
NO_STEP = -1e9


def has_standard_activations(cell) -> bool:
    """Whether a Keras LSTM cell computes these equations: tanh and sigmoid activations."""
    return cell.activation is activations.tanh and cell.recurrent_activation is activations.sigmoid


# --- the gates -----------------------------------------------------------------------------


def split_gates(z: tf.Tensor) -> list[tf.Tensor]:
    """The four gate inputs (i, f, g, o) of z [..., 4 * units]."""
    return tf.split(z, 4, axis=-1)


def activate(z_i: tf.Tensor, z_f: tf.Tensor, z_g: tf.Tensor, z_o: tf.Tensor) -> tuple:
    """The gates (i, f, g, o) from their inputs: sigmoid, sigmoid, tanh, sigmoid."""
    return tf.sigmoid(z_i), tf.sigmoid(z_f), tf.tanh(z_g), tf.sigmoid(z_o)


def one_sigmoid_scale(units: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """[4 * units]: 2 on g's columns, 1 elsewhere, to scale W, U and b by for `one_sigmoid_gates`.

    tanh(z) = 2 * sigmoid(2 z) - 1, so with g's inputs doubled one sigmoid over all four gate
    inputs computes every gate: one elementwise pass in place of four.
    """
    one = tf.ones([units], dtype)
    return tf.concat([one, one, 2 * one, one], 0)


def one_sigmoid(z: tf.Tensor) -> tf.Tensor:
    """s [..., 4 * units]: all four gates' sigmoids at once, of gate inputs z scaled by
    `one_sigmoid_scale`; `one_sigmoid_gates` reads the gates from s."""
    return tf.sigmoid(z)


def one_sigmoid_gates(s: tf.Tensor) -> tuple:
    """The gates (i, f, g, o) from s = one_sigmoid(z * one_sigmoid_scale) [..., 4 * units]."""
    i, f, g, o = split_gates(s)
    return i, f, 2.0 * g - 1.0, o


# --- the step and its backward step ----------------------------------------------------------


def step(gates: tuple, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One step of the cell: the gates (i, f, g, o) and the cell state c -> (h', c')."""
    i, f, g, o = gates
    c = f * c + i * g
    return o * tf.tanh(c), c


def gate_slopes(
    gates: tuple, c: tf.Tensor, c_new: tf.Tensor, tanh_c: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """What a step's backward pass needs of its forward pass, for any number of steps at once.

    Args:
        gates: the step's gates (i, f, g, o).
        c: the cell state the step started from.
        c_new: the cell state it made, c'.
        tanh_c: tanh(c'), where the forward pass kept it.

    Returns:
        `slopes` [..., 4 * units], each gate's derivative times what multiplies it (dz is
        [dc, dc, dc, dh'] * slopes), and `dh_to_dc`, o * (1 - tanh(c')^2), how dh' reaches c'.
    """
    i, f, g, o = gates
    tanh_c = tf.tanh(c_new) if tanh_c is None else tanh_c
    slopes = [g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)]
    return tf.concat(slopes, -1), o * (1 - tanh_c * tanh_c)


def backward_step(
    slopes: tf.Tensor, dh_to_dc: tf.Tensor, forget: tf.Tensor, dh: tf.Tensor, dc: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """One step back through time: the gradients dh' and dc' of (h', c') -> (dz, dc_in).

    `slopes` and `dh_to_dc` are the step's `gate_slopes`, `forget` its f. dz [..., 4 * units]
    is the gradient of the gate inputs z, from which the schedule computes dh_in = dz U^T and
    the weights' gradients; dc_in is the gradient of the cell state the step started from.
    """
    dc = dc + dh * dh_to_dc
    return tf.concat([dc, dc, dc, dh], -1) * slopes, dc * forget


# --- pooling over real steps -------------------------------------------------------------------
# Max and mean do not care about the order of the steps, and "last" is each direction's final
# state (a backward direction's, having read the row backwards), so each direction pools its
# states in the order it computed them. Mean pools as a sum; `pool_finish` divides it.


def pool_start(how: str, rows: tf.Tensor, units: int, dtype: tf.DType) -> tf.Tensor:
    """The running pool [rows, units] before any step: below every state for max, else 0."""
    return tf.fill([rows, units], tf.constant(NO_STEP if how == "max" else 0.0, dtype))


def pool_step(how: str, pooled: tf.Tensor, h: tf.Tensor) -> tf.Tensor:
    """The running pool after one more step (or pooled steps) `h` of the same rows."""
    if how == "max":
        return tf.maximum(pooled, h)
    return pooled + h if how == "mean" else h


def pool_steps(how: str, states: tf.Tensor, real: tf.Tensor | None = None, axis: int = 0):
    """Pool states [time, rows, units] (`axis` 0) or [rows, time, units] (`axis` 1) over the
    real steps: `real` [time, rows] or [rows, time], True on a real step, each row's real steps
    first (right padding); None: every step is real. Mean gives the sum (see `pool_finish`)."""
    if real is None:
        if how == "last":
            return states[-1] if axis == 0 else states[:, -1]
        return (tf.reduce_max if how == "max" else tf.reduce_sum)(states, axis)
    if how == "max":
        return tf.reduce_max(tf.where(real[..., None], states, NO_STEP), axis)
    if how == "mean":
        return tf.reduce_sum(tf.where(real[..., None], states, 0.0), axis)
    last = tf.reduce_sum(tf.cast(real, tf.int32), axis) - 1
    rows = tf.range(tf.shape(last)[0])
    return tf.gather_nd(states, tf.stack([last, rows] if axis == 0 else [rows, last], 1))


def pool_finish(how: str, pooled: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """The pooled features [rows, units] from the pool: mean's sum over each row's length."""
    if how != "mean":
        return pooled
    return pooled / tf.reshape(tf.cast(lengths, pooled.dtype), [-1, 1])

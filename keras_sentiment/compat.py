"""Every use of a private Keras or TensorFlow API, in one place, each with why and where upstream
tracks it.

A new Keras or TensorFlow release is checked here first. Each use names the test that fails
when it changes. Deprecations show before removals: the tests turn a DeprecationWarning raised
from this package's or Keras' own modules into an error (pyproject.toml).

Private, and why:

- `LSTMWithOwnLoop`: `keras.layers.LSTM.inner_loop`, the method Keras' own LSTM overrides to
  hand its time loop to cuDNN. It is the one place where a subclass can run the loop its own
  way and keep everything else of the layer (masking, Bidirectional, states, config, weights).
  Keras has no public hook for an RNN layer's loop; none filed upstream. Tests:
  tests/test_lstm_parity.py, tests/test_compiled_lstm.py.
- `use_train_step`: Keras documents overriding `train_step` in a `keras.Model` subclass; the
  package's network is a plain `keras.Sequential`, saved into `.keras` files as such, so the
  step is set on the instance, which `Model.make_train_function` reads the same way. Tests:
  tests/test_training.py (adversarial), tests/test_distribute.py.
- `build_for_multi_worker`: keras-team/keras#20585 (MultiWorkerMirroredStrategy with Keras 3;
  also tensorflow/tensorflow#72388). `fit` builds the model from a batch reduced across
  workers, which fails for an (x, y) batch: the model is built from one local batch with
  `Trainer._symbolic_build`, and `TensorFlowTrainer._maybe_symbolic_build` is made a no-op.
  `fit` then averages each step's logs across workers along an axis 0 that scalars lack: the
  steps give them one. Test: tests/test_distribute.py (slow).
- `NO_INLINE`: TensorFlow's function attribute `_noinline` (`kNoInlineAttr` in
  tensorflow/core/common_runtime), passed through the public
  `tf.function(experimental_attributes=...)`: the serving graph keeps the batch path a
  function call, so a single review skips its ops. Documented only in TensorFlow's source;
  none filed upstream. Test: tests/test_serving_network.py.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

# --- Keras ----------------------------------------------------------------------------------


class LSTMWithOwnLoop(keras.layers.LSTM):
    """`keras.layers.LSTM` whose time loop a subclass may replace (see the module's docstring).

    Subclasses implement `own_loop(sequences, initial_state, mask, training)`: Keras' masked,
    batch-major input and initial `[h, c]`; it returns `(last_output, outputs, [h, c])` as
    Keras' loop does, or None to run Keras' own.
    """

    def own_loop(self, sequences, initial_state, mask, training: bool):
        return None

    def inner_loop(self, sequences, initial_state, mask, training=False):
        found = self.own_loop(sequences, initial_state, mask, training)
        if found is None:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        return found


def use_train_step(model: keras.Model, step: Callable) -> None:
    """Train `model` with `step(data) -> logs` instead of its own `train_step` (see the
    module's docstring)."""
    model.train_step = step


def build_for_multi_worker(model: keras.Model, batch) -> None:
    """Make `model.fit` work under MultiWorkerMirroredStrategy (keras-team/keras#20585): build
    the model from one local `(x, y)` batch, and give each step's scalar logs the axis `fit`
    reduces across workers (the mean of equal global values is the value itself)."""
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    model.train_step = _logs_with_axis(model.train_step)
    model.test_step = _logs_with_axis(model.test_step)


def _logs_with_axis(step: Callable) -> Callable:
    def step_with_axis(data):
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    return step_with_axis


# --- TensorFlow -----------------------------------------------------------------------------

# `tf.function(experimental_attributes=NO_INLINE)`: the function stays a call in the graph.
NO_INLINE = {"_noinline": True}

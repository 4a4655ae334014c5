"""Training: the strategy, the precision, Adam with clipping, adversarial steps, and `fit`.

`train` builds and compiles the model under a `tf.distribute` strategy and runs Keras' `fit`
over length-bucketed batches (`data/batching.py`), with `RunState` (`training/runs.py`) doing early
stopping, learning-rate decay and the backups that make a run resumable.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.compat import build_for_multi_worker, use_train_step
from keras_sentiment.config import Config, UserError, spelled
from keras_sentiment.data.batching import eval_dataset, train_dataset
from keras_sentiment.network.compiled_lstm import gradient_dtype
from keras_sentiment.training.runs import RunState


def make_strategy(name: str) -> tf.distribute.Strategy:
    """TensorFlow's own distribution: one device, mirrored devices, or workers from TF_CONFIG."""
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            said = spelled("strategy", "multi-worker")
            raise UserError(f"{said} needs the TF_CONFIG environment variable")
        # Created before any other TensorFlow op, as TensorFlow requires.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(
            gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
        )
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy(gpus)
    return tf.distribute.get_strategy()


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name of a strategy, as `tf.distribute` exports it (the default one's class is
    private: "default strategy (one device)")."""
    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return "default strategy (one device)"
    return type(strategy).__name__


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, reports and exports (worker 0 or the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_id == 0)


def set_precision(cfg: Config) -> str:
    """mixed_float16 on a GPU when asked; float32 otherwise (CPUs gain nothing from float16).

    Returns the policy, and says where the LSTMs' weight gradients run in bfloat16.
    """
    gpu = bool(tf.config.list_logical_devices("GPU"))
    policy = "mixed_float16" if cfg.mixed_precision and gpu else "float32"
    if cfg.mixed_precision and policy == "float32":
        print("mixed precision needs a GPU: training in float32", flush=True)
    keras.mixed_precision.set_global_policy(policy)
    if gpu:  # GPUs train with cuDNN, in the policy's dtype
        return policy
    if gradient_dtype(cfg.precision) == "bfloat16":
        return f"{policy}, LSTM weight gradients in bfloat16"
    if cfg.precision == "bfloat16":
        print("bfloat16 needs a CPU with AVX512_BF16 or AMX: training in float32", flush=True)
    return policy


def compile_model(model: keras.Model, cfg: Config, steps_per_epoch: int | None = None) -> None:
    """Adam with gradient-norm clipping on sparse categorical cross-entropy."""
    averaging = {}
    if cfg.weight_average:
        # Keras' own moving average, swapped in at each epoch's last step: validation, the
        # best epoch, early stopping and the export all see the averaged weights. Without
        # steps_per_epoch it is swapped in once, when fit() ends.
        averaging = dict(
            use_ema=True,
            ema_momentum=cfg.weight_average,
            ema_overwrite_frequency=steps_per_epoch,
        )
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm, **averaging),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def adversarial_losses(model: keras.Model, x: tf.Tensor, y: tf.Tensor, epsilon: float) -> tuple:
    """(loss, pushed loss, summed gradients of trainable_weights, predictions) of a batch.

    Adversarial training on word embeddings (Miyato et al. 2017): the gradient of the loss
    with respect to a text's embeddings, scaled to L2 norm `epsilon` over the whole text, is
    the small change that hurts the model most. The pushed loss is the batch's with that
    change made; fitting both losses makes the model robust to it.
    """
    # build_model's order: the embedding first, then the layers that read its vectors.
    embedding, head, mask = model.layers[0], model.layers[1:], x != 0

    def classify(vectors):
        # The model after its embedding layer; the mask is passed by hand because adding
        # the perturbation makes a new tensor, which carries no Keras mask.
        for layer in head:
            takes_mask = "mask" in inspect.signature(layer.call).parameters
            mask_kw = {"mask": mask} if takes_mask and len(vectors.shape) == 3 else {}
            vectors = layer(vectors, training=True, **mask_kw)
        return vectors

    def loss_of(y_pred):
        loss = model.compute_loss(x, y, y_pred, training=True)
        return loss, model.optimizer.scale_loss(loss)

    variables = model.trainable_weights
    with tf.GradientTape() as tape:
        vectors = embedding(x)
        y_pred = classify(vectors)
        loss, scaled = loss_of(y_pred)
    *gradients, direction = tape.gradient(scaled, [*variables, vectors])
    # Per text: padded steps get no gradient, so the norm is over its real tokens.
    direction = tf.math.l2_normalize(tf.stop_gradient(direction), axis=[1, 2])
    with tf.GradientTape() as tape:
        pushed_loss, scaled = loss_of(classify(embedding(x) + epsilon * direction))
    pushed_gradients = tape.gradient(scaled, variables)
    gradients = [_add(a, b) for a, b in zip(gradients, pushed_gradients)]
    return loss, pushed_loss, gradients, y_pred


def adversarial_step(model: keras.Model, epsilon: float) -> Callable:
    """Keras' TensorFlow train step, fitting each batch also with its worst-case embeddings.

    One extra forward and backward pass per batch; the logged loss and metrics are the
    clean batch's, as without adversarial training.
    """

    def step(data):
        x, y = data
        loss, _, gradients, y_pred = adversarial_losses(model, x, y, epsilon)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # undo Keras' 1/replicas
        # Keras' loss tracker, as its guide to custom steps finds it: the metric named "loss".
        tracker = next(m for m in model.metrics if m.name == "loss")
        tracker.update_state(loss * replicas, sample_weight=tf.shape(x)[0])
        return model.compute_metrics(x, y, y_pred)

    return step


def _add(a, b):
    if isinstance(a, tf.IndexedSlices):  # embedding rows: list both batches' rows
        return tf.IndexedSlices(
            tf.concat([a.values, b.values], 0), tf.concat([a.indices, b.indices], 0), a.dense_shape
        )
    return a + b


@dataclass
class Trained:
    """What training hands on: the model with its best epoch's weights, and the epochs' logs."""

    model: keras.Model  # a plain single-device model, even after a distributed fit
    history: list[dict[str, float]]
    best_epoch: int | None
    precision: str  # as the strategy line says it: "float32, LSTM weight gradients in bfloat16"


def train(
    cfg: Config,
    strategy: tf.distribute.Strategy,
    build: Callable[[], keras.Model],
    train: tuple[list[np.ndarray], np.ndarray],
    val: tuple[list[np.ndarray], np.ndarray],
    run_dir: Path,
    as_text: Callable[[keras.Model], keras.Model] | None = None,
) -> Trained:
    """Build and compile under the strategy, then fit with early stopping on `cfg.monitor`.

    Sets the precision policy first, prints the model and the strategy, and resumes where
    `run_dir`'s backup says an interrupted fit stopped. `as_text` wraps the network into
    the raw-text model that `run_dir/best.keras` holds (see `RunState`).
    """
    precision = set_precision(cfg)
    with strategy.scope():
        model = build()
        compile_model(model, cfg, math.ceil(len(train[1]) / cfg.batch_size))
        if cfg.adversarial:
            use_train_step(model, adversarial_step(model, cfg.adversarial))
    model.summary(print_fn=lambda line, **_: print(line, flush=True))
    print(
        f"strategy: {strategy_name(strategy)} with {strategy.num_replicas_in_sync} replica(s), "
        f"global batch {cfg.batch_size}, {precision}",
        flush=True,
    )
    state = _fit(model, cfg, train, val, run_dir, as_text)
    if strategy.num_replicas_in_sync > 1:
        # Report and export from a plain copy: no distributed variables in the served graph.
        plain = build()
        plain.set_weights(model.get_weights())
        model = plain
    return Trained(model, state["history"], state["best_epoch"], precision)


def _fit(model, cfg: Config, train, val, run_dir: Path, as_text=None) -> dict:
    steps = math.ceil(len(train[1]) / cfg.batch_size)
    state = RunState(run_dir, cfg, steps, as_text)
    state.restore(model)
    epoch, step = state.position
    if state.state["finished"]:
        print(f"training finished before (epoch {epoch}): reporting and exporting", flush=True)
    elif step:
        print(f"resuming epoch {epoch + 1} after its step {step} of {steps}", flush=True)
    elif epoch:
        print(f"resuming after epoch {epoch}", flush=True)
    callbacks = [state, keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False)]
    val_ds, _ = eval_dataset(*val, cfg.batch_size)
    _prepare_distributed(model, lambda: train_dataset(*train, cfg))
    while not state.done and not state.state["finished"]:
        epoch, step = state.position
        # A backup inside an epoch resumes at that step: the stream is replayed to it, and
        # this call runs only the rest of the epoch.
        state.step_offset = step
        model.fit(
            train_dataset(*train, cfg, skip=epoch * steps + step),
            steps_per_epoch=steps - step,
            initial_epoch=epoch,
            epochs=epoch + 1 if step else cfg.epochs,
            validation_data=val_ds,
            shuffle=False,  # the dataset shuffles itself
            callbacks=callbacks,
            verbose=1 if _interactive() else 2,
        )
    state.finish(model)
    return state.state


def _prepare_distributed(model: keras.Model, train_ds: Callable[[], tf.data.Dataset]) -> None:
    # Keras 3's fit needs help under MultiWorkerMirroredStrategy (keras-team/keras#20585).
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        build_for_multi_worker(model, next(iter(train_ds())))


def _interactive() -> bool:
    return sys.stdout.isatty()

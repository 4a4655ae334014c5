"""Stage 7, training: length-bucketed tf.data batches, Adam with clipping, early stopping."""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .batching import eval_dataset, train_dataset
from .config import Config, UserError, kill_point, save_json, versions, write_atomic
from .model import gradient_dtype


def make_strategy(name: str) -> tf.distribute.Strategy:
    """TensorFlow's own distribution: one device, mirrored devices, or workers from TF_CONFIG."""
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multi-worker needs the TF_CONFIG environment variable")
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
    """The public name of a strategy (the default one's class is private)."""
    name = type(strategy).__name__
    return "default strategy (one device)" if name == "_DefaultDistributionStrategy" else name


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, reports and exports (worker 0 or the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_id == 0)


def open_run(cfg: Config) -> tuple[Path, bool]:
    """The run's folder `runs/NAME/VERSION/` and whether it resumes an interrupted run.

    An unfinished run with this exact config is resumed; otherwise a new folder takes the
    next version that neither runs/NAME nor saved_models/NAME holds, so the run and the
    SavedModel it exports share a number. Nothing of another run is ever touched.
    """
    base = Path(cfg.runs_dir) / cfg.name
    for version in reversed(versions(base)):
        run_dir = base / str(version)
        if not (run_dir / "summary.json").is_file() and _config_of(run_dir) == cfg.to_dict():
            return run_dir, True
    taken = versions(base) + versions(Path(cfg.output_dir) / cfg.name)
    version = max(taken, default=0) + 1
    while True:  # mkdir is the reservation: two fits started at once get two numbers
        try:
            (base / str(version)).mkdir(parents=True)
            return base / str(version), False
        except FileExistsError:
            version += 1


def _config_of(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None


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


def read_history(path: Path) -> list[dict[str, float]]:
    """The epochs a run logged, from its history.csv (epochs count from 1)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


class RunState(keras.callbacks.Callback):
    """Early stopping, learning-rate decay, best model and backups, all surviving SIGKILL.

    Keras' BackupAndRestore, EarlyStopping, ReduceLROnPlateau and ModelCheckpoint keep their
    state in memory and write their files in place: a kill loses the state or leaves a cut
    file that breaks the resume. Here every file is written whole and renamed, and one JSON
    file, written last, names the files that belong together. The backup holds every model
    variable (dropout seeds included) and the optimizer's, so a resumed run continues with
    exactly the numbers an uninterrupted one would have.
    """

    def __init__(self, run_dir: Path, cfg: Config, steps_per_epoch: int):
        super().__init__()
        self.run_dir, self.cfg, self.steps = run_dir, cfg, steps_per_epoch
        self.dir = run_dir / "checkpoint"
        path = self.dir / "state.json"
        self.state = (
            json.loads(path.read_text())
            if path.is_file()
            else {
                "epoch": 0,  # epochs finished
                "step": 0,  # steps finished in the next epoch
                "history": [],
                "best": None,
                "best_epoch": None,
                "wait": 0,
                "stopped": False,
                "finished": False,
                "weights": None,
                "best_weights": None,
            }
        )
        self.step_offset = 0

    # -- what _fit() asks --------------------------------------------------------------
    @property
    def position(self) -> tuple[int, int]:
        """(epochs finished, steps finished in the next epoch)."""
        return self.state["epoch"], self.state["step"]

    @property
    def done(self) -> bool:
        """Training is over: every epoch run, or early stopping said stop."""
        return self.state["stopped"] or self.state["epoch"] >= self.cfg.epochs

    def restore(self, model: keras.Model) -> None:
        """Put the backed-up variables (weights, seeds, optimizer) back into the model."""
        if self.state["weights"]:
            _assign(_variables(model), self._load(self.state["weights"]))

    def finish(self, model: keras.Model) -> None:
        """End of training: the best epoch's weights in the model, and the state says so."""
        if self.state["best_weights"]:
            _assign(model.weights, self._load(self.state["best_weights"]))
        self.state["finished"] = True
        self._commit()
        kill_point("trained")

    # -- Keras hooks ---------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = self.step_offset + batch + 1
        every = self.cfg.checkpoint_steps
        if every and step % every == 0 and step < self.steps:
            self.state["step"] = step
            self._backup()

    def on_epoch_end(self, epoch, logs=None):
        state, monitor = self.state, self.cfg.monitor
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row.update(learning_rate=lr, seconds=round(time.perf_counter() - self._started, 2))
        state["history"].append(row)
        score, best, best_file = row[monitor], state["best"], None
        if best is None or (score < best if monitor.endswith("loss") else score > best):
            state.update(best=score, best_epoch=epoch + 1, wait=0)
            best_file = f"best-e{epoch + 1}.npz"
            self._save(best_file, self.model.weights)
        else:
            state["wait"] += 1
            if self.cfg.lr_decay < 1:  # smaller steps once the validation score stalls
                lower = max(lr * self.cfg.lr_decay, self.cfg.learning_rate / 16)
                self.model.optimizer.learning_rate.assign(lower)
                print(f"epoch {epoch + 1}: learning rate {lr:.2e} -> {lower:.2e}", flush=True)
            if state["wait"] >= self.cfg.patience:
                state["stopped"] = True
                self.model.stop_training = True
                print(f"epoch {epoch + 1}: early stopping, best epoch {state['best_epoch']}")
        state.update(epoch=epoch + 1, step=0)
        self.step_offset = 0
        self._backup(best_file)

    # -- files ---------------------------------------------------------------------------
    def _backup(self, best_file: str | None = None) -> None:
        name = f"e{self.state['epoch']}-s{self.state['step']}.npz"
        self._save(name, _variables(self.model))
        kill_point("backup-written")
        self.state["weights"] = name
        if best_file:
            self.state["best_weights"] = best_file
        self._commit()
        if best_file:  # the user's copy of the best model, for Ctrl-C and inspection
            save_keras(self.model, self.run_dir / "best.keras")
        kill_point("step-backup" if self.state["step"] else "epoch-end")

    def _commit(self) -> None:
        # The state names its files, so it is written after them and before old ones go.
        save_json(self.dir / "state.json", self.state)
        keep = {"state.json", self.state["weights"], self.state["best_weights"]}
        for path in self.dir.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)
        write_history(self.run_dir / "history.csv", self.state["history"])

    def _save(self, name: str, variables: list) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, *[keras.ops.convert_to_numpy(v) for v in variables])
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.dir / name)

    def _load(self, name: str) -> list[np.ndarray]:
        with np.load(self.dir / name) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, for the benchmarks' throughput numbers."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _variables(model: keras.Model) -> list:
    # Built before the first step, so a resumed run can restore into them.
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return list(model.variables) + list(model.optimizer.variables)


def _assign(variables: list, values: list[np.ndarray]) -> None:
    if len(variables) != len(values):
        raise UserError("the run's backup does not fit this model; pass another --name")
    for variable, value in zip(variables, values):
        variable.assign(value)


def save_keras(model: keras.Model, path: Path) -> None:
    """Save a .keras file whole or not at all."""
    # Keras wants the .keras suffix; write a sibling, then rename over the old one.
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """history.csv, rewritten whole from the run's state (never a half or repeated row)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, out.getvalue())


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
        model._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(x)[0])
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
) -> Trained:
    """Build and compile under the strategy, then fit with early stopping on `cfg.monitor`.

    Sets the precision policy first, prints the model and the strategy, and resumes where
    `run_dir`'s backup says an interrupted fit stopped.
    """
    precision = set_precision(cfg)
    with strategy.scope():
        model = build()
        compile_model(model, cfg, math.ceil(len(train[1]) / cfg.batch_size))
        if cfg.adversarial:
            model.train_step = adversarial_step(model, cfg.adversarial)
    model.summary(print_fn=lambda line, **_: print(line, flush=True))
    print(
        f"strategy: {strategy_name(strategy)} with {strategy.num_replicas_in_sync} replica(s), "
        f"global batch {cfg.batch_size}, {precision}",
        flush=True,
    )
    state = _fit(model, cfg, train, val, run_dir)
    if strategy.num_replicas_in_sync > 1:
        # Report and export from a plain copy: no distributed variables in the served graph.
        plain = build()
        plain.set_weights(model.get_weights())
        model = plain
    return Trained(model, state["history"], state["best_epoch"], precision)


def _fit(model, cfg: Config, train, val, run_dir: Path) -> dict:
    steps = math.ceil(len(train[1]) / cfg.batch_size)
    state = RunState(run_dir, cfg, steps)
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
    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    # keras-team/keras#20585: fit() builds the model from a batch reduced across workers,
    # which fails for an (x, y) batch; build it from one local batch instead.
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(train_ds())))
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    # It then averages each step's logs across workers along axis 0, which scalars lack:
    # give them that axis (the mean of equal global values is the value itself).
    model.train_step = _logs_with_axis(model.train_step)
    model.test_step = _logs_with_axis(model.test_step)


def _logs_with_axis(step):
    def step_with_axis(data):
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    return step_with_axis


def _interactive() -> bool:
    return sys.stdout.isatty()

"""Stage 7, training: length-bucketed tf.data batches, Adam with clipping, early stopping."""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .config import Config, UserError


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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints, reports and exports (worker 0 or the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_id == 0)


def set_precision(mixed: bool) -> str:
    """mixed_float16 on a GPU when asked; float32 otherwise (CPUs gain nothing from float16)."""
    policy = "mixed_float16" if mixed and tf.config.list_logical_devices("GPU") else "float32"
    if mixed and policy == "float32":
        print("mixed precision needs a GPU: training in float32", flush=True)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def rows_dataset(rows: list[np.ndarray], *columns: np.ndarray) -> tf.data.Dataset:
    """Variable-length token-id rows (and label columns) as a dataset of 1-D tensors."""
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    padded = np.zeros((len(rows), max(lengths, default=1)), np.int32)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    ds = tf.data.Dataset.from_tensor_slices((padded, lengths, *columns))
    return ds.map(lambda ids, n, *rest: (ids[:n], *rest))


def bucket_boundaries(max_length: int) -> list[int]:
    """Length buckets 32 tokens wide up to 512, then 1/8 of the length: few distinct shapes."""
    bounds = [32]
    while bounds[-1] <= max_length:
        bounds.append(bounds[-1] + max(32, 2 ** (bounds[-1].bit_length() - 1) // 8))
    return bounds


def train_dataset(rows: list[np.ndarray], labels: np.ndarray, cfg: Config) -> tf.data.Dataset:
    """An endless shuffled stream of batches of similar length (torchtext's BucketIterator).

    Batches are padded to their bucket's bound, so training sees a few dozen shapes at most:
    CompiledLSTM compiles each shape once.
    """
    ds = rows_dataset(rows, labels.astype(np.int32))
    ds = ds.shuffle(len(labels), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
    boundaries = bucket_boundaries(cfg.sequence_length)
    ds = ds.bucket_by_sequence_length(
        lambda ids, _: tf.shape(ids)[0],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[cfg.batch_size] * (len(boundaries) + 1),
        pad_to_bucket_boundary=True,
    )
    return _no_autotune(ds.prefetch(4))


def eval_dataset(rows: list[np.ndarray], labels: np.ndarray | None, batch_size: int):
    """Batches in length order (little padding) and the order used, to undo it afterwards."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    sorted_rows = [rows[i] for i in order]
    if labels is None:
        ds = rows_dataset(sorted_rows).map(lambda ids: ids)
    else:
        ds = rows_dataset(sorted_rows, labels[order].astype(np.int32))
    ds = ds.padded_batch(batch_size)
    return _no_autotune(ds.prefetch(4)), order


def _no_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    # Batches are precomputed, so autotuning buys nothing; its background thread is what
    # stalled iterator teardown at epoch boundaries on these machines (FIELD_NOTES).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def read_history(path: Path) -> list[dict[str, float]]:
    """The epochs logged so far (the last row per epoch wins), for resuming."""
    if not path.is_file():
        return []
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows[int(row["epoch"])] = {k: float(v) for k, v in row.items()}
            except (KeyError, ValueError):
                continue  # a line cut by a crash
    return [rows[e] for e in sorted(rows)]


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that, saving every N steps, also saves at each epoch's end.

    Keras alone would leave the last step backup of a finished epoch, so a restart would run
    that whole epoch again.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._save_model()


def best_epoch_index(scores: list[float], monitor: str) -> int:
    """Index of the best epoch: lowest loss or highest accuracy."""
    return int(np.argmin(scores) if monitor.endswith("loss") else np.argmax(scores))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping (restoring the best weights) whose state survives a restart."""

    def __init__(self, history: list[dict[str, float]], best_path: Path, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.history, self.best_path = history, best_path

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        scores = [row[self.monitor] for row in self.history if self.monitor in row]
        if scores and self.best_path.is_file():
            best = best_epoch_index(scores, self.monitor)
            self.best, self.best_epoch = scores[best], best
            self.wait = len(scores) - 1 - best
            try:
                self.best_weights = keras.models.load_model(self.best_path).get_weights()
            except (OSError, ValueError):  # cut short by the crash: keep the current weights
                self.best_weights = None


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, for the report and the throughput numbers."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def compile_model(model: keras.Model, cfg: Config) -> None:
    """Adam with gradient-norm clipping on sparse categorical cross-entropy."""
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def train(
    model: keras.Model,
    cfg: Config,
    train: tuple[list[np.ndarray], np.ndarray],
    val: tuple[list[np.ndarray], np.ndarray],
    run_dir: Path,
) -> tuple[list[dict[str, float]], EpochTimer]:
    """Fit with early stopping on `cfg.monitor`; returns every epoch's logged metrics.

    Interrupted runs resume from `run_dir/backup`: Keras restores the weights, optimizer and
    epoch; the early-stopping and best-checkpoint state are rebuilt from history.csv.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    timer = EpochTimer()
    history = read_history(run_dir / "history.csv")
    monitor = cfg.monitor
    scores = [row[monitor] for row in history if monitor in row]
    callbacks = [
        # Row first, then backup: a kill between them repeats an epoch, never loses its row.
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        # Resume after any interruption, SIGKILL included: same command, same run folder.
        Backup(str(run_dir / "backup"), save_freq=cfg.checkpoint_steps or "epoch"),
        ResumableEarlyStopping(
            history, run_dir / "best.keras", monitor=monitor, patience=cfg.patience, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"),
            monitor=monitor,
            save_best_only=True,
            # A resumed run: only a better model than the best so far replaces it.
            initial_value_threshold=scores[best_epoch_index(scores, monitor)] if scores else None,
        ),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        timer,
    ]
    if cfg.lr_decay < 1:
        # Smaller steps once the validation score stalls: the optimizer keeps the rate, so a
        # resumed run continues with it.
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                factor=cfg.lr_decay,
                patience=0,
                min_lr=cfg.learning_rate / 16,
                verbose=1,
            )
        )
    val_ds, _ = eval_dataset(*val, cfg.batch_size)
    train_ds = train_dataset(*train, cfg)
    strategy = model.distribute_strategy
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # keras-team/keras#20585: fit() builds the model from a batch reduced across workers,
        # which fails for an (x, y) batch; build it from one local batch instead.
        with strategy.scope():
            model._symbolic_build(data_batch=next(iter(train_ds)))
        model._maybe_symbolic_build = lambda *args, **kwargs: None
        # It then averages each step's logs across workers along axis 0, which scalars lack:
        # give them that axis (the mean of equal global values is the value itself).
        model.train_step = _logs_with_axis(model.train_step)
        model.test_step = _logs_with_axis(model.test_step)
    model.fit(
        train_ds,
        steps_per_epoch=math.ceil(len(train[1]) / cfg.batch_size),
        validation_data=val_ds,
        epochs=cfg.epochs,
        shuffle=False,  # the dataset shuffles itself
        callbacks=callbacks,
        verbose=1 if _interactive() else 2,
    )
    return read_history(run_dir / "history.csv"), timer


def _logs_with_axis(step):
    def step_with_axis(data):
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    return step_with_axis


def _interactive() -> bool:
    return sys.stdout.isatty()

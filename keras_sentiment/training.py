"""Stage 7, training: length-bucketed tf.data batches, Adam with clipping, early stopping."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .config import Config


def rows_dataset(rows: list[np.ndarray], *columns: np.ndarray) -> tf.data.Dataset:
    """Variable-length token-id rows (and label columns) as a dataset of 1-D tensors."""
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    padded = np.zeros((len(rows), max(lengths, default=1)), np.int32)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    ds = tf.data.Dataset.from_tensor_slices((padded, lengths, *columns))
    return ds.map(lambda ids, n, *rest: (ids[:n], *rest))


def bucket_boundaries(max_length: int) -> list[int]:
    """Length buckets every 32 tokens up to the sequence length."""
    return list(range(32, max_length, 32)) or [max_length]


def train_dataset(rows: list[np.ndarray], labels: np.ndarray, cfg: Config) -> tf.data.Dataset:
    """An endless shuffled stream of batches of similar length (torchtext's BucketIterator)."""
    ds = rows_dataset(rows, labels.astype(np.int32))
    ds = ds.shuffle(len(labels), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
    boundaries = bucket_boundaries(cfg.sequence_length)
    ds = ds.bucket_by_sequence_length(
        lambda ids, _: tf.shape(ids)[0],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[cfg.batch_size] * (len(boundaries) + 1),
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
) -> tuple[keras.callbacks.History, EpochTimer]:
    """Fit with early stopping on validation accuracy, checkpoints and a CSV history."""
    run_dir.mkdir(parents=True, exist_ok=True)
    timer = EpochTimer()
    callbacks = [
        # Resume after any interruption, SIGKILL included: same command, same run folder.
        keras.callbacks.BackupAndRestore(
            str(run_dir / "backup"), save_freq=cfg.checkpoint_steps or "epoch"
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=cfg.patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"), monitor="val_accuracy", save_best_only=True
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        timer,
    ]
    val_ds, _ = eval_dataset(*val, cfg.batch_size)
    history = model.fit(
        train_dataset(*train, cfg),
        steps_per_epoch=math.ceil(len(train[1]) / cfg.batch_size),
        validation_data=val_ds,
        epochs=cfg.epochs,
        shuffle=False,  # the dataset shuffles itself
        callbacks=callbacks,
        verbose=1 if _interactive() else 2,
    )
    return history, timer


def _interactive() -> bool:
    import sys

    return sys.stdout.isatty()

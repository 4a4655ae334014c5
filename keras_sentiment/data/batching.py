"""Token-id rows to tf.data batches: length buckets for training, length order for evaluation."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_sentiment.config import Config


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


def train_dataset(
    rows: list[np.ndarray], labels: np.ndarray, cfg: Config, skip: int = 0
) -> tf.data.Dataset:
    """An endless shuffled stream of batches of similar length (torchtext's BucketIterator).

    Batches are padded to their bucket's bound, so training sees a few dozen shapes at most:
    CompiledLSTM compiles each shape once. The stream is the same for a seed, so a resumed
    run skips the batches it has trained on and goes on with the ones it has not.
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
    return _no_autotune(ds.skip(skip).prefetch(4))


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
    # stalled iterator teardown at epoch boundaries in full IMDB fits (the main thread
    # destroying the last epoch's iterator while the autotune thread waited on it).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)

"""Data: the train, validation and test splits of any source, cut and split as configured.

Every source (`sources.py`) becomes the same `Splits`: train, a stratified validation split
held out of it, and test, with the class names the data gives.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from keras_sentiment.config import Config, UserError, data_kind
from keras_sentiment.data.sources import (
    Split,
    columns_of,
    from_memory,
    read_folder,
    read_table,
    read_texts,
    read_tfds,
)

HELD_OUT = 0.2  # the test share of one file, or of in-memory data, given without a test set


@dataclass
class Splits:
    """Train, validation (held out of train) and test, with the class names from the data."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    source: str  # for people: "tfds:imdb_reviews", "file:reviews.csv (test: ...)", ...


def load_splits(cfg: Config, data: Any = None, test_data: Any = None) -> Splits:
    """Load the data set, cut it as configured and hold out a stratified validation split.

    Args:
        cfg: `dataset`, `test_data`, `max_train`, `max_test`, `validation_fraction`, `seed`
            and the review files' column names are read.
        data: in-memory training data instead of `cfg.dataset` (see `from_memory`).
        test_data: in-memory test data; without it a stratified 20% of `data` is held out.

    Returns:
        The splits, with class names from the data.

    Raises:
        UserError: a missing or malformed source, one class only, too few texts to split.
    """
    start = time.perf_counter()
    if data is None:
        train, test, class_names, source = load_dataset(cfg.dataset, cfg.test_data, cfg)
    else:
        train, class_names = from_memory(data, cfg)
        source = f"memory: {len(train)} texts"
        if test_data is None:
            train, test = _held_out(train, class_names, cfg.seed, "in-memory data")
            source += f" (test: stratified {HELD_OUT:.0%} held out)"
        else:
            test, class_names = from_memory(test_data, cfg, class_names)
    train = subsample(train, cfg.max_train, cfg.seed)
    test = subsample(test, cfg.max_test, cfg.seed)
    _check_labels(train, class_names, source)
    train, val = _stratified_split(train, cfg.validation_fraction, cfg.seed, source)
    print(
        f"data: {source}: train {len(train)}, validation {len(val)}, test {len(test)}, "
        f"classes {class_names} ({time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    return Splits(train, val, test, class_names, source)


def load_dataset(
    spec: str, test_spec: str = "", cfg: Config | None = None
) -> tuple[Split, Split, list[str], str]:
    """Train split, test split, class names and a description for a TFDS name, folder or file.

    The test split is `test_spec` (a review file) when given, else the data set's own (TFDS'
    and a folder's `test`), else a stratified, seeded 20% of a single file.
    """
    cfg = cfg or Config()
    if test_spec:
        train, names, source = read_source(spec, "train", cfg)
        test, names = read_table(_file(test_spec), names, columns_of(cfg))
        return train, test, names, f"{source} (test: {test_spec})"
    if data_kind(spec) == "file":
        data, names = read_table(spec, columns=columns_of(cfg))
        train, test = _held_out(data, names, cfg.seed, spec)
        return train, test, names, f"file:{spec} (test: stratified {HELD_OUT:.0%} held out)"
    train, names, source = read_source(spec, "train", cfg)
    test, test_names, _ = read_source(spec, "test", cfg)
    if test_names != names:
        raise UserError(f"{spec}: train classes {names} differ from test classes {test_names}")
    return train, test, names, source


def read_source(spec: str, split: str, cfg: Config) -> tuple[Split, list[str], str]:
    """One split of whatever `spec` names (`config.data_kind`), its class names and a
    description: a TFDS split, a folder's `split/` subfolder, or a review file whole."""
    kind = data_kind(spec)
    if kind == "file":
        return *read_table(spec, columns=columns_of(cfg)), f"file:{spec}"
    if kind == "folder":
        return *read_folder(Path(spec) / split, Path(spec)), f"folder:{spec}"
    if kind == "missing":
        raise UserError(f"{spec}: no such file or folder")
    if kind == "memory":
        raise UserError("the model was trained on in-memory data: pass the test data to score")
    return *read_tfds(spec, split), f"tfds:{spec}"


def _file(spec: str) -> str:
    kind = data_kind(spec)
    if kind not in ("file", "missing"):
        raise UserError(f"{spec}: test data must be a CSV, JSONL or Parquet file, not a {kind}")
    return spec


def load_test(cfg: Config) -> tuple[Split, list[str]]:
    """The test split a `fit` with this config reported on, and the class names.

    A single file holds out the same seeded 20% as `fit` did, and `max_test` cuts the same
    seeded sample, so `evaluate` scores exactly the texts `fit` scored.
    """
    if cfg.test_data:
        test, names = read_table(_file(cfg.test_data), columns=columns_of(cfg))
    elif data_kind(cfg.dataset) == "file":
        _, test, names, _ = load_dataset(cfg.dataset, "", cfg)
    else:
        test, names, _ = read_source(cfg.dataset, "test", cfg)
    return subsample(test, cfg.max_test, cfg.seed), names


def load_test_split(spec: str, split: str = "test", cfg: Config | None = None):
    """One named split of a TFDS data set or folder, or a whole review file: (Split, names)."""
    return read_source(spec, split, cfg or Config())[:2]


def load_unlabeled(cfg: Config) -> np.ndarray:
    """Unlabeled texts for pretraining: `cfg.unlabeled`, else the data set's own.

    The data set's own: TFDS' `unsupervised` split, or an aclImdb folder's train/unsup/;
    a review file or in-memory data has none. With `max_train`, as many are kept (a seeded
    sample).
    """
    kind, unsup = data_kind(cfg.dataset), Path(cfg.dataset) / "train" / "unsup"
    if cfg.unlabeled:
        texts = read_texts(Path(cfg.unlabeled))
    elif kind == "folder":
        texts = read_texts(unsup) if unsup.is_dir() else []
    elif kind == "tfds":
        import tensorflow_datasets as tfds

        has = "unsupervised" in tfds.builder(cfg.dataset).info.splits
        texts = read_tfds(cfg.dataset, "unsupervised")[0].texts if has else []
    else:
        texts = []
    texts = np.array(list(texts), dtype=object)
    if cfg.max_train and len(texts) > cfg.max_train:
        keep = np.random.default_rng(cfg.seed).choice(len(texts), cfg.max_train, replace=False)
        texts = texts[np.sort(keep)]
    return texts


# --- cutting and splitting -----------------------------------------------------------


def subsample(split: Split, limit: int, seed: int) -> Split:
    """At most `limit` texts (0: all): a seeded sample with the split's class balance."""
    if not limit or limit >= len(split):
        return split
    rng = np.random.default_rng(seed)
    # Stratified: the same class balance as the full split.
    keep = []
    for label in np.unique(split.labels):
        idx = np.flatnonzero(split.labels == label)
        share = round(limit * len(idx) / len(split))
        keep.append(rng.choice(idx, size=max(1, share), replace=False))
    keep = np.sort(np.concatenate(keep))[:limit]
    return Split(split.texts[keep], split.labels[keep])


def _check_labels(split: Split, names: list[str], source: str) -> None:
    present = np.unique(split.labels)
    if len(present) < 2:
        raise UserError(f"{source}: labels of one class only ({[names[i] for i in present]})")


def _held_out(data: Split, names: list[str], seed: int, source: str) -> tuple[Split, Split]:
    _check_labels(data, names, source)
    return _stratified_split(data, HELD_OUT, seed, source)


def _stratified_split(split: Split, fraction: float, seed: int, source: str) -> tuple[Split, Split]:
    counts = np.bincount(split.labels)
    if counts[counts > 0].min() < 2 or len(split) * fraction < len(counts[counts > 0]):
        raise UserError(f"{source}: too few examples per class to hold out {fraction:.0%}")
    a, b, ya, yb = train_test_split(
        split.texts, split.labels, test_size=fraction, random_state=seed, stratify=split.labels
    )
    return Split(a, ya), Split(b, yb)


def memory_key(split: Split, test: Split | None) -> str:
    """A content key of in-memory data, recorded as the run's `dataset` ("memory:KEY"), so a
    resumed run only ever continues with the same data."""
    digest = hashlib.sha256()
    for part in (split, test):
        for text, label in zip(part.texts, part.labels) if part is not None else ():
            digest.update(len(text).to_bytes(8, "little") + text + int(label).to_bytes(8, "little"))
    return digest.hexdigest()[:16]

"""Stage 1, data: texts and labels from TFDS, an aclImdb-style folder, or a CSV/JSONL file."""

from __future__ import annotations

import csv
import io
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .config import Config, UserError


@dataclass
class Split:
    """Raw texts (UTF-8 bytes) and integer labels of one split."""

    texts: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    """Train, validation (held out of train) and test, with the class names from the data."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    source: str


def load_splits(cfg: Config) -> Splits:
    """Load the data set, cut it as configured and hold out a stratified validation split."""
    start = time.perf_counter()
    train, test, class_names, source = load_dataset(cfg.dataset, cfg.test_data, cfg.seed)
    train = _subsample(train, cfg.max_train, cfg.seed)
    test = _subsample(test, cfg.max_test, cfg.seed)
    _check_labels(train, class_names, cfg.dataset)
    train, val = _stratified_split(train, cfg.validation_fraction, cfg.seed, cfg.dataset)
    print(
        f"data: {source}: train {len(train)}, validation {len(val)}, test {len(test)}, "
        f"classes {class_names} ({time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    return Splits(train, val, test, class_names, source)


def load_dataset(
    spec: str, test_spec: str = "", seed: int = 0
) -> tuple[Split, Split, list[str], str]:
    """Train split, test split and class names for a TFDS name, a folder or a file."""
    path = Path(spec)
    if path.suffix.lower() in (".csv", ".jsonl", ".json") or path.is_file():
        return _load_table_pair(path, test_spec, seed)
    if path.is_dir():
        return _load_folder(path)
    if "/" in spec or spec.startswith("."):
        raise UserError(f"{spec}: no such file or folder")
    return _load_tfds(spec)


def load_unlabeled(cfg: Config) -> np.ndarray:
    """Unlabeled texts for pretraining: `cfg.unlabeled`, else the data set's own.

    The data set's own: TFDS' `unsupervised` split, or an aclImdb folder's train/unsup/;
    CSV/JSONL data has none. With `max_train`, as many are kept (a seeded sample).
    """
    path = Path(cfg.dataset)
    if cfg.unlabeled:
        texts = _read_texts(Path(cfg.unlabeled))
    elif path.is_dir():
        texts = _read_texts(path / "train" / "unsup") if (path / "train" / "unsup").is_dir() else []
    elif path.suffix.lower() in (".csv", ".jsonl", ".json") or path.is_file():
        texts = []
    else:
        import tensorflow_datasets as tfds

        has = "unsupervised" in tfds.builder(cfg.dataset).info.splits
        texts = _read_tfds(cfg.dataset, "unsupervised")[0].texts if has else []
    texts = np.array(list(texts), dtype=object)
    if cfg.max_train and len(texts) > cfg.max_train:
        keep = np.random.default_rng(cfg.seed).choice(len(texts), cfg.max_train, replace=False)
        texts = texts[np.sort(keep)]
    return texts


def _read_texts(path: Path) -> list[bytes]:
    # A folder of .txt files (one text each), or a .txt file with one text per line.
    if path.is_dir():
        return [f.read_bytes() for f in sorted(path.glob("*.txt"))]
    if path.is_file() and path.suffix.lower() == ".txt":
        return [line for line in path.read_bytes().splitlines() if line.strip()]
    if not path.exists():
        raise UserError(f"unlabeled: {path}: no such file or folder")
    raise UserError(f"unlabeled: {path}: expected a folder of .txt files or a .txt file")


def load_test_split(spec: str, split: str = "test") -> tuple[Split, list[str]]:
    """One named split (test by default) of a data set, for `evaluate`."""
    path = Path(spec)
    if path.is_file():
        data, names = read_table(path)
        return data, names
    if path.is_dir():
        return _read_folder(path / split, path)
    return _read_tfds(spec, split)


# --- TensorFlow Datasets -------------------------------------------------------------


def _load_tfds(name: str) -> tuple[Split, Split, list[str], str]:
    train, names = _read_tfds(name, "train")
    test, _ = _read_tfds(name, "test")
    return train, test, names, f"tfds:{name}"


def _read_tfds(name: str, split: str) -> tuple[Split, list[str]]:
    import tensorflow_datasets as tfds
    from absl import logging

    # TFDS' warnings about folders it looked in would bury our one-line error.
    logging.set_verbosity(logging.ERROR)
    try:
        builder = tfds.builder(name)
    except Exception as e:  # TFDS raises several types for unknown names
        raise UserError(f"unknown TFDS data set {name!r}: {str(e).splitlines()[0]}") from None
    if not builder.is_prepared():
        _check_online(name, builder.data_dir_root)
        print(
            f"data: {name} is not under {builder.data_dir_root}: downloading it with TFDS "
            "(offline, set TFDS_DATA_DIR to a folder holding it prepared)",
            flush=True,
        )
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise UserError(
            f"TFDS {name}: not found under {builder.data_dir_root} and could not be downloaded "
            f"({type(e).__name__}); set TFDS_DATA_DIR to a folder that holds it prepared"
        ) from None
    info = builder.info
    text_key, label_key = _tfds_keys(info.features, name)
    if split not in info.splits:
        raise UserError(f"TFDS {name}: no split {split!r} (has {sorted(info.splits)})")
    ds = builder.as_dataset(split=split, shuffle_files=False)
    # One batched pass to numpy: far faster than iterating examples one by one.
    texts, labels = [], []
    for batch in tfds.as_numpy(ds.batch(4096)):
        texts.append(batch[text_key])
        labels.append(batch[label_key])
    names = list(info.features[label_key].names)
    return Split(
        np.concatenate(texts).astype(object), np.concatenate(labels).astype(np.int64)
    ), names


def _check_online(name: str, root: str) -> None:
    # TFDS retries a failed download for minutes; without a network, say so at once.
    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=5).close()
    except OSError as e:
        raise UserError(
            f"TFDS {name}: not under {root} and the network is unreachable ({e.strerror or e}); "
            "set TFDS_DATA_DIR to a folder that holds it prepared"
        ) from None


def _tfds_keys(features, name: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    text = [k for k, f in features.items() if isinstance(f, tfds.features.Text)]
    label = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not text or not label:
        raise UserError(f"TFDS {name}: needs a Text and a ClassLabel feature, has {list(features)}")
    return text[0], label[0]


# --- aclImdb-style folders -------------------------------------------------------------


def _load_folder(path: Path) -> tuple[Split, Split, list[str], str]:
    train, names = _read_folder(path / "train", path)
    test, test_names = _read_folder(path / "test", path)
    if test_names != names:
        raise UserError(f"{path}: train classes {names} differ from test classes {test_names}")
    return train, test, names, f"folder:{path}"


def _read_folder(path: Path, root: Path) -> tuple[Split, list[str]]:
    if not path.is_dir():
        raise UserError(f"{root}: expected a {path.name}/ folder with one subfolder per class")
    # Only class folders holding text files count, so aclImdb's train/unsup is left out.
    names = sorted(d.name for d in path.iterdir() if d.is_dir() and any(d.glob("*.txt")))
    if len(names) < 2:
        raise UserError(f"{path}: needs at least two class subfolders of .txt files, found {names}")
    texts, labels = [], []
    for label, name in enumerate(names):
        for file in sorted((path / name).glob("*.txt")):
            texts.append(file.read_bytes())
            labels.append(label)
    return Split(np.array(texts, dtype=object), np.array(labels, dtype=np.int64)), names


# --- CSV / JSONL -------------------------------------------------------------------


def _load_table_pair(path: Path, test_spec: str, seed: int) -> tuple[Split, Split, list[str], str]:
    data, names = read_table(path)
    if test_spec:
        test, test_names = read_table(Path(test_spec), names)
        return data, test, test_names, f"file:{path}"
    # One file only: hold out a stratified fifth as the test split.
    _check_labels(data, names, str(path))
    train, test = _stratified_split(data, 0.2, seed, str(path))
    return train, test, names, f"file:{path} (test: stratified 20% held out)"


def read_table(path: Path, class_names: list[str] | None = None) -> tuple[Split, list[str]]:
    """Read `text` and `label` columns from a CSV or JSONL file."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = (
        _jsonl_rows(path, raw)
        if path.suffix.lower() in (".jsonl", ".json")
        else _csv_rows(path, raw)
    )
    if not rows:
        raise UserError(f"{path}: no rows")
    texts, labels = [], []
    for line, row in rows:
        text, label = row.get("text"), row.get("label")
        if label is None or label == "":
            raise UserError(f"{path}:{line}: missing label")
        if text is None:
            text = ""
        texts.append(str(text).encode("utf-8", "replace"))
        labels.append(label)
    kinds = {type(x) for x in labels}
    if len(kinds) > 1:
        raise UserError(f"{path}: mixed label types {sorted(k.__name__ for k in kinds)}")
    names = class_names or [str(x) for x in sorted(set(labels))]
    index = {name: i for i, name in enumerate(names)}
    try:
        ids = [index[str(x)] for x in labels]
    except KeyError as e:
        raise UserError(f"{path}: label {e.args[0]!r} is not one of the classes {names}") from None
    return Split(np.array(texts, dtype=object), np.array(ids, dtype=np.int64)), names


def _csv_rows(path: Path, raw: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(raw, newline=""))  # quoted newlines stay in the text
    columns = reader.fieldnames or []
    missing = [c for c in ("text", "label") if c not in columns]
    if missing:
        raise UserError(f"{path}: CSV needs columns text and label, missing {missing}")
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None


def _jsonl_rows(path: Path, raw: str) -> list[tuple[int, dict]]:
    rows = []
    for i, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or "text" not in row or "label" not in row:
            raise UserError(f"{path}:{i}: each line needs an object with text and label")
        rows.append((i, row))
    return rows


# --- cutting and splitting -----------------------------------------------------------


def _subsample(split: Split, limit: int, seed: int) -> Split:
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


def _stratified_split(split: Split, fraction: float, seed: int, source: str) -> tuple[Split, Split]:
    counts = np.bincount(split.labels)
    if counts[counts > 0].min() < 2 or len(split) * fraction < len(counts[counts > 0]):
        raise UserError(f"{source}: too few examples per class to hold out {fraction:.0%}")
    a, b, ya, yb = train_test_split(
        split.texts, split.labels, test_size=fraction, random_state=seed, stratify=split.labels
    )
    return Split(a, ya), Split(b, yb)

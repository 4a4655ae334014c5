"""Sources: read texts and labels from TFDS, an aclImdb-style folder, a review file, or memory.

Each reader returns a `Split` (texts as UTF-8 bytes, integer labels) and the class names the
source gives; `splits.py` cuts and splits them. Review files (CSV, JSONL, Parquet, compressed or
not) are parsed by `readers.py`, the same reader `score` uses. TFDS is imported only for a TFDS
name.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keras_sentiment.config import Config, UserError, data_kind, file_format, spelled
from keras_sentiment.data.readers import Bad, file_records, kind_of, open_file, record_text


@dataclass
class Split:
    """Raw texts (UTF-8 bytes) and integer labels of one split."""

    texts: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


# --- in memory -----------------------------------------------------------------------------


def from_memory(
    data: Any, cfg: Config | None = None, class_names: list[str] | None = None
) -> tuple[Split, list[str]]:
    """Texts and labels held in memory, as a Split and its class names.

    Args:
        data: a pandas DataFrame (or any mapping) with `cfg.text_column` and
            `cfg.label_column`; a pair `(texts, labels)` of sequences; or a `tf.data.Dataset`
            of `(text, label)` elements, batched or not.
        cfg: names the columns of a DataFrame (default: `text` and `label`).
        class_names: the classes to map labels to (a test set uses the training set's).

    Returns:
        The split, and the class names: the sorted distinct labels as strings, unless given.

    Example:
        >>> split, names = from_memory((["great", "awful"], ["pos", "neg"]))
        >>> names, split.labels.tolist()
        (['neg', 'pos'], [1, 0])
    """
    text_column, label_column = columns_of(cfg or Config())
    if hasattr(data, "element_spec"):  # a tf.data.Dataset
        texts, labels = _dataset_columns(data)
    elif hasattr(data, "keys") and not isinstance(data, (tuple, list)):
        missing = [c for c in (text_column, label_column) if c not in data.keys()]
        if missing:
            found = ", ".join(map(str, data.keys()))
            raise UserError(f"in-memory data: no column {missing[0]!r} (it has: {found})")
        texts, labels = list(data[text_column]), list(data[label_column])
    elif isinstance(data, (tuple, list)) and any(isinstance(x, (str, bytes)) for x in data):
        raise UserError(
            "in-memory data: texts without labels; pass (texts, labels), a DataFrame with "
            f"{text_column!r} and {label_column!r} columns, or a tf.data.Dataset of (text, label)"
        )
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        texts, labels = list(data[0]), list(data[1])
    else:
        raise UserError(
            f"in-memory data: expected a DataFrame, (texts, labels) or a tf.data.Dataset, "
            f"got {type(data).__name__}"
        )
    if len(texts) != len(labels):
        raise UserError(f"in-memory data: {len(texts)} texts but {len(labels)} labels")
    labels = [x.decode() if isinstance(x, bytes) else x for x in labels]
    texts = [t if isinstance(t, bytes) else str(t).encode("utf-8", "replace") for t in texts]
    return _with_label_ids(texts, labels, class_names, "in-memory data")


def _dataset_columns(ds) -> tuple[list, list]:
    if len(ds.element_spec) != 2:
        raise UserError("in-memory data: a tf.data.Dataset must yield (text, label) pairs")
    if ds.element_spec[0].shape.rank == 0:
        ds = ds.batch(4096)
    texts, labels = [], []
    for x, y in ds.as_numpy_iterator():
        texts.extend(np.asarray(x).tolist())
        labels.extend(np.asarray(y).tolist())
    return texts, labels


# --- TensorFlow Datasets -------------------------------------------------------------


def read_tfds(name: str, split: str) -> tuple[Split, list[str]]:
    """One split of a TFDS data set with a Text and a ClassLabel feature, prepared or fetched."""
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


def read_folder(path: Path, root: Path) -> tuple[Split, list[str]]:
    """`path/<class>/*.txt` (aclImdb's layout): one class per subfolder holding .txt files."""
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


# --- review files: CSV, JSONL, Parquet -------------------------------------------------------


def columns_of(cfg: Config) -> tuple[str, str]:
    """The (text, label) column names of review files."""
    return cfg.text_column, cfg.label_column


def read_table(
    path: str | Path,
    class_names: list[str] | None = None,
    columns: tuple[str, str] = ("text", "label"),
) -> tuple[Split, list[str]]:
    """The text and label columns (default `text`, `label`) of a CSV, JSONL or Parquet file,
    compressed or not, read by `readers.read_records` with the rules `score` reads it by.

    Args:
        path: the file.
        class_names: the classes to map labels to (a test file uses the training set's).
        columns: the text and label column names.

    Returns:
        The split, and the class names: the sorted distinct labels as strings, unless given.

    Raises:
        UserError: one line for the first record that cannot be read, naming its file and
            line(s) (`reviews.csv:12: 3 columns, the header has 2`); an empty file; no rows.
    """
    if file_format(str(path)) == "text":
        raise UserError(
            f"{path}: plain text has no labels; give a CSV, JSONL or Parquet file with "
            f"{columns[0]!r} and {columns[1]!r} columns"
        )
    texts, labels, spanning = [], [], []
    for record in file_records(path, columns):
        if isinstance(record, Bad):
            raise UserError(_stopped_at(path, record))
        text = record_text(record, columns[0])
        if isinstance(text, Bad):
            raise UserError(_stopped_at(path, text))
        label = record.fields[columns[1]]
        if label is None or label == "":
            raise UserError(f"{record.source}: missing label")
        if isinstance(label, (list, dict)):
            raise UserError(f"{record.source}: the label is {kind_of(label)}, not a class name")
        if record.lines > 1:
            spanning.append(record.source)
        texts.append(text)
        labels.append(label)
    if not texts:
        raise UserError(f"{path}: {'no rows' if _has_content(path) else 'the file is empty'}")
    if spanning:  # a legitimate quoted field over lines; said, so a swallowed line is seen
        print(
            f"data: {path}: {len(spanning)} record(s) span several lines (a quoted field with "
            f"line breaks), the first at {spanning[0]}",
            flush=True,
        )
    return _with_label_ids(texts, labels, class_names, str(path))


def _stopped_at(path: str | Path, bad: Bad) -> str:
    """The one line `fit` and `evaluate` stop with for a record they cannot read."""
    where = str(path) if bad.skipped or bad.reason.startswith("no column") else bad.source
    line = f"{where}: {bad.reason}"
    if bad.reason.startswith(("no column", "no '")):
        line += f" (choose with {spelled('text_column')} and {spelled('label_column')})"
    return line


def _has_content(path: str | Path) -> bool:
    with open_file(path) as f:
        return any(line.strip() for line in iter(f.readline, b""))


def _with_label_ids(
    texts: list[bytes], labels: list, class_names: list[str] | None, source: str
) -> tuple[Split, list[str]]:
    kinds = {type(x) for x in labels}
    if len(kinds) > 1:
        raise UserError(f"{source}: mixed label types {sorted(k.__name__ for k in kinds)}")
    if not labels:
        raise UserError(f"{source}: no rows")
    names = class_names or [str(x) for x in sorted(set(labels))]
    index = {name: i for i, name in enumerate(names)}
    try:
        ids = [index[str(x)] for x in labels]
    except KeyError as e:
        raise UserError(
            f"{source}: label {e.args[0]!r} is not one of the classes {names}"
        ) from None
    return Split(np.array(texts, dtype=object), np.array(ids, dtype=np.int64)), names


# --- classes -------------------------------------------------------------------------------


def parse_label_map(spec: str | dict | None) -> dict[str, str]:
    """A label map from `0=neg,1=pos` (the command line) or a dict (Python): data label ->
    model class, keys and values as strings.

    Example:
        >>> parse_label_map("0=neg, 1=pos"), parse_label_map({0: "neg"})
        ({'0': 'neg', '1': 'pos'}, {'0': 'neg'})
    """
    if not spec:
        return {}
    if isinstance(spec, dict):
        return {str(k): str(v) for k, v in spec.items()}
    pairs = [part.strip().split("=") for part in str(spec).split(",") if part.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise UserError(
            f"--label-map {spec!r}: expected DATA=MODEL pairs separated by commas, like 0=neg,1=pos"
        )
    return {a.strip(): b.strip() for a, b in pairs}


def to_classes(
    split: Split, names: list[str], classes: list[str], label_map: dict | None = None
) -> Split:
    """A split's labels as ids of a model's `classes`, its own class `names` mapped through
    `label_map` first; the data may hold fewer classes than the model.

    Raises:
        UserError: a class of the data that is not one of the model's, after the map; the
            message says how to map them (`--label-map`, `label_map=` in Python).
    """
    mapped = [label_map.get(n, n) for n in names] if label_map else list(names)
    if mapped == list(classes):
        return split
    unknown = [n for n in mapped if n not in classes]
    if unknown:
        hint = "map them with --label-map DATA=MODEL,... (label_map= in Python)"
        if len(names) == len(classes) and not label_map:
            pairs = ",".join(f"{a}={b}" for a, b in zip(names, classes))
            hint = f"if they mean {classes} in this order: --label-map {pairs}"
            hint += " (label_map= in Python)"
        raise UserError(f"the data's classes {mapped} differ from the model's {classes}; {hint}")
    ids = np.array([classes.index(n) for n in mapped], dtype=np.int64)
    return Split(split.texts, ids[split.labels])


def read_texts(path: Path) -> list[bytes]:
    """Unlabeled texts: a folder of .txt files (one text each), or a .txt file of lines (read
    by `readers.read_records`: blank lines skipped, a line that is not UTF-8 stops it)."""
    kind = data_kind(str(path))
    if kind == "folder":
        return [f.read_bytes() for f in sorted(path.glob("*.txt"))]
    if kind == "file" and file_format(str(path)) == "text":
        texts = []
        for record in file_records(path):
            if isinstance(record, Bad):
                raise UserError(f"unlabeled: {record.source}: {record.reason}")
            texts.append(record.fields["text"])
        return texts
    if kind != "file":
        raise UserError(f"unlabeled: {path}: no such file or folder")
    raise UserError(f"unlabeled: {path}: expected a folder of .txt files or a .txt file")

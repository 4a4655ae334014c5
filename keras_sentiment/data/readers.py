"""Review files for bulk scoring: each row's id, source and text, or why it cannot be scored.

`read_rows` reads one open file (bytes) of JSONL, CSV, Parquet or plain text, one review a row,
and yields `((id, source), text)` for a good row (`id`: the row's own `id` field, else its
source; `source`: `FILE:N`, N the row's first line, or its row number in a Parquet file; text as
UTF-8 bytes) or an error record `{"source", "reason", "row"}` for a bad one. Blank lines are not
rows. Only the standard library (and pyarrow for Parquet): `scoring/beam.py` runs it inside Beam.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from typing import Any

MAX_SHOWN = 10_000  # characters of a bad row kept in `errors`
FORMATS = ("auto", "jsonl", "csv", "parquet", "text")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_SUFFIXES |= {".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".zst", ".deflate")


def input_format(path: str) -> str:
    """A file's format from its name: jsonl, csv, parquet, else text (`.gz` and such ignored)."""
    name = path.lower()
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    return _SUFFIXES.get(os.path.splitext(name)[1], "text")


def bad_row(row: Any, source: str, reason: str) -> dict:
    """The error record of a row: where it is, why it is bad, and the row (cut to 10,000 chars)."""
    if isinstance(row, bytes):
        row = row.rstrip(b"\r\n").decode("utf-8", "replace")
    if isinstance(row, str) and len(row) > MAX_SHOWN:
        row = row[:MAX_SHOWN] + "..."
    return {"source": source, "reason": reason, "row": row}


def _kind(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value)) or {list: "an array", dict: "an object"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _keyed(record: dict, source: str, fields: tuple[str, str], row: Any) -> tuple | dict:
    """A record's (id, source) key and text, or why it cannot be scored."""
    text_field, id_field = fields
    if text_field not in record:
        return bad_row(row, source, f"no {text_field!r} field")
    text = record[text_field]
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")  # as `SavedModelPredictor` encodes it
    elif not isinstance(text, bytes):
        return bad_row(row, source, f"{text_field!r} is {_kind(text)}, not a string")
    key = record.get(id_field)
    if key is None or key == "":
        key = source
    elif isinstance(key, bool) or not isinstance(key, (str, int)):
        return bad_row(row, source, f"{id_field!r} is {_kind(key)}, not a string or an integer")
    return (key, source), text


def _text_rows(f, path: str, fields) -> Iterator:
    for n, line in enumerate(f, 1):
        text = line.rstrip(b"\r\n")
        if text.strip():
            yield (f"{path}:{n}", f"{path}:{n}"), text


def _jsonl_rows(f, path: str, fields) -> Iterator:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            yield bad_row(line, f"{path}:{n}", f"not JSON ({e})")
            continue
        if isinstance(record, dict):
            yield _keyed(record, f"{path}:{n}", fields, record)
        else:
            yield bad_row(line, f"{path}:{n}", f"not a JSON object but {_kind(record)}")


def _csv_rows(f, path: str, fields) -> Iterator:
    csv.field_size_limit(2**31 - 1)  # a review can be megabytes long
    reader = csv.reader(io.TextIOWrapper(f, "utf-8", "surrogateescape", newline=""))
    header, start = None, 1
    while True:
        source = f"{path}:{start}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield bad_row("", source, f"not CSV ({e})")
            if reader.line_num < start:  # the reader cannot go past it
                return
            row = []
        start = reader.line_num + 1
        if row and header is None:
            header = row
            if fields[0] not in header:
                reason = f"no {fields[0]!r} column in the header (it has: {', '.join(header)})"
                yield bad_row(row, source, reason + "; the file is skipped")
                return
        elif row and len(row) != len(header):
            yield bad_row(row, source, f"{len(row)} columns, the header has {len(header)}")
        elif row:
            record = dict(zip(header, row))
            record[fields[0]] = record[fields[0]].encode("utf-8", "surrogateescape")
            yield _keyed(record, source, fields, row)


def _parquet_rows(f, path: str, fields) -> Iterator:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        yield bad_row("", path, f"not Parquet ({e})")
        return
    names = table.schema_arrow.names
    if fields[0] not in names:
        yield bad_row(names, path, f"no {fields[0]!r} column (it has: {', '.join(names)})")
        return
    n = 0
    for batch in table.iter_batches(4096, columns=[c for c in fields if c in names]):
        for record in batch.to_pylist():
            n += 1
            yield _keyed(record, f"{path}:{n}", fields, record)


_READERS = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows, "text": _text_rows}


def read_rows(
    f, path: str, fmt: str = "auto", fields: tuple[str, str] = ("text", "id")
) -> Iterator:
    """The rows of one file: `((id, source), text)` for a good row, an error record for a bad one.

    Args:
        f: the file, open for reading bytes (seekable for Parquet).
        path: its name, for the sources (`path:N`) and, with `fmt="auto"`, its format.
        fmt: `auto` (by the name: `input_format`), `jsonl`, `csv`, `parquet` or `text`.
        fields: the names of the text and id fields (JSON keys, CSV or Parquet columns).
    """
    yield from _READERS[input_format(path) if fmt == "auto" else fmt](f, path, fields)

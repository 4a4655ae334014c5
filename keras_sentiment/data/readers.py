"""Review files: every record of a CSV, JSONL, Parquet or plain-text file, as a row or an error.

The one place that parses review files, for `fit`, `evaluate` and `score` alike, so the same
file gives the same rows everywhere. `read_records` yields, for each record of the input, either
a `Record` (its fields and where it is) or a `Bad` (where it is, why, and the row as far as it
could be read): every record comes out exactly once, nothing merges or vanishes silently.

The rules (the README's "Your own data" says them to users):

- A record is a line of JSONL or plain text, a CSV record, or a Parquet row. Its `source` is
  `FILE:N`, N its line (a Parquet row's number); a CSV record whose quoted field runs over
  lines names them all, `FILE:6-7`, and counts as spanning several lines.
- Lines end with `\\n`, `\\r\\n` or a lone `\\r`. Blank lines are not records. A UTF-8 byte-order
  mark at the start of the file is dropped.
- A record that is not UTF-8 is an error (the row shows the bytes as replacement characters).
- CSV: the first record is the header and must hold the columns asked for (else the file is one
  error). Fields follow Python's `csv` module: a field that starts with a quote runs to the
  closing quote, over line ends if need be, `""` is a quote inside it. A record with fewer or
  more fields than the header is an error; a quote still open at the end of the file is an error
  spanning the lines it swallowed.
- JSONL: a line that is not a JSON object, or has no field asked for, is an error.

Only the standard library (and pyarrow for Parquet): `scoring/beam.py` runs it inside Beam.

Example:
    >>> import io
    >>> data = b'id,text\\nc1,"two\\nlines"\\nc2,one,too many\\n'
    >>> for item in read_records(io.BytesIO(data), "q.csv", columns=("text",)):
    ...     print(item.source, getattr(item, "reason", "") or item.fields)
    q.csv:2-3 {'id': 'c1', 'text': 'two\\nlines'}
    q.csv:4 3 columns, the header has 2
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import lzma
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from keras_sentiment.config import UserError, file_format

MAX_SHOWN = 10_000  # characters of a bad row's text kept in its error
FORMATS = ("auto", "jsonl", "csv", "parquet", "text")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Record:
    """A record read: its fields (CSV: strings; JSONL: JSON values; text: `bytes`) and where.

    Attributes:
        source: `FILE:N`, or `FILE:N-M` for a CSV record over several lines.
        fields: the record's fields by column name.
        lines: how many lines it spans.
    """

    source: str
    fields: dict
    lines: int = 1


@dataclass(frozen=True, slots=True)
class Bad:
    """A record that could not be read: where, why, and the row as far as it was read.

    Attributes:
        source: `FILE:N` or `FILE:N-M`.
        reason: why, in a few words (`3 columns, the header has 2`).
        row: what was read, always writable as JSON (text cut to `MAX_SHOWN` characters).
        lines: how many lines it spans.
        skipped: the records after it that were not read (a header without the columns asked
            for skips the file).
    """

    source: str
    reason: str
    row: Any
    lines: int = 1
    skipped: int = 0

    def as_dict(self) -> dict:
        """The error record `score` writes: source, reason and row."""
        reason = self.reason
        if self.skipped:
            reason += f"; the file's other {self.skipped} record(s) are skipped"
        return {"source": self.source, "reason": reason, "row": self.row}


def bad(source: str, reason: str, row: Any, lines: int = 1, skipped: int = 0) -> Bad:
    """A `Bad` whose source and row are writable as JSON (UTF-8), whatever they held."""
    return Bad(_writable(source), reason, _writable(row), lines, skipped)


def _writable(value: Any) -> Any:
    """A value as JSON can hold it in UTF-8: bytes and lone surrogates become U+FFFD."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if len(value) > MAX_SHOWN:
            value = value[:MAX_SHOWN] + "..."
        try:  # a byte Python kept as a surrogate (file names) becomes one U+FFFD
            data = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # other lone surrogates (JSON's \ud800): one per byte
            data = value.encode("utf-8", "surrogatepass")
        return data.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(_writable(k)): _writable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_writable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _writable(str(value))  # Parquet dates, decimals, ...


def input_format(path: str) -> str:
    """A file's format from its name: jsonl, csv, parquet, else text (`.gz` and such ignored)."""
    return file_format(path)


def kind_of(value: Any) -> str:
    """What a JSON value is, for a reason: "null", "a number", "an array", ..."""
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number"}
    names[str] = "a string"
    return names.get(type(value)) or {list: "an array", dict: "an object"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _where(path: str, first: int, last: int) -> str:
    return f"{path}:{first}" if last == first else f"{path}:{first}-{last}"


# --- lines and their bytes ------------------------------------------------------------------


def _lines(f: BinaryIO) -> Iterator[bytes]:
    """The file's lines with their ends (`\\n`, `\\r\\n` or a lone `\\r`), the BOM dropped."""
    first = True
    for chunk in iter(f.readline, b""):  # Beam's compressed files have readline, no __iter__
        if first:
            chunk, first = chunk.removeprefix(_BOM), False
        if b"\r" in chunk and (chunk.count(b"\r") > 1 or not chunk.endswith(b"\r\n")):
            yield from chunk.splitlines(keepends=True)  # bytes: only \n, \r\n and \r
        else:
            yield chunk


def _not_utf8(e: UnicodeDecodeError, data: bytes, first: int, lines: int) -> str:
    before = data[: e.start].splitlines(keepends=True)
    done = [p for p in before if p.endswith((b"\n", b"\r"))]
    column = e.start - sum(map(len, done)) + 1
    at = f"line {first + len(done)}, column {column}" if lines > 1 else f"column {column}"
    return f"not UTF-8 (byte 0x{data[e.start]:02x} at {at})"


def _decoded(data: bytes, source: str, first: int, lines: int) -> str | Bad:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        return bad(source, _not_utf8(e, data, first, lines), data.rstrip(b"\r\n"), lines)


# --- the formats ----------------------------------------------------------------------------


def _text_records(f, path: str, columns: Sequence[str], also: Sequence[str]) -> Iterator:
    for n, line in enumerate(_lines(f), 1):
        text = line.rstrip(b"\r\n")
        if not text.strip():
            continue
        checked = _decoded(text, f"{path}:{n}", n, 1)
        yield checked if isinstance(checked, Bad) else Record(f"{path}:{n}", {columns[0]: text})


def _jsonl_records(f, path: str, columns: Sequence[str], also: Sequence[str]) -> Iterator:
    for n, line in enumerate(_lines(f), 1):
        if not line.strip():
            continue
        source = f"{path}:{n}"
        text = _decoded(line, source, n, 1)
        if isinstance(text, Bad):
            yield text
            continue
        text = text.rstrip("\r\n")
        try:
            record = json.loads(text)
        except ValueError as e:  # JSONDecodeError: the column is the line's, as it is one
            reason = f"{e.msg[:1].lower()}{e.msg[1:].removesuffix(' at')} at column {e.colno}"
            yield bad(source, f"not JSON ({reason})", text)
            continue
        if not isinstance(record, dict):
            yield bad(source, f"not a JSON object but {kind_of(record)}", text)
            continue
        missing = [c for c in columns if c not in record]
        if missing:
            has = ", ".join(map(str, record)) or "nothing"
            yield bad(source, f"no {missing[0]!r} field (this one has: {has})", record)
            continue
        for column in (*columns, *also):
            value = record.get(column)
            if isinstance(value, str) and not _unicode(value):
                yield bad(source, f"{column!r} holds a lone surrogate (\\u escape)", record)
                break
        else:
            yield Record(source, record)


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _csv_records(f, path: str, columns: Sequence[str], also: Sequence[str]) -> Iterator:
    csv.field_size_limit(2**31 - 1)  # a review can be megabytes long
    header: list[str] | None = None
    records = _csv_spans(_lines(f))
    for first, last, data, closed in records:
        source, lines = _where(path, first, last), last - first + 1
        fields = _csv_fields(data, source, first, lines)
        shown = data.rstrip(b"\r\n")
        if header is None:  # the first record is the header: without it, the file is skipped
            if isinstance(fields, Bad) or not closed:
                problem = fields.reason if isinstance(fields, Bad) else "a quote is never closed"
                reason = f"the header: {problem}"
            else:
                missing = [c for c in columns if c not in fields]
                has = ", ".join(fields)
                reason = missing and f"no column {missing[0]!r}; its columns are {has}"
            if reason:
                yield bad(source, reason, shown, lines, skipped=sum(1 for _ in records))
                return
            header = fields
        elif isinstance(fields, Bad):
            yield fields
        elif not closed:
            reason = "a quote is never closed: the record runs to the end of the file"
            yield bad(source, reason, shown, lines)
        elif len(fields) != len(header):
            n = len(fields)
            reason = f"{n} column{'s' * (n != 1)}, the header has {len(header)}"
            yield bad(source, reason, fields, lines)
        else:
            yield Record(source, dict(zip(header, fields)), lines)


def _csv_fields(data: bytes, source: str, first: int, lines: int) -> list[str] | Bad:
    """A CSV record's fields as the `csv` module reads them, or why it cannot."""
    text = _decoded(data, source, first, lines)
    if isinstance(text, Bad):
        return text
    try:
        (fields,) = csv.reader([text])
    except (csv.Error, ValueError) as e:  # ValueError: no row, or several
        return bad(source, f"not CSV ({e})", text.rstrip("\r\n"), lines)
    return fields


def _csv_spans(lines: Iterator[bytes]) -> Iterator[tuple[int, int, bytes, bool]]:
    """Each CSV record's first and last line, its bytes, and whether its quotes closed."""
    parts: list[bytes] = []
    quoted, first, n = False, 0, 0
    for n, line in enumerate(lines, 1):
        if not parts:
            if not line.strip():
                continue  # a blank line is no record
            first = n
        parts.append(line)
        quoted = _ends_quoted(line, quoted)
        if not quoted:
            yield first, n, b"".join(parts), True
            parts = []
    if parts:
        yield first, n, b"".join(parts), False


def _ends_quoted(line: bytes, quoted: bool) -> bool:
    """Whether a CSV line ends inside a quoted field, given whether it began in one.

    The `csv` module's rules: a quote opens a quoted field only as the field's first character
    (elsewhere it is text), `""` inside one is a quote, and after the closing quote the field
    goes on unquoted to the next comma.
    """
    i, at_start = 0, True
    while True:
        if quoted:
            j = line.find(b'"', i)
            if j < 0:
                return True
            if line[j + 1 : j + 2] == b'"':
                i = j + 2
                continue
            quoted, at_start, i = False, False, j + 1
        elif at_start and line[i : i + 1] == b'"':
            quoted, i = True, i + 1
        else:
            j = line.find(b",", i)
            if j < 0:
                return False
            i, at_start = j + 1, True


def _parquet_records(f, path: str, columns: Sequence[str], also: Sequence[str]) -> Iterator:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        yield bad(path, f"not Parquet ({e})", "")
        return
    names = table.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        reason = f"no column {missing[0]!r}; its columns are {', '.join(names)}"
        yield bad(f"{path}:1", reason, names, skipped=max(0, table.metadata.num_rows - 1))
        return
    n = 0
    wanted = [c for c in (*columns, *also) if c in names]
    for batch in table.iter_batches(4096, columns=wanted):
        for record in batch.to_pylist():
            n += 1
            source = f"{path}:{n}"
            text = record.get(columns[0])
            checked = _decoded(text, source, n, 1) if isinstance(text, bytes) else None
            yield checked if isinstance(checked, Bad) else Record(source, record)


_READERS = {
    "jsonl": _jsonl_records,
    "csv": _csv_records,
    "parquet": _parquet_records,
    "text": _text_records,
}


def read_records(
    f: BinaryIO,
    path: str,
    fmt: str = "auto",
    columns: Sequence[str] = ("text",),
    also: Sequence[str] = (),
) -> Iterator[Record | Bad]:
    """Every record of one file, in order: a `Record`, or a `Bad` that says where and why.

    Args:
        f: the file, open for reading bytes, decompressed (seekable for Parquet).
        path: its name, for the sources (`path:N`) and, with `fmt="auto"`, its format.
        fmt: `auto` (by the name: `input_format`), `jsonl`, `csv`, `parquet` or `text`.
        columns: the columns every record needs (the first is the text: a plain-text line's
            field); a CSV or Parquet file without them is one `Bad`, with `skipped` set.
        also: other columns to read where present (Parquet reads only those asked for).

    Yields:
        `Record` or `Bad`, one per record of the input.
    """
    reader = _READERS[input_format(path) if fmt == "auto" else fmt]
    yield from reader(f, _writable(path), columns, also)  # a file name's odd bytes: U+FFFD


# --- local files ----------------------------------------------------------------------------

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".lzma": lzma.open}


@contextlib.contextmanager
def open_file(path: str | Path) -> Iterator[BinaryIO]:
    """A local review file open for reading bytes, decompressed by its suffix (`.gz`, `.bz2`,
    `.xz`, `.lzma`, `.deflate`, `.zst`) as Beam's `score` reads it.

    Raises:
        UserError: no such file, or a `.zst` file without the zstandard package.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in _OPENERS:
        with _OPENERS[suffix](path, "rb") as f:
            yield f
    elif suffix == ".deflate":
        yield io.BytesIO(zlib.decompress(path.read_bytes()))
    elif suffix in (".zst", ".zstd"):
        try:
            import zstandard
        except ImportError:
            raise UserError(f"{path}: reading .zst files needs: pip install zstandard") from None
        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as f:
            yield io.BufferedReader(f)
    else:
        with open(path, "rb") as f:
            yield f


def file_records(
    path: str | Path, columns: Sequence[str] = ("text",), also: Sequence[str] = ()
) -> Iterator[Record | Bad]:
    """`read_records` of a local file, opened with `open_file`; sources name it as given."""
    with open_file(path) as f:
        yield from read_records(f, str(path), "auto", columns, also)


# --- rows to score ----------------------------------------------------------------------------


def record_text(record: Record, text_field: str) -> bytes | Bad:
    """A record's text as UTF-8 bytes, or why it has none (a number, null, ...)."""
    text = record.fields[text_field]
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, bytes):
        return text
    return bad(record.source, f"{text_field!r} is {kind_of(text)}, not a string", record.fields)


def scoring_row(record: Record, text_field: str, id_field: str) -> tuple | Bad:
    """A record as `score` keys it: `((id, source), text as UTF-8 bytes)`, or why it cannot be.

    The id is the record's own `id_field`, else its source.
    """
    text = record_text(record, text_field)
    if isinstance(text, Bad):
        return text
    key = record.fields.get(id_field)
    if key is None or key == "":
        key = record.source
    elif isinstance(key, bool) or not isinstance(key, (str, int)):
        reason = f"{id_field!r} is {kind_of(key)}, not a string or an integer"
        return bad(record.source, reason, record.fields)
    return (key, record.source), text


def read_rows(
    f: BinaryIO, path: str, fmt: str = "auto", fields: tuple[str, str] = ("text", "id")
) -> Iterator[tuple | dict]:
    """The rows of one file as `score` sees them: `((id, source), text)` for a good row, the
    error record (`Bad.as_dict`) for a bad one.

    Args:
        f: the file, open for reading bytes (seekable for Parquet).
        path: its name, for the sources (`path:N`) and, with `fmt="auto"`, its format.
        fmt: `auto` (by the name: `input_format`), `jsonl`, `csv`, `parquet` or `text`.
        fields: the names of the text and id fields (JSON keys, CSV or Parquet columns).
    """
    for item in read_records(f, path, fmt, fields[:1], fields[1:]):
        row = item if isinstance(item, Bad) else scoring_row(item, *fields)
        yield row.as_dict() if isinstance(row, Bad) else row

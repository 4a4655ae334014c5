"""The reader of review files (`data/readers.py`): its rules, and its contract checked on random
files: every record comes out exactly once, as a row or as an error naming its lines and why.

The property tests write CSV and JSONL files with quotes, embedded line breaks, stray bytes that
are not UTF-8, BOMs, blank, short and long lines, and count the records they wrote themselves.
"""

import bz2
import csv
import gzip
import io
import json
import lzma
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_sentiment.config import UserError, data_kind, file_format
from keras_sentiment.data.readers import Bad, Record, file_records, read_records, read_rows
from keras_sentiment.data.sources import read_table


def records(data: bytes, path: str = "q.csv", columns=("text",), also=("id",)) -> list:
    return list(read_records(io.BytesIO(data), path, "auto", columns, also))


def test_a_quoted_field_over_lines_is_one_record_that_names_its_lines():
    # The file: the quote on line 6 opens a field that closes on line 7.
    lines = ["text,id", "Good,c1", "Fine,c2", "Nice,c3", "Dull,c4", '"Unclosed quote,c5']
    lines += ['Fine film.",c6', "Last,c7"]
    found = records("\n".join(lines).encode() + b"\n")
    assert [r.source for r in found] == [f"q.csv:{n}" for n in range(2, 6)] + [
        "q.csv:6-7",
        "q.csv:8",
    ]
    assert found[4].fields == {"text": "Unclosed quote,c5\nFine film.", "id": "c6"}
    assert found[4].lines == 2 and all(r.lines == 1 for r in found if r is not found[4])


def test_an_unclosed_quote_at_the_end_is_an_error_for_the_lines_it_swallowed():
    found = records(b'id,text\nc1,ok\nc2,"never closed\nc3,swallowed\n\nc4,too\n')
    assert isinstance(found[0], Record) and len(found) == 2
    assert found[1].source == "q.csv:3-6" and found[1].lines == 4
    assert found[1].reason == "a quote is never closed: the record runs to the end of the file"
    assert "c3,swallowed" in found[1].row and "c4,too" in found[1].row


def test_csv_rules_bom_blank_lines_line_ends_and_field_counts():
    data = b'\xef\xbb\xbfid,text\r\n\r\n  \r\nc1,"a ""quoted"" word"\r\nc2,5"3 inch\r'
    data += b"c3,one,two\nc4\n,no id\n"
    found = records(data)
    assert [r.source for r in found] == ["q.csv:4", "q.csv:5", "q.csv:6", "q.csv:7", "q.csv:8"]
    assert found[0].fields["text"] == 'a "quoted" word'
    assert found[1].fields["text"] == '5"3 inch'  # a quote inside a field is text
    assert found[2].reason == "3 columns, the header has 2" and found[2].row == ["c3", "one", "two"]
    assert found[3].reason == "1 column, the header has 2"
    assert found[4].fields == {"id": "", "text": "no id"}


def test_bytes_that_are_not_utf8_are_an_error_for_their_record_only():
    data = b'id,text\nc1,caf\xe9\nc2,"two\nli\xffnes"\nc\xe93,fine\nc4,good\n'
    found = records(data)
    assert [type(r).__name__ for r in found] == ["Bad", "Bad", "Bad", "Record"]
    assert found[0].reason == "not UTF-8 (byte 0xe9 at column 7)"
    assert found[1].source == "q.csv:3-4"
    assert found[1].reason == "not UTF-8 (byte 0xff at line 4, column 3)"
    assert found[1].row == 'c2,"two\nli\ufffdnes"'  # shown, and writable as JSON
    json.dumps([r.row for r in found[:3]], ensure_ascii=False).encode("utf-8")
    header = records(b"\xffid,text\nc1,a\nc2,b\n")
    assert len(header) == 1 and header[0].skipped == 2 and "header" in header[0].reason


def test_jsonl_messages_name_the_line_and_what_is_wrong():
    data = b'{"id": "a", "text": "fine"}\n\n{"id": "b", "text": "cut he\n[1, 2]\n"text"\n'
    data += b'{"title": "x"}\n{"id": "\\udce9", "text": "x"}\n{"text": "caf\xe9"}\n'
    rows = list(read_rows(io.BytesIO(data), "r.jsonl"))
    assert rows[0] == (("a", "r.jsonl:1"), b"fine")
    reasons = {r["source"]: r["reason"] for r in rows[1:]}
    assert reasons == {
        "r.jsonl:3": "not JSON (unterminated string starting at column 21)",
        "r.jsonl:4": "not a JSON object but an array",
        "r.jsonl:5": "not a JSON object but a string",
        "r.jsonl:6": "no 'text' field (this one has: title)",
        "r.jsonl:7": "'id' holds a lone surrogate (\\u escape)",
        "r.jsonl:8": "not UTF-8 (byte 0xe9 at column 14)",
    }
    json.dumps(rows[1:], ensure_ascii=False).encode("utf-8")  # every error is writable
    odd = "caf\udce9.txt"  # a file name that is not UTF-8, as Python decodes it
    ((key, source), _), *_ = read_rows(io.BytesIO(b"fine\n"), odd)
    assert key == source == "caf\ufffd.txt:1"


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".xz", ".deflate"])
def test_compressed_files_read_as_they_are(tmp_path, suffix):
    import zlib

    data = b'id,text,label\n1,"a\nb",pos\n2,c,neg\n'
    pack = {"": bytes, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
    path = tmp_path / f"r.csv{suffix}"
    path.write_bytes(pack.get(suffix, zlib.compress)(data))
    assert file_format(str(path)) == "csv" and data_kind(str(path)) == "file"
    found = list(file_records(path, ("text", "label")))
    assert [(r.source, r.fields["text"]) for r in found] == [
        (f"{path}:2-3", "a\nb"),
        (f"{path}:4", "c"),
    ]
    split, names = read_table(path)
    assert names == ["neg", "pos"] and split.texts.tolist() == [b"a\nb", b"c"]


def test_parquet_is_a_review_file_for_fit_and_score(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "r.parquet"
    table = {"text": ["good", None, "bad"], "label": ["pos", "neg", "neg"], "x": [1, 2, 3]}
    pq.write_table(pa.table(table), path)
    with open(path, "rb") as f:
        rows = list(read_rows(f, str(path)))
    assert rows[0] == ((f"{path}:1", f"{path}:1"), b"good") and "null" in rows[1]["reason"]
    with pytest.raises(UserError, match=r"r.parquet:2: 'text' is null, not a string"):
        read_table(path)
    pq.write_table(pa.table({"review": ["a", "b"]}), path)
    with pytest.raises(UserError, match="no column 'text'; its columns are review"):
        read_table(path)


def test_one_reader_for_fit_evaluate_and_score(tmp_path, capsys):
    """The same file gives the same rows to `fit` (sources) and to `score` (read_rows)."""
    data = '\ufeffid,text,label\r\n1,"Multi\r\nline, with ""quotes""",pos\r\n\r\n2,été,neg\r\n'
    path = tmp_path / "r.csv"
    path.write_bytes(data.encode())
    split, names = read_table(path)
    said = capsys.readouterr().out
    assert f"{path}: 1 record(s) span several lines" in said and f"first at {path}:2-3" in said
    with open(path, "rb") as f:
        scored = [text for _, text in read_rows(f, str(path))]
    assert split.texts.tolist() == scored == [b'Multi\r\nline, with "quotes"', "été".encode()]
    path.write_bytes(b"id,text,label\n1,a,pos\n2,b,neg,extra\n")
    with pytest.raises(UserError, match=r"^\S*r.csv:3: 4 columns, the header has 3$"):
        read_table(path)
    path.write_bytes(b"text,label\ncaf\xe9,pos\n")
    with pytest.raises(UserError, match=r"r.csv:2: not UTF-8 \(byte 0xe9 at column 4\)"):
        read_table(path)


def test_what_a_data_argument_names(tmp_path):
    (tmp_path / "r.csv").write_text("text,label\n")
    assert data_kind(str(tmp_path / "r.csv")) == "file"
    assert data_kind(str(tmp_path)) == "folder"
    assert data_kind("imdb_reviews") == "tfds" and data_kind("memory:1234") == "memory"
    for missing in ("nope.csv", "nope.parquet", "nope.jsonl.gz", "no/such", "x.txt"):
        assert data_kind(missing) == "missing", missing
    assert [file_format(n) for n in ("a.PQ", "a.ndjson.bz2", "a.csv.zst", "a")] == [
        "parquet",
        "jsonl",
        "csv",
        "text",
    ]


# --- the contract on random files ------------------------------------------------------------

WORDS = st.sampled_from(["good", "bad", "film", "a,b", 'say "hi"', '"', "", " ", "été", "😀"])
BREAKS = st.sampled_from(["\n", "\r\n", "\r"])
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@st.composite
def texts(draw) -> str:
    parts = draw(st.lists(st.one_of(WORDS, BREAKS), max_size=6))
    return "".join(parts)


def _csv_line(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(fields)  # quotes fields with \r or \n
    return out.getvalue().removesuffix("\r\n")


def _breaks(text: str) -> int:
    return len((text + "x").encode().splitlines()) - 1


@st.composite
def csv_files(draw) -> tuple[bytes, list[tuple]]:
    """A CSV file and what it holds: (kind, first line, last line, id, text) per record."""
    end = draw(BREAKS.filter(lambda b: b != "\r"))
    data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + f"id,text,label{end}".encode()
    line, expected = 2, []
    kinds = ["good", "good", "short", "long", "bytes", "literal", "blank"]
    for i in range(draw(st.integers(0, 8))):
        kind, key = draw(st.sampled_from(kinds)), f"r{i}"
        text = draw(texts())
        if kind == "blank":
            data += draw(st.sampled_from(["", " ", "\t "])).encode() + end.encode()
            line += 1
            continue
        fields = {"short": [key, text], "long": [key, text, "pos", "x"]}.get(kind)
        raw = _csv_line(fields or [key, text, "pos"]).encode()
        if kind == "literal":  # a quote inside an unquoted field is text
            text = 'five"3 inch'
            raw = f"{key},{text},pos".encode()
        if kind == "bytes":  # in the id, or at the text's end: where it moves no quote
            at = draw(st.sampled_from([1, len(raw) - len(",pos")]))
            raw = raw[:at] + draw(st.sampled_from([b"\xe9", b"\xff", b"\xc3("])) + raw[at:]
        lines = _breaks(text) if kind != "literal" else 0
        expected.append((kind, line, line + lines, key, text))
        data += raw + end.encode()
        line += lines + 1
    if draw(st.booleans()):  # a quote that never closes swallows the rest of the file
        tail = draw(st.lists(st.sampled_from(["x,y", "", "r99,z,pos"]), max_size=3))
        raw = 'open,"never closed' + "".join(end + t for t in tail)
        data += raw.encode()
        expected.append(("open", line, line + len(raw.splitlines()) - 1, "open", None))
    return data, expected


@PROPERTY
@given(csv_files())
def test_every_csv_record_comes_out_once_as_a_row_or_an_error(case):
    data, expected = case
    found = list(read_records(io.BytesIO(data), "f.csv", "csv", ("text", "label"), ("id",)))
    assert len(found) == len(expected)  # rows + errors = records
    reasons = {"short": "2 columns", "long": "4 columns", "bytes": "not UTF-8", "open": "never"}
    for item, (kind, first, last, key, text) in zip(found, expected):
        assert item.source == (f"f.csv:{first}" if first == last else f"f.csv:{first}-{last}")
        assert item.lines == last - first + 1
        if kind in ("good", "literal"):
            assert isinstance(item, Record) and item.fields["id"] == key
            assert item.fields["text"] == text
        else:
            assert isinstance(item, Bad) and reasons[kind] in item.reason, (kind, item)
            json.dumps(item.as_dict(), ensure_ascii=False).encode("utf-8")
    ids = [i.fields["id"] for i in found if isinstance(i, Record)]
    assert len(ids) == len(set(ids))  # each id once


@st.composite
def jsonl_files(draw) -> tuple[bytes, list[tuple]]:
    """A JSONL file and what it holds: (kind, line, id, text) per record."""
    end = draw(BREAKS.filter(lambda b: b != "\r")).encode()
    data = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    line, expected = 1, []
    kinds = ["good", "good", "cut", "array", "no_text", "number", "bytes", "surrogate", "blank"]
    for i in range(draw(st.integers(0, 10))):
        kind, key = draw(st.sampled_from(kinds)), f"r{i}"
        text = draw(texts())
        raw = json.dumps({"id": key, "text": text}, ensure_ascii=draw(st.booleans())).encode()
        if kind == "blank":
            raw = draw(st.sampled_from([b"", b"  "]))
        elif kind == "cut":  # cut between characters: a cut inside one is not UTF-8
            full = raw.decode()
            raw = full[: draw(st.integers(1, len(full) - 1))].encode()
        elif kind == "array":
            raw = json.dumps([key, text]).encode()
        elif kind == "no_text":
            raw = json.dumps({"id": key, "review": text}).encode()
        elif kind == "number":
            raw = json.dumps({"id": key, "text": 3}).encode()
        elif kind == "bytes":
            raw = raw[:-2] + b"\xff" + raw[-2:]
        elif kind == "surrogate":
            raw = b'{"id": "' + key.encode() + b'", "text": "caf\\udce9"}'
        if kind != "blank":
            expected.append((kind, line, key, text))
        data += raw + end
        line += 1
    return data, expected


@PROPERTY
@given(jsonl_files())
def test_every_jsonl_record_comes_out_once_as_a_row_or_an_error(case):
    data, expected = case
    found = list(read_rows(io.BytesIO(data), "f.jsonl"))
    assert len(found) == len(expected)  # rows + errors = records
    reasons = {"cut": "not JSON", "array": "an array", "no_text": "no 'text' field"}
    reasons |= {"number": "a number", "bytes": "not UTF-8", "surrogate": "lone surrogate"}
    for item, (kind, line, key, text) in zip(found, expected):
        if kind == "good":
            assert item == ((key, f"f.jsonl:{line}"), text.encode())
        else:
            assert item["source"] == f"f.jsonl:{line}" and reasons[kind] in item["reason"]
            json.dumps(item, ensure_ascii=False).encode("utf-8")


@PROPERTY
@given(csv_files())
def test_fit_reads_a_good_file_as_score_does(case):
    data, expected = case
    if any(kind not in ("good", "literal") for kind, *_ in expected) or not expected:
        return
    path = Path("/dev/shm" if Path("/dev/shm").is_dir() else "/tmp") / "ks_reader_property.csv"
    path.write_bytes(data)
    try:
        split, _ = read_table(path)
        with open(path, "rb") as f:
            scored = [text for _, text in read_rows(f, str(path))]
        assert split.texts.tolist() == scored == [t.encode() for *_, t in expected]
    finally:
        path.unlink()

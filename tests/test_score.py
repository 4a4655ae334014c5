"""`score`: files of reviews through RunInference on Beam's local runner.

The row readers (`data/readers.py`) need no Beam; the pipeline tests skip, saying why, where
apache-beam is not installed (it comes with the `test` and `beam` extras).
"""

import csv
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_sentiment.config import UserError
from keras_sentiment.data.readers import input_format, read_rows

from .helpers import run_cli

needs_beam = pytest.mark.skipif(
    importlib.util.find_spec("apache_beam") is None,
    reason='apache-beam is not installed: pip install -e ".[beam]"',
)

# --- the row readers, no Beam ----------------------------------------------------------------


def rows_of(data: bytes, path: str, fmt: str = "auto") -> list:
    return list(read_rows(io.BytesIO(data), path, fmt))


def test_formats_by_name():
    names = ["a.jsonl", "a.JSON", "b.ndjson.gz", "c.csv", "c.csv.bz2", "d.parquet", "e.txt", "f"]
    assert [input_format(n) for n in names] == ["jsonl"] * 3 + ["csv"] * 2 + ["parquet"] + [
        "text"
    ] * 2


def test_jsonl_rows_ids_and_reasons():
    data = b'{"id": "a", "text": "good"}\n\n{"text": "no id"}\nnot json\n[1]\n{"text": 3}\n'
    data += b'{"title": "x"}\n{"id": [1], "text": "t"}\n{"id": 7, "text": "\\u00e9t\\u00e9"}\n'
    data += b'{"text": null}\n\xff\xfe\n'
    rows = rows_of(data, "r.jsonl")
    good = [r for r in rows if isinstance(r, tuple)]
    bad = {r["source"]: r["reason"] for r in rows if isinstance(r, dict)}
    assert good == [(("a", "r.jsonl:1"), b"good"), (("r.jsonl:3", "r.jsonl:3"), b"no id")] + [
        ((7, "r.jsonl:9"), "été".encode())
    ]
    assert bad["r.jsonl:4"].startswith("not JSON") and "array" in bad["r.jsonl:5"]
    assert bad["r.jsonl:6"] == "'text' is a number, not a string"
    assert bad["r.jsonl:7"] == "no 'text' field (this one has: title)"
    assert "'id' is an array" in bad["r.jsonl:8"]
    assert bad["r.jsonl:10"] == "'text' is null, not a string"
    assert bad["r.jsonl:11"] == "not UTF-8 (byte 0xff at column 1)"
    assert len(rows) == 10  # the blank line is no row


def test_csv_rows_count_lines_and_columns():
    data = b'id,text\nc1,"two\nlines"\n\nc2,fine\nc3,too,many\n,"no id"\n'
    rows = rows_of(data, "r.csv")
    assert rows[0] == (("c1", "r.csv:2-3"), b"two\nlines")  # the lines it spans
    assert rows[1] == (("c2", "r.csv:5"), b"fine")
    assert rows[2]["source"] == "r.csv:6" and rows[2]["reason"] == "3 columns, the header has 2"
    assert rows[2]["row"] == ["c3", "too", "many"] and rows[3] == (("r.csv:7", "r.csv:7"), b"no id")
    (skipped,) = rows_of(b"a,b\n1,2\n3,4\n", "x.csv")
    assert skipped["source"] == "x.csv:1" and skipped["reason"] == (
        "no column 'text'; its columns are a, b; the file's other 2 record(s) are skipped"
    )


def test_text_rows_skip_blank_lines_and_bytes_that_are_not_utf8_are_errors():
    rows = rows_of(b"good one\r\n\n  \n\xff bad utf-8\nlast", "r.txt")
    assert [r[1] for r in rows if isinstance(r, tuple)] == [b"good one", b"last"]
    assert [r[0][0] for r in rows if isinstance(r, tuple)] == ["r.txt:1", "r.txt:5"]
    assert rows[1] == {
        "source": "r.txt:4",
        "reason": "not UTF-8 (byte 0xff at column 1)",
        "row": "\ufffd bad utf-8",
    }


# --- the pipeline ------------------------------------------------------------------------------

TEXTS = [
    "A wonderful film, the acting was brilliant.",
    "Boring story, dreadful music.",
    "Great story, beautiful music!",
    "I hated every minute.",
    "",
    "Fantastic cast, perfect ending. " * 40,
]


def write_inputs(folder: Path) -> tuple[dict, dict]:
    """One file of each format with good and bad rows: {id: text} and {source: reason part}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    lines = [json.dumps({"id": f"j{i}", "text": t}) for i, t in enumerate(TEXTS[:3])]
    lines += [json.dumps({"text": TEXTS[3]}), "{not json", '{"id": "j9", "text": 9}', "{}"]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    with open(folder / "b.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], [11, TEXTS[4]], ["c2", TEXTS[5]], ["x", "y", "z"]])
    pq.write_table(pa.table({"id": [21, 22], "text": [TEXTS[0], None]}), folder / "c.parquet")
    (folder / "d.txt").write_text(f"{TEXTS[1]}\n\n{TEXTS[2]}\n")
    good = {"j0": TEXTS[0], "j1": TEXTS[1], "j2": TEXTS[2], f"{folder}/a.jsonl:4": TEXTS[3]}
    good |= {"11": TEXTS[4], "c2": TEXTS[5], 21: TEXTS[0]}
    good |= {f"{folder}/d.txt:1": TEXTS[1], f"{folder}/d.txt:3": TEXTS[2]}
    bad = {"a.jsonl:5": "not JSON", "a.jsonl:6": "'text' is a number", "a.jsonl:7": "no 'text'"}
    bad |= {"b.csv:4": "3 columns, the header has 2", "c.parquet:2": "'text' is null"}
    return good, bad


def read_output(out: Path, pattern: str) -> list[dict]:
    return [json.loads(x) for p in sorted(out.glob(pattern)) for x in p.read_text().splitlines()]


@needs_beam
def test_score_every_format_once_as_the_predictor_does(tiny_run, tiny_predictor, tmp_path):
    import keras_sentiment as ks

    good, bad = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    counts = ks.score(tiny_run["base"], str(tmp_path / "in"), str(out))
    rows, errors = read_output(out, "predictions-*.jsonl"), read_output(out, "errors-*.jsonl")
    assert sorted(map(str, (r["id"] for r in rows))) == sorted(map(str, good))  # each once
    assert len(rows) == len(good) and {r["id"] for r in rows} == set(good)  # ids as given
    expected = tiny_predictor([good[r["id"]] for r in rows])
    got = np.array([[r["probabilities"][c] for c in tiny_predictor.class_names] for r in rows])
    np.testing.assert_allclose(got, expected["probabilities"], atol=1e-6, rtol=0)
    assert [r["label"] for r in rows] == list(expected["label"])
    assert [r["label_id"] for r in rows] == list(expected["label_id"])
    reasons = {e["source"].split("/")[-1]: e["reason"] for e in errors}
    assert set(reasons) == set(bad) and all(bad[k] in reasons[k] for k in bad), reasons
    assert all(e["row"] is not None for e in errors)
    assert (counts["read"], counts["scored"], counts["failed"]) == (14, 9, 5)
    assert json.loads((out / "_SUCCESS").read_text())["scored"] == 9

    # A second run into the same OUTPUT is refused and leaves it as it was.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="already exists and is not empty"):
        ks.score(tiny_run["base"], str(tmp_path / "in" / "*.txt"), str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@needs_beam
def test_user_errors_before_any_pipeline(tiny_run, tmp_path):
    from keras_sentiment.scoring.beam import score_files

    model = str(tiny_run["base"])
    (tmp_path / "r.txt").write_text("fine\n")
    with pytest.raises(UserError, match="no file matches"):
        score_files(model, str(tmp_path / "nothing*.jsonl"), str(tmp_path / "o1"))
    with pytest.raises(UserError, match="unknown option --runer"):
        score_files(
            model, str(tmp_path / "r.txt"), str(tmp_path / "o2"), pipeline_args=["--runer=x"]
        )
    with pytest.raises(UserError, match="no such model"):
        score_files(str(tmp_path / "no_model"), str(tmp_path / "r.txt"), str(tmp_path / "o3"))
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def stub_model(path: Path, explain: bool = True) -> Path:
    """A SavedModel with `serving_default` and an `explain` signature as
    `serving/explanation.py` specifies them (tokens padded with "", one attribution per token),
    scoring by text length."""
    import tensorflow as tf

    class Stub(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            p = tf.sigmoid(tf.cast(tf.strings.length(text), tf.float32) / 10.0 - 2.0)
            probabilities = tf.stack([1.0 - p, p], axis=1)
            label_id = tf.argmax(probabilities, 1, output_type=tf.int32)
            names = tf.constant(["neg", "pos"])
            classes = tf.tile(names[None, :], [tf.shape(text)[0], 1])
            label = tf.gather(names, label_id)
            return {"probabilities": probabilities, "label_id": label_id, "label": label,
                    "classes": classes}  # fmt: skip

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def explain(self, text):
            tokens = tf.strings.split(text).to_tensor("")
            weights = tf.cast(tf.strings.length(tokens), tf.float32) / 10.0
            scores = tf.reduce_sum(weights, 1)
            return {**self.serve(text), "tokens": tokens, "attributions": weights,
                    "score": scores, "baseline_score": tf.zeros_like(scores)}  # fmt: skip

    stub = Stub()
    signatures = {"serving_default": stub.serve, "explain": stub.explain}
    if not explain:
        del signatures["explain"]
    tf.saved_model.save(stub, str(path), signatures=signatures)
    return path


@pytest.mark.slow
@needs_beam
def test_explain_and_parquet_output(tiny_run, tiny_predictor, tmp_path, capsys):
    import pyarrow.parquet as pq

    from keras_sentiment.scoring.beam import score_files

    data = tmp_path / "r.jsonl"
    data.write_text('{"id": "a", "text": "so very good"}\n{"id": "b", "text": "bad"}\n')
    model = stub_model(tmp_path / "stub")
    score_files(str(model), str(data), str(tmp_path / "o1"), explain=True)
    rows = {r["id"]: r for r in read_output(tmp_path / "o1", "predictions-*.jsonl")}
    assert rows["a"]["words"] == ["so", "very", "good"] and rows["b"]["words"] == ["bad"]
    assert rows["a"]["attributions"] == [0.2, 0.4, 0.4] and rows["b"]["label"] == "neg"

    # Asked of a model without the signature: a notice, and rows without explanations.
    plain = stub_model(tmp_path / "plain", explain=False)
    score_files(str(plain), str(data), str(tmp_path / "o3"), explain=True)
    assert "has no explain signature" in capsys.readouterr().err
    assert all("words" not in r for r in read_output(tmp_path / "o3", "predictions-*.jsonl"))

    # Parquet output, with the explanations of a real export (every export has `explain`).
    model = tiny_run["version"]
    score_files(str(model), str(data), str(tmp_path / "o2"), explain=True, output_format="parquet")
    (part,) = (tmp_path / "o2").glob("predictions-*.parquet")
    table = pq.read_table(part).to_pylist()
    assert sorted(r["id"] for r in table) == ["a", "b"]
    assert set(table[0]["probabilities"]) == {"neg", "pos"}
    assert all(r["words"] and len(r["words"]) == len(r["attributions"]) for r in table)
    known = tiny_predictor(["so very good", "bad"])["known_words"].tolist()  # as in JSONL rows
    assert [r["known_words"] for r in sorted(table, key=lambda r: r["id"])] == known


@pytest.mark.slow
@needs_beam
def test_the_command_as_a_user_runs_it(tiny_run, tmp_path):
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    args = ["score", str(tiny_run["base"]), str(data), str(tmp_path / "out"), "--num-shards=2"]
    done = run_cli(*args, "--direct_num_workers=1")
    assert done.returncode == 0, done.stderr
    assert "6 rows read, 6 scored, 0 failed" in done.stdout.splitlines()[-1]
    assert len(list((tmp_path / "out").glob("predictions-*-of-00002.jsonl"))) == 2
    assert sorted(r["id"] for r in read_output(tmp_path / "out", "predictions-*")) == list(range(6))
    before = sorted(os.listdir(tmp_path / "out"))
    again = run_cli(*args)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "already exists" in again.stderr and sorted(os.listdir(tmp_path / "out")) == before


@needs_beam
def test_bytes_that_are_not_utf8_are_errors_never_a_crash(tiny_run, tmp_path, capsys):
    """A byte that is not UTF-8 in an id, or in a row that goes to `errors`, once crashed the
    pipeline while writing (surrogates cannot be encoded) and left `beam-temp-*` in OUTPUT.
    A quoted field over two lines is one row that says so, in the summary and `_SUCCESS`."""
    import keras_sentiment as ks

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "latin1.csv").write_bytes(
        b"id,text\ncaf\xe9,Great film.\nc2,Dull.\nc3,caf\xe9,extra\nc4,Fine.\n"
    )
    lines = ["text,id", "Good,c1", "Fine,c2", "Nice,c3", "Dull,c4", '"Unclosed quote,c5']
    (folder / "q.csv").write_text("\n".join([*lines, 'Fine film.",c6', "Last,c7"]) + "\n")
    out = tmp_path / "out"
    counts = ks.score(tiny_run["base"], str(folder), str(out))
    rows, errors = read_output(out, "predictions-*.jsonl"), read_output(out, "errors-*.jsonl")
    assert sorted(r["id"] for r in rows) == ["c1", "c2", "c2", "c3", "c4", "c4", "c6", "c7"]
    assert sorted(e["source"].split("/")[-1] for e in errors) == ["latin1.csv:2", "latin1.csv:4"]
    assert all("not UTF-8" in e["reason"] and "\ufffd" in str(e["row"]) for e in errors)
    assert (counts["read"], counts["scored"], counts["failed"]) == (10, 8, 2)
    assert counts["multiline"] == 1 and not list(out.glob("beam-temp-*"))
    done = json.loads((out / "_SUCCESS").read_text())
    assert done["multiline"] == 1 and done["multiline_sources"] == [f"{folder}/q.csv:6-7"]
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "10 rows read, 8 scored, 2 failed" in summary
    assert f"(1 over several lines: a quoted field with line breaks, e.g. {folder}/q.csv:6-7)" in (
        summary
    )


@needs_beam
def test_a_failed_run_leaves_output_as_it_found_it(tiny_run, tmp_path, monkeypatch):
    """A failure in the middle of the pipeline: no `beam-temp-*`, no shards, no `_SUCCESS`, and
    OUTPUT new or empty as it was; the same command then runs."""
    import keras_sentiment as ks
    from keras_sentiment.scoring import beam as scoring

    data = tmp_path / "r.jsonl"
    ids = ["a", "b", "boom", "c"]
    data.write_text("".join(json.dumps({"id": i, "text": f"film {i}"}) + "\n" for i in ids))
    data.open("a").write("not json\n")  # an `errors` shard is written too
    out = tmp_path / "out"
    real = scoring._json_line

    def fails_on_boom(record: dict) -> str:
        if record.get("id") == "boom":
            raise RuntimeError("injected failure")
        return real(record)

    monkeypatch.setattr(scoring, "_json_line", fails_on_boom)
    with pytest.raises(Exception, match="injected failure"):
        ks.score(tiny_run["base"], str(data), str(out))
    assert not out.exists()  # it was new
    out.mkdir()
    with pytest.raises(Exception, match="injected failure"):
        ks.score(tiny_run["base"], str(data), str(out))
    assert os.listdir(out) == []  # it was empty
    assert scoring._check_paths(str(data), str(out)) == (str(data), True)  # the rerun may go


@pytest.mark.slow
@needs_beam
def test_two_worker_processes_score_as_one_process(
    tiny_run, tiny_data, tmp_path, capfd, monkeypatch
):
    """`--direct_num_workers 2 --direct_running_mode multi_processing`: the same rows as one
    process, row for row, both workers scoring, and a progress line that counts their work."""
    import keras_sentiment as ks

    folder = tmp_path / "in"
    folder.mkdir()
    texts = tiny_data[0][:300]
    lines = [json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)]
    (folder / "a.jsonl").write_text("\n".join(lines[:150] + ["{cut", *lines[150:]]) + "\n")
    (folder / "b.csv").write_text('id,text\nm1,"two\nlines"\nm2,fine,extra\n')
    one = ks.score(tiny_run["base"], str(folder), str(tmp_path / "one"))
    capfd.readouterr()
    # The progress line as a terminal shows it: its last state when the run ends.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    options = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    two = ks.score(tiny_run["base"], str(folder), str(tmp_path / "two"), pipeline_args=options)
    shown = capfd.readouterr().err  # the worker processes' stderr too
    progress = shown.split("\r")[-1]

    def rows(out: str) -> list[dict]:
        return sorted(read_output(tmp_path / out, "predictions-*.jsonl"), key=lambda r: r["id"])

    assert len(rows("one")) == len(rows("two")) == 301
    for a, b in zip(rows("one"), rows("two")):
        assert a["id"] == b["id"] and a["label"] == b["label"], (a, b)
        for c in a["probabilities"]:  # other batches, other padding: float noise at most
            assert abs(a["probabilities"][c] - b["probabilities"][c]) < 1e-5
    errors = [
        sorted(e["source"] for e in read_output(tmp_path / o, "errors-*")) for o in ("one", "two")
    ]
    assert errors[0] == errors[1] and len(errors[0]) == 2
    assert (
        {k: one[k] for k in ("read", "scored", "failed", "multiline")}
        == {k: two[k] for k in ("read", "scored", "failed", "multiline")}
        == {"read": 303, "scored": 301, "failed": 2, "multiline": 1}
    )
    assert progress.startswith("score: 303 rows read, 301 scored, 2 failed, 1 over several lines")
    assert "2 worker processes" in progress, progress
    assert "INFO" not in shown and "WARNING" not in shown, shown  # the workers are quiet


@pytest.mark.slow
@needs_beam
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stopped_command_leaves_output_as_it_found_it(tiny_run, tmp_path, stop):
    """Ctrl-C or `kill` while the pipeline runs: exit 130, one line, OUTPUT new again."""
    import signal
    import subprocess
    import time

    from .helpers import ROOT

    data = tmp_path / "many.txt"
    data.write_text("A wonderful film, the acting was brilliant.\n" * 400_000)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "keras_sentiment", "score", str(tiny_run["base"]), str(data)]
    run = subprocess.Popen([*argv, str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and os.listdir(out)) and time.monotonic() < deadline:
        time.sleep(0.2)  # the writers' beam-temp-* folders: the pipeline runs
    time.sleep(2)
    assert run.poll() is None, "the run ended before it could be stopped: give it more rows"
    run.send_signal(getattr(signal, stop))
    err = run.communicate(timeout=120)[1]
    assert run.returncode == 130, err
    assert not out.exists(), os.listdir(out)
    assert "left as it was (not there)" in err and "Traceback" not in err, err

"""TF Serving layout: versions, atomic writes, warm-up records, models.config, signature."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

import keras_sentiment as ks
from keras_sentiment.cli import main
from keras_sentiment.records import RunRecord, versions
from keras_sentiment.serving.saved_model import models_config, served_before

from .helpers import ROOT, run_cli, run_python


@pytest.fixture
def copied_run(tiny_run, tmp_path) -> dict:
    """A copy of the tiny run's folders, for tests that add versions: the session's stays."""
    shutil.copytree(tiny_run["work"] / "runs", tmp_path / "runs")
    shutil.copytree(tiny_run["work"] / "saved_models", tmp_path / "saved_models")
    return {
        "work": tmp_path,
        "base": tmp_path / "saved_models" / "tiny",
        "version": tmp_path / "saved_models" / "tiny" / "1",
        "run_dir": tmp_path / "runs" / "tiny" / "1",
        "args": [
            "--name",
            "tiny",
            "--output-dir",
            str(tmp_path / "saved_models"),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],  # fmt: skip
    }


SAVED_MODEL_CLI = shutil.which("saved_model_cli") or os.path.join(
    os.path.dirname(sys.executable), "saved_model_cli"
)


def test_served_graph_is_plain_tensorflow(tiny_run):
    # Training compiles the LSTM with XLA; serving must not need XLA or cuDNN kernels.
    graph = (tiny_run["version"] / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" not in graph and b"XlaLaunch" not in graph
    assert b"CudnnRNN" not in graph and b"While" in graph


@pytest.mark.slow
def test_signature_via_saved_model_cli(tiny_run):
    shown = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", str(tiny_run["version"]), "--all"],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr[-1000:]
    out = shown.stdout
    serving = out[out.index("signature_def['serving_default']") :]
    assert re.search(r"inputs\['text'\].*?dtype: DT_STRING.*?shape: \(-1\)", serving, re.S)
    assert re.search(r"outputs\['probabilities'\].*?DT_FLOAT.*?shape: \(-1, 2\)", serving, re.S)
    assert re.search(r"outputs\['label'\].*?DT_STRING.*?shape: \(-1\)", serving, re.S)
    assert re.search(r"outputs\['label_id'\].*?DT_INT32", serving, re.S)
    assert "CudnnRNN" not in out
    # Running it is test_end_to_end.test_savedmodel_scores_raw_reviews_without_the_package.


def test_warmup_file_parses_with_serving_protos(tiny_run):
    from tensorflow_serving.apis import prediction_log_pb2

    path = tiny_run["version"] / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    requests = [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request for r in records]
    signatures = [r.model_spec.signature_name for r in requests]
    assert signatures == ["serving_default"] * 2 + ["explain"] * 2
    texts = [tf.make_ndarray(r.inputs["text"]) for r in requests]
    # A batch and a single review: the served graph has a path for each.
    assert len(texts[0]) == 3 and texts[0][-1] == b"" and texts[1].tolist() == texts[0][:1].tolist()
    assert [t.tolist() for t in texts[2:]] == [t.tolist() for t in texts[:2]]
    # Each request is one the export answers (as TF Serving replays them at load).
    served = tf.saved_model.load(str(tiny_run["version"])).signatures
    for signature, batch in zip(signatures, texts):
        assert served[signature](text=tf.constant(batch))["label"].shape == (len(batch),)


def test_export_help_lists_only_what_export_uses():
    text = run_cli("export", "--help").stdout
    assert "--name" in text and "--models-config" in text and "--batching-parameters" in text
    assert "--lstm-units" not in text and "--epochs" not in text


def test_a_second_export_is_version_2_and_the_server_files(copied_run):
    base, work = copied_run["base"], copied_run["work"]
    first = sorted(p.name for p in copied_run["version"].rglob("*"))
    path = ks.export(
        name="tiny", runs_dir=str(work / "runs"), output_dir=str(work / "saved_models"),
        models_config=True, batching=True,
    )  # fmt: skip
    assert path == base / "2" and versions(base) == [1, 2]
    # TF Serving's BatchingParameters text format, with values from timing version 2.
    batching = (base / "batching_parameters.txt").read_text()
    values = dict(re.findall(r"^(\w+) \{ value: (\d+) \}$", batching, re.M))
    assert set(values) == {
        "max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"
    }  # fmt: skip
    assert int(values["max_batch_size"]) in (1, 8, 32, 64, 128, 256, 512)
    assert int(values["num_batch_threads"]) == os.cpu_count()
    assert re.search(r"reviews/s by batch size 1: \d+, 8: \d+", batching)
    assert sorted(p.name for p in copied_run["version"].rglob("*")) == first  # v1 untouched
    # models.config lies where the README's Docker command reads it: saved_models/ mounted
    # at /models, so /models/models.config, naming /models/NAME.
    text = (work / "saved_models" / "models.config").read_text()
    assert "model_config_list" in text and "name: 'tiny'" in text
    assert "base_path: '/models/tiny'" in text
    extra = base / "2" / "assets.extra"
    meta = json.loads((extra / "metadata.json").read_text())
    assert meta["version"] == 2
    assert "version 2" in (extra / "MODEL_CARD.md").read_text()
    assert json.loads((extra / "config.json").read_text())["name"] == "tiny"


def test_the_server_files_alone_export_no_new_version(copied_run, monkeypatch, capsys):
    from keras_sentiment.serving import saved_model

    work, base = copied_run["work"], copied_run["base"]
    assert main(["export", *copied_run["args"], "--models-config", "--files-only"]) == 0
    assert (
        versions(base) == [1]
        and "name: 'tiny'" in (work / "saved_models" / "models.config").read_text()
    )
    timed = []
    monkeypatch.setattr(
        saved_model, "batching_parameters", lambda path, texts: timed.append(path) or "# timed\n"
    )
    out = str(work / "saved_models")
    written = ks.export(name="tiny", output_dir=out, batching=True, files_only=True)
    assert written == base / "batching_parameters.txt"
    assert timed == [base / "1"] and (base / "batching_parameters.txt").read_text() == "# timed\n"
    assert versions(base) == [1]
    with pytest.raises(ks.UserError, match="models_config=True or batching=True"):
        ks.export(name="tiny", output_dir=out, files_only=True)
    with pytest.raises(ks.UserError, match="no exported version of 'nope'"):
        ks.export(name="nope", output_dir=out, batching=True, files_only=True)
    # models.config lists every model there: any name will do.
    written = ks.export(name="nope", output_dir=out, models_config=True, files_only=True)
    assert written == work / "saved_models" / "models.config"
    assert main(["export", *copied_run["args"], "--files-only"]) == 2
    assert "--models-config or --batching-parameters" in capsys.readouterr().err


@pytest.mark.slow
def test_export_command_writes_models_config_beside_the_models(copied_run):
    work = copied_run["work"]
    (work / "saved_models" / "other" / "3").mkdir(parents=True)  # a second served model
    done = run_cli("export", *copied_run["args"], "--models-config", "--base-path-prefix", "")
    assert done.returncode == 0, done.stderr[-2000:]
    text = (work / "saved_models" / "models.config").read_text()
    assert f"base_path: '{(work / 'saved_models' / 'tiny').resolve()}'" in text
    assert "name: 'other'" in text and text.count("config {") == 2
    assert versions(copied_run["base"]) == [1, 2]
    assert not (work / "models.config").exists() and not (ROOT / "models.config").exists()


def test_models_config_several_models():
    text = models_config({"a": "/models/a", "b": "/models/b"})
    assert text.count("config {") == 2 and "model_platform: 'tensorflow'" in text


KILLED_EXPORT = r"""
import os, signal, sys
import keras_sentiment
from keras_sentiment.serving import saved_model
from keras_sentiment.network.model import load_run_model
from keras_sentiment.records import RunRecord
pre, model, mix = load_run_model(__import__("pathlib").Path(sys.argv[1]))
# Die the hard way after the SavedModel is written but before it is renamed into place.
saved_model.write_warmup = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
saved_model.export_saved_model(pre, model, ["neg", "pos"], sys.argv[2], RunRecord(), mix=mix)
"""


@pytest.mark.slow
def test_export_killed_half_way_leaves_no_partial_version(copied_run):
    base = copied_run["work"] / "models" / "tiny"
    done = run_python(KILLED_EXPORT, copied_run["run_dir"], base)
    assert done.returncode == -9, done.stderr[-2000:]
    assert versions(base) == []
    leftovers = [p for p in base.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers and (leftovers[0] / "saved_model.pb").is_file()  # it was killed mid-way
    # The next export cleans the dead exporter's folder and takes version 1.
    args = copied_run["args"]
    args[args.index("--output-dir") + 1] = str(copied_run["work"] / "models")
    assert main(["export", *args]) == 0
    assert versions(base) == [1] and not list(base.glob(".tmp-*"))


@pytest.fixture(scope="module")
def tiny_model(tiny_run):
    from keras_sentiment.network.model import split_text_model

    return split_text_model(tiny_run["run"].model)


@pytest.fixture
def quick_graph(monkeypatch):
    """The SavedModel itself replaced by a placeholder file: these tests are about the
    version folders around it, and tracing the real graph costs seconds each time."""
    from keras_sentiment.serving import saved_model as export

    def write(folder, *args):
        (folder / "saved_model.pb").write_bytes(b"placeholder")

    monkeypatch.setattr(export, "_write_graph", write)


def test_exporters_never_collide(tiny_model, tmp_path, monkeypatch, quick_graph):
    from keras_sentiment.serving import saved_model as export

    pre, model, mix = tiny_model
    base = tmp_path / "m"

    def write(run_dir, version=None):
        record = RunRecord(run_dir=run_dir)
        return export.export_saved_model(
            pre, model, ["neg", "pos"], base, record, version=version, mix=mix
        )

    assert write("runs/a/1", version=1) == base / "1"
    stamp = (base / "1" / "saved_model.pb").stat().st_mtime_ns
    # A kill after the rename: the same run finds its export in place and keeps it.
    assert write("runs/a/1", version=1) == base / "1"
    assert (base / "1" / "saved_model.pb").stat().st_mtime_ns == stamp
    # Another exporter took our number: the next free one, never an error.
    assert write("runs/b/1", version=1) == base / "2"
    # A racing exporter saw version 2 as free: its rename is refused and it takes 3.
    real, stale = export.next_version, iter([2])
    monkeypatch.setattr(export, "next_version", lambda b: next(stale, None) or real(b))
    assert write("runs/c/1") == base / "3"
    assert versions(base) == [1, 2, 3]
    meta = json.loads((base / "3" / "assets.extra" / "metadata.json").read_text())
    assert meta["version"] == 3 and meta["path"] == str(base / "3")


def test_stale_temporaries_are_judged_by_host_and_pid(tiny_model, tmp_path, quick_graph):
    from keras_sentiment.serving import saved_model as export

    dead = run_python("import os; print(os.getpid())").stdout.strip()
    base = tmp_path / "m"
    mine = base / f".tmp-{export._host()}-{dead}-abc"
    other_host = base / f".tmp-otherhost-{dead}-abc"
    for folder in (mine, other_host):
        folder.mkdir(parents=True)
    pre, model, mix = tiny_model
    export.export_saved_model(pre, model, ["neg", "pos"], base, RunRecord(), mix=mix)
    assert not mine.exists()  # this host's exporter is gone: its leftovers go
    assert other_host.is_dir()  # another host's PID says nothing here: kept


def test_an_empty_request_gets_an_empty_answer(tiny_run):
    from keras_sentiment.serving.prediction import SavedModelPredictor

    serve = tf.saved_model.load(str(tiny_run["version"])).signatures["serving_default"]
    out = serve(text=tf.constant([], tf.string))
    assert out["probabilities"].shape == (0, 2) and out["label"].shape == (0,)
    assert out["classes"].shape == (0, 2)
    assert SavedModelPredictor(tiny_run["version"])([])["probabilities"].shape == (0, 2)


def test_predict_reads_nothing_and_answers_nothing(tiny_run, monkeypatch, capsys):
    import io

    from keras_sentiment.cli import main

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["predict", str(tiny_run["version"])]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_export_reads_runs_from_before_model_keras_took_raw_text(tiny_run, tiny_model, tmp_path):
    # Such a run's model.keras is the token-id network; its preprocessor.json lies beside it.
    pre, network, _ = tiny_model  # such runs had no n-gram branch
    old = tmp_path / "runs" / "tiny" / "1"
    shutil.copytree(tiny_run["run_dir"], old)
    network.save(old / "model.keras")
    out = ["--name", "tiny", "--runs-dir", str(tmp_path / "runs")]
    assert main(["export", *out, "--output-dir", str(tmp_path / "models")]) == 0
    texts = tf.constant(["A wonderful film.", "Dull and far too long.", ""])
    served = tf.saved_model.load(str(tmp_path / "models" / "tiny" / "1"))
    answer = served.signatures["serving_default"](text=texts)["probabilities"]
    assert abs(answer - network(pre(texts), training=False)).numpy().max() <= 1e-5


def test_the_closing_lines_say_what_differs_between_test_splits(tmp_path):
    def version(n: int, seed: int, accuracy: float, max_test: int = 0) -> RunRecord:
        meta = {
            "metrics": {"accuracy": accuracy},
            "config": {"dataset": "toy.csv", "seed": seed, "max_test": max_test},
            "dataset": {"source": "file:toy.csv (test: stratified 20% held out)", "test": 10},
            "run_dir": f"runs/toy_lstm/{n}",
        }
        (tmp_path / str(n) / "assets.extra").mkdir(parents=True)
        (tmp_path / str(n) / "assets.extra" / "metadata.json").write_text(json.dumps(meta))
        return RunRecord.from_dict(meta)

    version(1, seed=1337, accuracy=0.9)
    # Another seed holds out another test split: not comparable, and it says why.
    lines = served_before(tmp_path, 2, version(2, seed=2, accuracy=0.8))
    assert "another test split (seed 1337 vs 2)" in lines[0] and "not comparable" in lines[0]
    assert str(tmp_path / "2") in lines[1]
    # The same split, a lower score: a warning with the way back.
    lines = served_before(tmp_path, 3, version(3, seed=2, accuracy=0.7))
    assert lines[0].startswith("warning: version 3 scores 0.7000 on the test split, below")
    # A cut test split says so.
    lines = served_before(tmp_path, 4, version(4, seed=2, accuracy=0.9, max_test=5))
    assert "(max_test 0 vs 5)" in lines[0]
    assert served_before(tmp_path, 5, version(5, seed=2, accuracy=0.95, max_test=5)) == [
        "version 5: 0.9500 on the test split; version 4 had 0.9000"
    ]

"""TF Serving layout: versions, atomic writes, warm-up records, models.config, signature."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from keras_sentiment.config import versions
from keras_sentiment.export import models_config

from .conftest import ROOT, run_cli

SAVED_MODEL_CLI = shutil.which("saved_model_cli") or os.path.join(
    os.path.dirname(sys.executable), "saved_model_cli"
)


def test_served_graph_is_plain_tensorflow(imdb_run):
    # Training compiles the LSTM with XLA; serving must not need XLA or cuDNN kernels.
    graph = (imdb_run["version"] / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" not in graph and b"XlaLaunch" not in graph
    assert b"CudnnRNN" not in graph and b"While" in graph


def test_signature_via_saved_model_cli(imdb_run):
    shown = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", str(imdb_run["version"]), "--all"],
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
    ran = subprocess.run(
        [SAVED_MODEL_CLI, "run", "--dir", str(imdb_run["version"]), "--tag_set", "serve",
         "--signature_def", "serving_default",
         "--input_exprs", "text=['a great film', 'a dreadful bore', '']"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-1000:]
    assert "probabilities" in ran.stdout and re.search(r"b'(neg|pos)'", ran.stdout)


def test_warmup_file_parses_with_serving_protos(imdb_run):
    from tensorflow_serving.apis import prediction_log_pb2

    path = imdb_run["version"] / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    requests = [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request for r in records]
    assert [r.model_spec.signature_name for r in requests] == ["serving_default"] * 2
    texts = [tf.make_ndarray(r.inputs["text"]) for r in requests]
    # A batch and a single review: the served graph has a path for each.
    assert len(texts[0]) == 3 and texts[0][-1] == b"" and texts[1].tolist() == texts[0][:1].tolist()


def export_args(imdb_run) -> list[str]:
    """The tiny run's --name, --output-dir and --runs-dir: all that export takes."""
    argv = imdb_run["argv"]
    flags = ("--name", "--output-dir", "--runs-dir")
    return [x for flag in flags for x in (flag, argv[argv.index(flag) + 1])]


def test_export_help_lists_only_what_export_uses():
    text = run_cli("export", "--help").stdout
    assert "--name" in text and "--models-config" in text and "--batching-parameters" in text
    assert "--lstm-units" not in text and "--epochs" not in text


def test_second_export_is_version_2_and_models_config(imdb_run, tmp_path):
    first = sorted(p.name for p in imdb_run["version"].rglob("*"))
    config_path = tmp_path / "models.config"
    args = export_args(imdb_run)
    done = run_cli("export", *args, "--models-config", str(config_path), "--batching-parameters")
    assert done.returncode == 0, done.stderr[-2000:]
    assert versions(imdb_run["base"]) == [1, 2]
    # TF Serving's BatchingParameters text format, with values from timing version 2.
    batching = (imdb_run["base"] / "batching_parameters.txt").read_text()
    values = dict(re.findall(r"^(\w+) \{ value: (\d+) \}$", batching, re.M))
    assert set(values) == {
        "max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"
    }  # fmt: skip
    assert int(values["max_batch_size"]) in (1, 8, 32, 64, 128, 256, 512)
    assert int(values["num_batch_threads"]) == os.cpu_count()
    assert re.search(r"reviews/s by batch size 1: \d+, 8: \d+", batching)
    assert sorted(p.name for p in imdb_run["version"].rglob("*")) == first  # v1 untouched
    text = config_path.read_text()
    assert "model_config_list" in text and "name: 'tiny'" in text
    assert "base_path: '/models/tiny'" in text  # as the README's Docker mount shows it
    local = run_cli("export", *args, "--models-config", str(config_path), "--base-path-prefix", "")
    assert local.returncode == 0, local.stderr[-2000:]
    assert f"base_path: '{imdb_run['base'].resolve()}'" in config_path.read_text()
    extra = imdb_run["base"] / "2" / "assets.extra"
    meta = json.loads((extra / "metadata.json").read_text())
    assert meta["version"] == 2
    assert "version 2" in (extra / "MODEL_CARD.md").read_text()
    assert json.loads((extra / "config.json").read_text())["name"] == "tiny"


def test_models_config_several_models():
    text = models_config({"a": "/models/a", "b": "/models/b"})
    assert text.count("config {") == 2 and "model_platform: 'tensorflow'" in text


KILLED_EXPORT = r"""
import json, os, signal, sys
import keras
from keras_sentiment import export
from keras_sentiment.model import split_text_model
run = sys.argv[1]
pre, model, mix = split_text_model(keras.models.load_model(run + "/model.keras"))
# Die the hard way after the SavedModel is written but before it is renamed into place.
export.write_warmup = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
export.export_saved_model(pre, model, ["neg", "pos"], sys.argv[2], {}, mix=mix)
"""


def test_export_killed_half_way_leaves_no_partial_version(imdb_run, tmp_path):
    base = tmp_path / "models" / "tiny"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_EXPORT, str(imdb_run["run_dir"]), str(base)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == -9
    assert versions(base) == []
    leftovers = [p for p in base.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers and (leftovers[0] / "saved_model.pb").is_file()  # it was killed mid-way
    # The next export cleans the dead exporter's folder and takes version 1.
    args = export_args(imdb_run)
    args[args.index("--output-dir") + 1] = str(tmp_path / "models")
    again = run_cli("export", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert versions(base) == [1] and not list(base.glob(".tmp-*"))


@pytest.fixture(scope="module")
def tiny_model(imdb_run):
    import keras

    from keras_sentiment.model import split_text_model

    return split_text_model(keras.models.load_model(imdb_run["run_dir"] / "model.keras"))


def test_exporters_never_collide(tiny_model, tmp_path, monkeypatch):
    from keras_sentiment import export

    pre, model, mix = tiny_model
    base = tmp_path / "m"

    def write(run_dir, version=None):
        meta = {"run_dir": run_dir}
        return export.export_saved_model(
            pre, model, ["neg", "pos"], base, meta, version=version, mix=mix
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


def test_stale_temporaries_are_judged_by_host_and_pid(tiny_model, tmp_path):
    from keras_sentiment import export

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    base = tmp_path / "m"
    mine = base / f".tmp-{export._host()}-{dead}-abc"
    other_host = base / f".tmp-otherhost-{dead}-abc"
    for folder in (mine, other_host):
        folder.mkdir(parents=True)
    pre, model, mix = tiny_model
    export.export_saved_model(pre, model, ["neg", "pos"], base, {}, mix=mix)
    assert not mine.exists()  # this host's exporter is gone: its leftovers go
    assert other_host.is_dir()  # another host's PID says nothing here: kept


def test_an_empty_request_gets_an_empty_answer(imdb_run):
    from keras_sentiment.prediction import SavedModelPredictor

    serve = tf.saved_model.load(str(imdb_run["version"])).signatures["serving_default"]
    out = serve(text=tf.constant([], tf.string))
    assert out["probabilities"].shape == (0, 2) and out["label"].shape == (0,)
    assert out["classes"].shape == (0, 2)
    assert SavedModelPredictor(imdb_run["version"])([])["probabilities"].shape == (0, 2)
    done = run_cli("predict", str(imdb_run["version"]), stdin="")
    assert done.returncode == 0 and done.stdout == ""


def test_export_reads_runs_from_before_model_keras_took_raw_text(imdb_run, tiny_model, tmp_path):
    # Such a run's model.keras is the token-id network; its preprocessor.json lies beside it.
    pre, network, _ = tiny_model  # such runs had no n-gram branch
    old = tmp_path / "runs" / "tiny" / "1"
    shutil.copytree(imdb_run["run_dir"], old)
    network.save(old / "model.keras")
    out = ["--name", "tiny", "--runs-dir", str(tmp_path / "runs")]
    done = run_cli("export", *out, "--output-dir", str(tmp_path / "models"))
    assert done.returncode == 0, done.stderr[-2000:]
    texts = tf.constant(["A wonderful film.", "Dull and far too long.", ""])
    served = tf.saved_model.load(str(tmp_path / "models" / "tiny" / "1"))
    answer = served.signatures["serving_default"](text=texts)["probabilities"]
    assert abs(answer - network(pre(texts), training=False)).numpy().max() <= 1e-5

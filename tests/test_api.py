"""The Python API: fit -> Run, load -> a predictor with str labels, evaluate, export, and the
.keras file Keras itself loads once keras_sentiment is imported."""

import inspect
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sentiment as ks
from keras_sentiment.cli import main
from keras_sentiment.serving.prediction import KerasPredictor, SavedModelPredictor

from .helpers import (
    HOSTILE_BYTES,
    run_python,
    synthetic_reviews,
    tiny_config,
    without,
    write_csv,
)

TEXTS = ["What a film!", "Dull, predictable and far too long.", "", "<br />!!!"]


def test_fit_returns_the_run(tiny_run, tiny_data):
    run = tiny_run["run"]
    assert isinstance(run.model, keras.Model)
    assert run.run_dir.name == "1" and run.export_path.name == "1"
    assert (run.export_path / "saved_model.pb").is_file()
    assert [row["epoch"] for row in run.history] == [1, 2]
    # 75 of the 80 held-out texts (the tiny LSTM stays near chance in two epochs; the n-gram
    # branch carries the mix); one text of margin.
    assert run.report["accuracy"] == run.summary.metrics.accuracy >= 0.925
    assert run.report["support"] == 80  # a stratified fifth of the 400 held out as test
    probs = run.model.predict(tf.constant(TEXTS), verbose=0)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # The run's config names its in-memory data by content, so a resume never mixes data.
    assert run.summary.config["dataset"].startswith("memory:")
    assert run.summary.config["name"] == "tiny"


def test_the_exported_model_serves_what_the_trained_model_says(tiny_run, tiny_predictor):
    # Train/serve parity: the SavedModel's graph against the in-process raw-text model.
    texts = [t.encode() for t in synthetic_reviews(200, seed=5)[0]] + HOSTILE_BYTES
    served = tiny_predictor(texts)["probabilities"]
    in_process = tiny_run["run"].model.predict(tf.constant(texts), verbose=0)
    np.testing.assert_allclose(served, in_process, rtol=0, atol=1e-5)


def test_load_gives_str_labels_and_one_text_is_one_answer(tiny_run):
    predictor = ks.load(tiny_run["base"])
    assert isinstance(predictor, SavedModelPredictor) and predictor.class_names == ["neg", "pos"]
    one = predictor("What a wonderful film!")
    assert one["probabilities"].shape == (1, 2) and one["label"].tolist() == ["pos"]
    assert predictor(b"What a wonderful film!")["label"].tolist() == ["pos"]
    many = predictor(["wonderful", "dull and boring", ""])
    assert many["label"].tolist()[:2] == ["pos", "neg"] and isinstance(many["label"][0], str)
    assert many["classes"].tolist()[0] == ["neg", "pos"]
    for bad in (42, None, {"text": "x"}, ["fine", 3]):
        with pytest.raises(TypeError, match="text"):
            predictor(bad)


def test_a_keras_file_loads_as_a_predictor_and_errors_are_one_line(tiny_run, tmp_path):
    predictor = ks.load(tiny_run["run_dir"] / "model.keras")
    assert isinstance(predictor, KerasPredictor) and predictor.class_names == ["neg", "pos"]
    expected = ks.load(tiny_run["version"])(TEXTS)["probabilities"]
    np.testing.assert_allclose(predictor(TEXTS)["probabilities"], expected, atol=1e-5)
    with pytest.raises(ks.UserError, match="no such .keras file"):
        ks.load(tmp_path / "missing.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    with pytest.raises(ks.UserError) as error:
        ks.load(broken)
    assert len(str(error.value).splitlines()) == 1 and len(str(error.value)) < 400


IN_A_NEW_PROCESS = """
import sys
import keras_sentiment as ks  # and nothing else of the package
print("light:", "tensorflow" in sys.modules or "keras" in sys.modules)
print("said:", ks.load(sys.argv[2])(sys.argv[3:])["label"].tolist())  # starts TensorFlow
import keras, numpy as np, tensorflow as tf
model = keras.saving.load_model(sys.argv[1])  # safe mode; the layers registered themselves
np.save(sys.argv[1] + ".npy", model.predict(tf.constant(sys.argv[3:]), verbose=0))
"""


@pytest.mark.slow  # a second process starting TensorFlow: seconds the fast loop can spare
def test_a_new_process_imports_lightly_starts_quietly_and_keras_loads_the_file(tiny_run, tmp_path):
    path = tmp_path / "sentiment.keras"
    tiny_run["run"].model.save(path)
    # As a notebook user would: no TF_CPP_MIN_LOG_LEVEL of their own.
    env = without("TF_CPP_MIN_LOG_LEVEL")
    done = run_python(IN_A_NEW_PROCESS, path, tiny_run["base"], *TEXTS, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "light: False" in done.stdout  # `import keras_sentiment` starts no TensorFlow
    assert "said: ['pos', 'neg'" in done.stdout
    # TensorFlow's C++ start-up lines (CUDA probing, oneDNN) stay off a notebook's stderr.
    assert "cuInit" not in done.stderr and "oneDNN" not in done.stderr, done.stderr[-2000:]
    assert not [x for x in done.stderr.splitlines() if x[:1] in "IWEF" and x[1:5].isdigit()]
    expected = tiny_run["run"].model.predict(tf.constant(TEXTS), verbose=0)
    np.testing.assert_allclose(np.load(str(path) + ".npy"), expected, rtol=0, atol=1e-5)


def test_evaluate_and_export_from_python(tiny_run, tiny_data, tmp_path):
    texts, labels = synthetic_reviews(100, seed=9)
    result = ks.evaluate(tiny_run["run"], data=(texts, labels))
    assert result["support"] == 100 and result["accuracy"] > 0.9 and result["seconds"] > 0
    assert ks.evaluate(tiny_run["base"], data=(texts, labels), max_test=40)["support"] == 40
    with pytest.raises(ks.UserError, match="in-memory data: pass the test data"):
        ks.evaluate(tiny_run["run"])
    with pytest.raises(ks.UserError, match="classes"):
        ks.evaluate(tiny_run["run"], data=(["x", "y"], ["good", "bad"]))
    with pytest.raises(ks.UserError, match="no finished run of 'nope'"):
        ks.export(name="nope", runs_dir=str(tmp_path / "runs"))
    with pytest.raises(ks.UserError, match="is not a finished run"):
        ks.export(tmp_path)


def test_fit_restores_the_dtype_policy(monkeypatch):
    from keras_sentiment import api

    def changes_the_policy(cfg, data, test_data):
        keras.mixed_precision.set_global_policy("mixed_float16")
        raise ks.UserError("stop here")

    monkeypatch.setattr(api, "_fit", changes_the_policy)
    before = keras.mixed_precision.global_policy().name
    with pytest.raises(ks.UserError):
        ks.fit(ks.Config())
    assert keras.mixed_precision.global_policy().name == before


@pytest.mark.parametrize("name", ["fit", "load", "evaluate", "export"])
def test_every_public_call_documents_itself(name):
    doc = inspect.getdoc(getattr(ks, name))
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc, f"{name} lacks {section}"
    assert "Args:" in inspect.getdoc(ks.Config) and "Example:" in inspect.getdoc(ks.Config)


@pytest.mark.slow
def test_api_and_cli_write_the_same_files(tiny_run, imdb_run):
    def names(folder):
        return {p.relative_to(folder).parts[0] for p in folder.iterdir()}

    assert names(tiny_run["run_dir"]) == names(imdb_run["run_dir"])
    assert names(tiny_run["version"]) == names(imdb_run["version"])


def loads_every_way(path, capsys, csv_path) -> None:
    """`predict`, `evaluate`, `ks.load` and `keras.saving.load_model` all take the file and
    give the same answers (best.keras is the LSTM alone: its labels may be poor, not absent)."""
    texts = ["A wonderful film.", "dull", ""]
    assert main(["predict", str(path), *texts]) == 0, capsys.readouterr().err
    said = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in said] == texts and {r["label"] for r in said} <= {"neg", "pos"}
    assert main(["evaluate", str(path), "--test-data", str(csv_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["support"] == 40
    predictor = ks.load(path)
    assert predictor.class_names == ["neg", "pos"]
    answer = predictor(texts)
    assert answer["label"].tolist() == [r["label"] for r in said]
    assert [r["probabilities"]["pos"] for r in said] == pytest.approx(
        answer["probabilities"][:, 1].tolist(), abs=1e-5
    )
    model = keras.saving.load_model(path)
    probs = np.asarray(model(tf.constant(texts)))
    np.testing.assert_allclose(probs, answer["probabilities"], atol=1e-6)


def test_every_model_file_of_a_run_folder_loads(tiny_run, tmp_path, capsys):
    csv_path = write_csv(tmp_path / "test.csv", list(zip(*synthetic_reviews(40, seed=4))))
    capsys.readouterr()
    found = sorted(p.name for p in tiny_run["run_dir"].glob("*.keras"))
    assert found == ["best.keras", "model.keras"]
    for name in found:
        loads_every_way(tiny_run["run_dir"] / name, capsys, csv_path)


def test_an_interrupted_runs_model_files_load_and_its_message_says_which(
    tmp_path, tiny_data, monkeypatch, capsys
):
    from keras_sentiment.training import runs

    def ctrl_c_at_the_first_epoch_end(name):
        if name == "epoch-end":
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "kill_point", ctrl_c_at_the_first_epoch_end)
    cfg = tiny_config(
        tmp_path, epochs=3, embeddings="none", lemmatize=False, ngrams=0, learning_rate=1e-2
    )
    with pytest.raises(KeyboardInterrupt) as stopped:
        ks.fit(cfg, data=tiny_data)
    run_dir = tmp_path / "runs" / "tiny" / "1"
    assert f"the best model so far ({run_dir / 'best.keras'})" in str(stopped.value)
    assert "the LSTM of epoch 1 alone (raw text in" in str(stopped.value)
    assert str(stopped.value).endswith("; call ks.fit with the same config to resume")
    found = sorted(p.name for p in run_dir.glob("*.keras"))
    assert found == ["best.keras"]
    csv_path = write_csv(tmp_path / "test.csv", list(zip(*synthetic_reviews(40, seed=4))))
    capsys.readouterr()  # what fit printed
    loads_every_way(run_dir / "best.keras", capsys, csv_path)


def test_a_notebook_sees_the_api_the_fields_and_short_reprs(tiny_run):
    assert {"fit", "load", "evaluate", "export", "score", "Run", "Config"} <= set(dir(ks))
    assert "importlib" not in dir(ks) and "sys" not in dir(ks)
    doc = inspect.getdoc(ks.Config)
    from keras_sentiment.cli import build_parser

    fit_help = " ".join(
        build_parser()._subparsers._group_actions[0].choices["fit"].format_help().split()
    )
    for key in ("lstm_units", "ngrams", "max_train", "precision"):
        entry = re.search(rf"^\s*{key} \(\w+\): (.*?)\n(?=\s*\w+ \(\w+\):|\s*$)", doc, re.M | re.S)
        described = " ".join(entry[1].split())
        assert "(default: " in described and described in fit_help, key  # one text for both
    run = tiny_run["run"]
    text = repr(run)
    assert text == (
        f"Run(name='tiny', version=1, accuracy={round(run.report['accuracy'], 4)}, "
        f"run_dir='{run.run_dir}', export_path='{run.export_path}')"
    )
    assert repr(ks.load(tiny_run["base"])) == (
        f"SavedModelPredictor('{tiny_run['version']}', version=1, classes=['neg', 'pos'])"
    )
    path = tiny_run["run_dir"] / "model.keras"
    assert repr(ks.load(path)) == f"KerasPredictor('{path}', classes=['neg', 'pos'])"


def earlier_model(output_dir, name: str, class_names: list[str]) -> None:
    """A version of `name` on record, trained on `class_names` (its metadata is all that counts)."""
    extra = output_dir / name / "1" / "assets.extra"
    extra.mkdir(parents=True)
    (extra / "metadata.json").write_text(json.dumps({"class_names": class_names}))


def test_data_of_other_classes_never_become_a_version_of_the_same_name(tmp_path, capsys):
    earlier_model(tmp_path / "saved_models", "memory_lstm", ["negative", "positive"])
    texts, labels = synthetic_reviews(60)
    stars = ["1" if label == "neg" else "5" for label in labels]
    cfg = ks.Config(output_dir=str(tmp_path / "saved_models"), runs_dir=str(tmp_path / "runs"))
    with pytest.raises(ks.UserError) as refused:
        ks.fit(cfg, data=(texts, stars))
    said = str(refused.value)
    assert "memory_lstm/1 was trained on the classes ['negative', 'positive']" in said
    assert "these data have ['1', '5']" in said and "with Config(name=...)" in said
    assert not (tmp_path / "runs").exists()
    # The command line names the flag.
    earlier_model(tmp_path / "saved_models", "stars_lstm", ["negative", "positive"])
    csv_path = write_csv(tmp_path / "stars.csv", list(zip(texts, stars)))
    out = ["--output-dir", str(tmp_path / "saved_models"), "--runs-dir", str(tmp_path / "runs")]
    assert main(["fit", "--dataset", str(csv_path), *out]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.rstrip().endswith("with --name")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("data", [["a", "b"], ("great", "awful"), ["a", "b", "c"], [b"a", b"b"]])
def test_a_plain_list_of_texts_is_refused_as_texts_without_labels(tmp_path, data):
    cfg = ks.Config(output_dir=str(tmp_path / "m"), runs_dir=str(tmp_path / "r"))
    with pytest.raises(ks.UserError, match=r"^in-memory data: texts without labels; pass \("):
        ks.fit(cfg, data=data)
    assert not (tmp_path / "r").exists()

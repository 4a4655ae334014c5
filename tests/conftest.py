"""Shared fixtures: the shared data through its standard variables, and one tiny trained model."""

import os
import subprocess
import sys
from pathlib import Path

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


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A CSV with text and label columns."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory) -> Path:
    """Four dozen labelled sentences, balanced."""
    rows = [(t, "pos") for t in POSITIVE * 4] + [(t, "neg") for t in NEGATIVE * 4]
    return write_csv(tmp_path_factory.mktemp("toy") / "toy.csv", rows)


@pytest.fixture(scope="session")
def imdb_run(tmp_path_factory) -> dict:
    """A small model fitted on a slice of the shared IMDB data for one epoch, then exported."""
    from keras_sentiment.cli import main

    work = tmp_path_factory.mktemp("imdb_run")
    argv = [
        "fit",
        "--name", "tiny",
        "--max-train", "2000",
        "--max-test", "500",
        "--epochs", "1",
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
        "base": work / "saved_models" / "tiny",
        "version": work / "saved_models" / "tiny" / "1",
        "run_dir": work / "runs" / "tiny" / "1",
        "argv": argv,
    }


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

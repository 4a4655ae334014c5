"""Shared fixtures (the helpers they use are in helpers.py). Two tiers:

- the fast tier (`python -m pytest -m "not slow"`): tiny synthetic reviews made in memory, one
  tiny model fitted on them in this process (`tiny_run`), unit tests, the cheap doctests;
- the slow tier (`-m slow`, each such test marked `@pytest.mark.slow`): a model fitted on a
  slice of the shared IMDB data through the CLI (`imdb_run`), fits in subprocesses killed and
  resumed, distributed training. A test that uses `imdb_run` unmarked is refused.

Session fixtures are read, never changed: a test that writes makes its own copy.
"""

import os
from pathlib import Path

import pytest

from .helpers import (
    NEGATIVE,
    POSITIVE,
    SHARED,
    fit_args,
    run_config,
    synthetic_reviews,
    tiny_config,
    with_lstm,
    write_csv,
)

# The standard variables; CI sets them, a developer beside ../shared gets the same by default.
os.environ.setdefault("TFDS_DATA_DIR", str(SHARED / "tensorflow_datasets"))
os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


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
def tiny_with_lstm(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported again with the LSTM's coefficient in its mix at 0.5 (the stack may
    drop the tiny LSTM, and then the served graph skips it): a SavedModel with every path."""
    from keras_sentiment.network.model import load_run_model
    from keras_sentiment.records import read_summary
    from keras_sentiment.serving.saved_model import export_saved_model

    pre, network, mix = load_run_model(tiny_run["run_dir"])
    half = with_lstm(mix, 0.5)
    record = read_summary(tiny_run["run_dir"])
    base = tmp_path_factory.mktemp("tiny_with_lstm")
    return export_saved_model(pre, network, record.class_names, base, record, mix=half)


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
    cfg = run_config(
        work, name="imdb", max_train=2000, max_test=500, epochs=2, sequence_length=160,
        lstm_units=32, batch_size=32, lemmatize=True,  # the lemma table travels in the graph
    )  # fmt: skip
    argv = fit_args(cfg)
    assert main(argv) == 0
    return {
        "work": work,
        "base": work / "saved_models" / "imdb",
        "version": work / "saved_models" / "imdb" / "1",
        "run_dir": work / "runs" / "imdb" / "1",
        "argv": argv,
    }


def pytest_collection_modifyitems(config, items):
    # The slow tier is marked one way, on the test itself (@pytest.mark.slow): a test that
    # waits for the IMDB fit and is not marked would slow the fast tier down unseen.
    unmarked = [
        item.nodeid
        for item in items
        if "imdb_run" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("slow")
    ]
    if unmarked:
        raise pytest.UsageError(f"uses imdb_run, not marked @pytest.mark.slow: {unmarked}")

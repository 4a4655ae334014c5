"""The docstrings' examples run as written: the cheap ones in the fast tier, on the tiny run
under the examples' model name (saved_models/imdb_lstm_quick); those that fit, export or
trace an explanation, in the slow tier. Still skipped: `evaluate` (IMDB's test split) and
`score` (Apache Beam on files).
"""

import doctest
import importlib
import shutil

import pytest

import keras_sentiment

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Modules whose examples need nothing but themselves.
ALONE = [
    "keras_sentiment.config",
    "keras_sentiment.data.sources",
    "keras_sentiment.network.lstm_math",
    "keras_sentiment.reporting.explanation_page",
]


def run_examples(module: str, only: tuple[str, ...] = (), skip: tuple[str, ...] = (), **globs):
    """Run the examples of `module`'s docstrings (those of the functions `only` names, less
    those `skip` names), with `ks` and `globs` defined; fail on any that does not say what
    its docstring says."""
    found = doctest.DocTestFinder().find(
        importlib.import_module(module), extraglobs={"ks": keras_sentiment, **globs}
    )
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in found:
        name = test.name.rsplit(".", 1)[-1]
        if test.examples and (not only or name in only) and name not in skip:
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted and not results.failed, results


@pytest.fixture
def in_examples_folder(tiny_run, tmp_path, monkeypatch):
    """A working folder whose runs/ and saved_models/ hold the tiny run as imdb_lstm_quick."""
    shutil.copytree(tiny_run["run_dir"], tmp_path / "runs" / "imdb_lstm_quick" / "1")
    shutil.copytree(tiny_run["version"], tmp_path / "saved_models" / "imdb_lstm_quick" / "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("module", ALONE)
def test_examples_that_need_nothing(module):
    run_examples(module)


def test_examples_of_a_trained_model(in_examples_folder):
    run_examples("keras_sentiment.api", only=("load",))
    run_examples("keras_sentiment.serving.prediction")


@pytest.mark.slow
def test_examples_that_fit_export_or_trace(in_examples_folder, tiny_run):
    # export's example exports a version again: seconds, as a fit; in the fast tier
    # test_export.py's second export covers what it shows.
    run_examples("keras_sentiment.api", only=("export",))
    run_examples("keras_sentiment.api", only=("fit",))
    run_examples("keras_sentiment.serving.explanation", run=tiny_run["run"])

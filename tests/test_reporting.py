"""Reporting: plots decode at their stated size, errors, model card, the table of runs."""

import copy
import json

import numpy as np
import pytest
from matplotlib.image import imread

from keras_sentiment.config import UserError
from keras_sentiment.records import ExportRecord
from keras_sentiment.reporting.evaluation import most_confident_errors
from keras_sentiment.reporting.model_card import duration, model_card, shorten
from keras_sentiment.reporting.plots import write_plots
from keras_sentiment.serving.listing import compare_runs, find_run, format_runs, list_runs

HISTORY = [
    {"epoch": float(e), "accuracy": a, "loss": lo, "val_accuracy": va, "val_loss": vl}
    for e, (a, lo, va, vl) in enumerate(
        [(0.70, 0.58, 0.80, 0.45), (0.84, 0.37, 0.85, 0.36), (0.89, 0.27, 0.87, 0.32)]
        + [(0.92, 0.20, 0.86, 0.35)],
        start=1,
    )
]
SIZES = {  # (height, width) in pixels, as the docstring of write_plots states
    "curves.png": (450, 1000),
    "confusion_matrix.png": (500, 600),
    "roc.png": (500, 600),
    "precision_recall.png": (500, 600),
}


def synthetic(n: int = 200, classes: int = 2, seed: int = 0):
    """Labels and softmax probabilities that are right about 80% of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


@pytest.mark.parametrize("classes", [2, 3])
def test_write_plots_png_sizes_and_content(tmp_path, classes):
    labels, probs = synthetic(classes=classes)
    names = ["neg", "pos"] if classes == 2 else ["neg", "neutral", "pos"]
    written = write_plots(tmp_path, HISTORY, labels, probs, names, best_epoch=3)
    assert sorted(p.name for p in written) == sorted(SIZES)
    for path in written:
        image = imread(path)
        assert image.shape[:2] == SIZES[path.name], path.name
        assert image[..., :3].var() > 0, f"{path.name} is blank"
    # Written through a temporary sibling: nothing else is left in the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SIZES)


def test_write_plots_without_history_or_best_epoch(tmp_path):
    labels, probs = synthetic(n=20)
    written = write_plots(tmp_path, [], labels, probs, ["neg", "pos"], best_epoch=None)
    assert "curves.png" not in {p.name for p in written} and len(written) == 3
    # One class only in the labels: the curves are undefined, the images are still written.
    written = write_plots(tmp_path, HISTORY[:1], np.zeros(20, int), probs, ["neg", "pos"], None)
    assert len(written) == 4


def test_most_confident_errors_picks_and_shortens():
    texts = np.array(
        [
            b"right and sure",
            "wrong but unsure",  # str and bytes both occur
            b"wrong and very sure<br /><br />second   line \xff" + b" word" * 100,
            b"wrong and fairly sure",
            b"right",
        ],
        dtype=object,
    )
    labels = np.array([0, 0, 1, 0, 1])
    probs = np.array([[0.99, 0.01], [0.45, 0.55], [0.97, 0.03], [0.2, 0.8], [0.4, 0.6]])
    errors = most_confident_errors(texts, labels, probs, ["neg", "pos"], k=2, width=60)
    assert [e["confidence"] for e in errors] == pytest.approx([0.97, 0.8])
    first = errors[0]
    assert (first["true"], first["predicted"]) == ("pos", "neg")
    assert first["text"].startswith("wrong and very sure second line \ufffd word")
    assert len(first["text"]) <= 60 and first["text"].endswith("…")
    assert "<br" not in first["text"] and "  " not in first["text"]
    assert errors[1]["text"] == "wrong and fairly sure"
    assert len(most_confident_errors(texts, labels, probs, ["neg", "pos"], k=10)) == 3
    assert most_confident_errors(texts, np.array([0, 1, 0, 1, 1]), probs, ["neg", "pos"]) == []


def test_shorten_and_duration():
    assert shorten("a<BR/>b  <br>c\n\td") == "a b c d"
    assert shorten("x" * 10, width=5) == "xxxx…"
    assert shorten("short", width=5) == "short"
    assert [duration(s) for s in (42.04, 570.4, 7500)] == ["42.0s", "9m 30s", "2h 05m"]


def make_summary(name="imdb_lstm", version=1, created="2026-11-27T07:50:07+00:00", **cfg):
    """A summary as cli.fit builds it, plus the version export adds."""
    per_class = {
        "neg": {"precision": 0.8702, "recall": 0.9103, "f1-score": 0.8898, "support": 12500.0},
        "pos": {"precision": 0.9060, "recall": 0.8642, "f1-score": 0.8846, "support": 12500.0},
    }
    config = {
        "name": name,
        "output_dir": "saved_models",
        "runs_dir": "runs",
        "seed": 1337,
        "dataset": "imdb_reviews",
        "max_train": 0,
        "lemmatize": True,
        "remove_stopwords": False,
        "vocab_size": 30000,
        "sequence_length": 400,
        "truncate": "pre",
        "embeddings": "glove-6b-50d",
        "train_embeddings": True,
        "embedding_dim": 50,
        "lstm_units": 64,
        "lstm_layers": 1,
        "bidirectional": True,
        "pooling": "max",
        "dropout": 0.3,
        "batch_size": 64,
        "epochs": 8,
        "learning_rate": 0.002,
    }
    config.update(cfg)
    return {
        "name": name,
        "created": created,
        "class_names": ["neg", "pos"],
        "vocabulary_size": 29871,  # what the data filled, below vocab_size
        "sequence_length": config["sequence_length"],
        "dataset": {
            "source": "tfds:imdb_reviews",
            "train": 22500,
            "validation": 2500,
            "test": 25000,
        },
        "embeddings": {
            "source": "glove-6b-50d",
            "dim": 50,
            "coverage": 0.9414294,
            "found": 28241,
            "vocabulary": 29998,
        },
        "parameters": 1559138,
        "training": {
            "epochs_run": 7,
            "best_epoch": 5,
            "epoch_seconds": [68.43, 86.72, 82.97, 84.14, 77.74, 70.88, 56.18],
            "tokens_per_epoch": 4775644,
            "resumed": False,
            "history": HISTORY,
            "wall_seconds": 570.4,
        },
        "metrics": {"accuracy": 0.88724, "macro_f1": 0.88692},
        "test_report": {
            "accuracy": 0.88724,
            "macro_f1": 0.88692,
            "per_class": per_class,
            "confusion_matrix": [[11379, 1121], [1698, 10802]],
            "class_names": ["neg", "pos"],
            "support": 25000,
        },
        "config": config,
        "versions": {"python": "3.11.7", "tensorflow": "2.21.0", "keras": "3.15.1"},
        "version": version,
    }


def card_of(summary: dict, errors=()) -> str:
    """The model card of a version whose metadata.json holds `summary` and `errors`."""
    return model_card(ExportRecord.from_dict({**summary, "most_confident_errors": list(errors)}))


ERRORS = [
    {"text": "A masterpiece of boredom.", "true": "neg", "predicted": "pos", "confidence": 0.991},
    {"text": "I hated how much I loved it", "true": "pos", "predicted": "neg", "confidence": 0.97},
]


def test_model_card_holds_the_measured_numbers():
    card = card_of(make_summary(), ERRORS)
    assert card.startswith("# Model card: imdb_lstm (version 1)")
    for expected in [
        "0.8872",  # accuracy
        "0.8869",  # macro F1 (0.88692), not the accuracy again
        "1,559,138",  # parameters
        "94.1%",  # GloVe coverage
        "28,241 of 29,998",
        "22,500",
        "| neg | 0.8702 | 0.9103 | 0.8898 | 12,500 |",
        "| pos | 0.9060 | 0.8642 | 0.8846 | 12,500 |",
        "| neg | 11,379 | 1,121 |",
        "Bidirectional LSTM x 1 layer of 64 units",
        "max over time",
        "Lemmatization (NLTK WordNet): on",
        "400 tokens",
        "the end of a longer text is kept",
        "Epochs run: 7 of at most 8",
        ": 5",  # best epoch
        "8m 47s",  # sum of epoch_seconds, 527.06 s
        "9m 30s",  # wall time
        "> A masterpiece of boredom.",
        "> I hated how much I loved it",
        "0.991",
        "English only",
        "2014",
        "tensorflow: 2.21.0",
    ]:
        assert expected in card, expected


def test_model_card_describes_the_data_it_learned_from():
    imdb = card_of(make_summary(), [])
    assert "It learned from the IMDB movie reviews" in imdb and "22,500 training texts" in imdb
    summary = make_summary()
    summary["dataset"] = {"source": "file:data/tweets.csv (test: stratified 20% held out)",
                          "train": 900, "validation": 100, "test": 250}  # fmt: skip
    card = card_of(summary, [])
    assert "It learned from the file `data/tweets.csv` (900 training texts)." in card
    assert "movie" not in card.lower()  # not a movie-review model
    summary["dataset"]["source"] = "memory: 1250 texts (test: stratified 20% held out)"
    assert "It learned from texts given in memory (900 training texts)." in card_of(summary, [])


def test_model_card_says_when_the_lstm_has_no_say():
    summary = make_summary()
    summary["ngrams"] = {"order": 3, "ngrams": 1000, "C": 0.1, "lstm_weight": 0.0}
    assert "this model answers with the n-gram branch alone" in card_of(summary, [])
    summary["ngrams"]["lstm_weight"] = 0.3
    assert "n-gram branch alone" not in card_of(summary, [])


def test_model_card_says_how_the_mix_was_chosen():
    summary = make_summary()
    summary["mix"] = {
        "members": [
            {"kind": "words", "order": 3, "ngrams": 36916, "C": 0.3, "seconds": 0.6},
            {"kind": "chars", "order": 5, "ngrams": 47020, "C": 0.1, "seconds": 4.5},
        ],
        "coefficients": {"lstm": 0.356, "words": 0.382, "chars": 0.0},
        "bias": 0.04,
        "validation_texts": 960,
        "validation_accuracy": {"lstm": 0.7708, "words": 0.7854, "chars": 0.7812, "mixed": 0.8021},
        "test_accuracy": {"lstm": 0.7826, "words": 0.8004, "mixed": 0.8238},
    }
    card = card_of(summary, [])
    assert "### The mix, and how it was chosen" in card
    assert "0.04 + 0.356 x the LSTM + 0.382 x word n-grams (each part's log-odds of `pos`)" in card
    assert "over the 960 validation texts" in card and "Left out of the mix: char n-grams" in card
    assert "mixed 0.8021 (cross-validated)" in card and "word n-grams 0.8004; mixed 0.8238" in card


def test_curves_of_one_epoch_have_whole_epoch_ticks():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from keras_sentiment.reporting.plots import _curves_figure

    for epochs in (1, 2, 8):
        history = [dict(HISTORY[0], epoch=float(e)) for e in range(1, epochs + 1)]
        figure = _curves_figure(history, best_epoch=1)
        FigureCanvasAgg(figure).draw()
        for ax in figure.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_model_card_copes_with_missing_keys():
    summary = make_summary()
    del summary["version"], summary["versions"], summary["test_report"], summary["parameters"]
    summary["training"] = {}
    summary["embeddings"] = {"source": "none", "dim": 32, "coverage": 0.0}
    card = card_of(summary, [])
    assert card.startswith("# Model card: imdb_lstm\n")
    assert "learned from scratch, 32 dimensions" in card and "2014" not in card
    assert "Most confident errors" not in card
    assert card_of({}, []).startswith("# Model card: model")


def write_version(output_dir, meta):
    extra = output_dir / meta["name"] / str(meta["version"]) / "assets.extra"
    extra.mkdir(parents=True)
    (extra / "metadata.json").write_text(json.dumps(meta))


@pytest.fixture
def output_dir(tmp_path):
    out = tmp_path / "saved_models"
    write_version(out, make_summary("alpha", 1, "2026-11-27T07:50:07+00:00"))
    newer = make_summary("alpha", 2, "2026-11-28T09:00:00+00:00", lstm_units=128, pooling="mean")
    newer["metrics"] = {"accuracy": 0.9012, "macro_f1": 0.9001}
    newer["test_report"]["per_class"]["pos"]["f1-score"] = 0.9111
    write_version(out, newer)
    write_version(out, make_summary("beta", 1, "2026-11-27T12:00:00+00:00", bidirectional=False))
    # Not runs: a half-written export, a version without metadata, a broken one, a stray file.
    (out / "alpha" / ".tmp-123-abc" / "assets.extra").mkdir(parents=True)
    (out / "beta" / "2").mkdir()
    (out / "beta" / "3" / "assets.extra").mkdir(parents=True)
    (out / "beta" / "3" / "assets.extra" / "metadata.json").write_text("{not json")
    (out / "README.md").write_text("models")
    return out


def test_list_runs_newest_first_and_skips_bad_folders(output_dir):
    rows = list_runs(output_dir)
    assert [(r["name"], r["version"]) for r in rows] == [("alpha", 2), ("beta", 1), ("alpha", 1)]
    top = rows[0]
    assert top["accuracy"] == 0.9012 and top["macro_f1"] == 0.9001
    assert top["created"] == "2026-11-28T09:00:00+00:00" and top["duration"] == 570.4
    assert top["settings"] == "bilstm 128x1 mean, len 400 pre, vocab 29871, lemma on, glove-6b-50d"
    assert rows[1]["settings"].startswith("lstm 64x1 max")
    assert list_runs(output_dir / "missing") == []


def test_runs_shows_every_differing_setting_and_marks_re_exports(tmp_path):
    out = tmp_path / "saved_models"
    versions = [(1, 3, 1337, "runs/g/1"), (2, 0, 1337, "runs/g/2"), (3, 0, 7, "runs/g/3")]
    versions.append((4, 3, 1337, "runs/g/1"))  # version 1's run, exported again
    for version, ngrams, seed, run in versions:
        meta = make_summary("g", version, f"2026-11-2{version}T09:00:00+00:00", ngrams=ngrams)
        meta["config"]["seed"] = seed
        write_version(out, {**meta, "run_dir": f"/work/{run}"})
    write_version(out, make_summary("h", 1, ngrams=0))  # another name: compared apart
    rows = {(r["name"], r["version"]): r for r in list_runs(out)}
    short = "bilstm 64x1 max, len 400 pre, vocab 29871, lemma on, glove-6b-50d"
    assert rows["g", 1]["settings"] == f"{short}, seed 1337, ngrams 3"
    assert rows["g", 2]["settings"] == f"{short}, seed 1337, ngrams 0"
    assert rows["g", 3]["settings"] == f"{short}, seed 7, ngrams 0"
    assert rows["g", 4]["settings"] == "re-export of version 1 (the same run)"
    assert rows["g", 4]["same_run_as"] == 1 and rows["g", 2]["same_run_as"] is None
    assert rows["h", 1]["settings"] == short
    table = format_runs(list_runs(out)).splitlines()
    assert [line.split()[:2] for line in table if "re-export of version 1" in line] == [["g", "4"]]


def test_format_runs_is_an_aligned_table(output_dir):
    text = format_runs(list_runs(output_dir))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["NAME", "VERSION", "CREATED"] and len(lines) == 4
    assert "alpha" in lines[1] and "beta" in lines[2] and "0.9012" in lines[1]
    assert "9m 30s" in lines[1] and "2026-11-28 09:00" in lines[1]
    # Aligned: the SETTINGS column starts at the same offset on every line.
    assert len({line.index(word) for line, word in zip(lines, ["SETTINGS", "bi", "ls", "bi"])}) == 1
    assert format_runs([]) == "no exported runs"


def test_compare_runs_marks_differences(output_dir):
    text = compare_runs(find_run(output_dir, "alpha/1"), find_run(output_dir, "alpha"))
    lines = text.splitlines()
    assert "alpha/1" in lines[0] and "alpha/2" in lines[0]

    def row(key):
        return next(line for line in lines if line[2:].split()[:1] == [key])

    assert row("lstm_units").startswith("*") and row("lstm_units").split()[2:] == ["64", "128"]
    assert row("pooling").startswith("*")
    assert not row("lemmatize").startswith("*") and not row("vocab_size").startswith("*")
    assert "name" not in {line[2:].split()[0] for line in lines[1:] if line.strip()}
    assert "0.8872" in row("accuracy") and "0.9012" in row("accuracy")
    assert "0.9111" in next(line for line in lines if "F1 pos" in line)
    assert "9m 30s" in row("duration")
    # A key one side lacks differs too; an empty value shows as "".
    other = find_run(output_dir, "alpha/1")
    other.config = {**other.config, "test_data": ""}
    lines = compare_runs(other, find_run(output_dir, "alpha/1")).splitlines()
    assert row("test_data").startswith("*") and row("test_data").split()[2:] == ['""', "-"]
    # Metadata with missing parts still compares.
    assert "-" in compare_runs(ExportRecord(name="x", version=1), find_run(output_dir, "beta"))


def test_find_run_resolves_and_refuses(output_dir):
    latest = find_run(output_dir, "alpha")
    assert latest.version == 2 and latest.config["lstm_units"] == 128
    assert latest.path == str(output_dir / "alpha" / "2")
    assert find_run(output_dir, "alpha/1/").version == 1
    assert find_run(output_dir, "beta").version == 1  # versions 2 and 3 have no usable metadata
    with pytest.raises(UserError, match=r"no exported run 'gamma'.*alpha, beta"):
        find_run(output_dir, "gamma")
    with pytest.raises(UserError, match=r"no version '7'.*versions: 1, 2"):
        find_run(output_dir, "alpha/7")
    with pytest.raises(UserError, match="unreadable"):
        find_run(output_dir, "beta/3")
    for bad in ["", "alpha/x", "../alpha"]:
        with pytest.raises(UserError):
            find_run(output_dir, bad)


def test_the_record_is_not_mutated():
    record = ExportRecord.from_dict({**make_summary(), "most_confident_errors": ERRORS})
    before = copy.deepcopy(record)
    model_card(record)
    assert record == before


def page_words(page: str) -> dict[str, tuple]:
    """Each shaded word (or legend key) of an explanation page: its background over white,
    its text colour and its title."""
    import re

    from keras_sentiment.reporting.explanation_page import BLACK, WHITE

    found = {}
    for style, title, word in re.findall(
        r'<span (?:class="key" )?style="([^"]*)"(?: title="([^"]*)")?>([^<]*)</span>', page
    ):
        r, g, b, a = map(float, re.search(r"rgba\(([^)]*)\)", style)[1].split(","))
        background = tuple(255 + a * (c - 255) for c in (r, g, b))
        text = WHITE if "color: #fff" in style else BLACK if "color: #000" in style else (34,) * 3
        found[word] = (background, text, title, (r, g, b))
    return found


def test_the_page_colours_each_word_by_the_class_it_pushes_toward():
    from keras_sentiment.reporting.explanation_page import FIRST, SECOND, contrast, explanation_page

    probabilities = {"neg": 0.99, "pos": 0.01}
    records = [
        {"label": "neg", "probabilities": probabilities, "score": 4.4, "baseline_score": -0.2,
         "words": [["a", -0.01], ["dull", 1.5], ["waste", 1.4], ["great", -0.6]]},
        {"label": "pos", "probabilities": {"neg": 0.1, "pos": 0.9}, "score": 1.8,
         "baseline_score": 0.2, "words": [["wonderful", 1.1], ["acting", -0.2]]},
    ]  # fmt: skip
    page = explanation_page(records)
    words = page_words(page)
    # In a negative review "dull" pushes toward neg: neg's colour, as "acting" in a positive
    # one; "great" and "wonderful" push toward pos: pos's colour, whatever was predicted.
    assert words["dull"][3] == words["waste"][3] == words["acting"][3] == FIRST
    assert words["great"][3] == words["wonderful"][3] == SECOND
    assert words["dull"][2] == "1.5000 toward neg" and words["great"][2] == "0.6000 toward pos"
    assert words["toward neg"][3] == FIRST and words["toward pos"][3] == SECOND  # the legend
    assert "coloured by the class it pushes the answer toward" in page
    # Every shaded word and every key is readable: WCAG AA, 4.5:1.
    for word, (background, text, _, _) in words.items():
        assert contrast(background, text) >= 4.5, word
    # More classes: toward the predicted label and against it, and the legend says so.
    three = {"label": "3", "probabilities": {"1": 0.1, "3": 0.7, "5": 0.2}, "score": 0.8,
             "baseline_score": 0.1, "words": [["fine", 0.5], ["dull", -0.2]]}  # fmt: skip
    page = explanation_page([three])
    words = page_words(page)
    assert words["fine"][2] == "0.5000 toward 3" and words["dull"][2] == "0.2000 against 3"
    assert words["toward the predicted label"][3] == words["fine"][3] == SECOND
    assert words["against it"][3] == words["dull"][3] == FIRST

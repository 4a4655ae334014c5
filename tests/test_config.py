import pytest

from keras_sentiment.config import UserError, make_config


def test_defaults_are_valid():
    cfg = make_config({})
    assert (cfg.run_name, cfg.epochs, cfg.lstm_units, cfg.bidirectional) == (
        "imdb_lstm", 8, 128, True
    )  # fmt: skip
    assert (cfg.sequence_length, cfg.vocab_size, cfg.pooling) == (800, 50000, "max")
    assert cfg.lemmatize and cfg.embeddings == "glove-6b-50d"


def test_toml_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('lstm_units = 32\nepochs = 3\nlearning_rate = 1\nname = "x"\n')
    cfg = make_config({"epochs": 5}, str(path))
    assert (cfg.lstm_units, cfg.epochs, cfg.learning_rate, cfg.name) == (32, 5, 1.0, "x")


def test_toml_under_a_table(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[keras_sentiment]\nvocab-size = 100\n")
    assert make_config({}, str(path)).vocab_size == 100


@pytest.mark.parametrize(
    "text, key",
    [
        ("lstm_unitz = 3", "lstm_unitz"),
        ('epochs = "ten"', "epochs"),
        ("lemmatize = 1", "lemmatize"),
    ],
)
def test_toml_unknown_keys_and_wrong_types_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=key):
        make_config({}, str(path))


@pytest.mark.parametrize(
    "key, value",
    [
        ("lstm_units", 0),
        ("epochs", -1),
        ("sequence_length", 0),
        ("validation_fraction", 0.0),
        ("validation_fraction", 1.0),
        ("dropout", 1.0),
        ("truncate", "middle"),
        ("pooling", "sum"),
        ("batch_size", 0),
        ("monitor", "accuracy"),
        ("ngrams", -1),
        ("ngrams", 5),  # 50,000^5 overflows an int64 n-gram key
        ("precision", "bf16"),
    ],
)
def test_impossible_values_are_refused_naming_the_key(key, value):
    with pytest.raises(UserError, match=key):
        make_config({key: value})


def test_missing_and_broken_toml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        make_config({}, str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        make_config({}, str(bad))


def test_abbreviated_flags_are_refused(capsys):
    import pytest

    from keras_sentiment.cli import main

    # `fit --epoch 1` once ran a full-data fit for 8 epochs: a prefix is not a flag.
    for argv in (["fit", "--epoch", "1"], ["export", "--batching"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


STAGES = [
    "startup", "config", "listing", "sources", "data", "preprocessing", "embeddings", "ngrams",
    "compiled_lstm", "model", "batching", "runs", "pretraining", "training", "evaluation",
    "plots", "explanation_page", "model_card", "serving_network", "explanation", "serving",
    "saved_model", "prediction", "client", "review_files", "scoring",
    "pipeline", "cli", "__main__",
]  # fmt: skip


def test_each_stage_imports_only_the_stages_before_it():
    import ast
    from pathlib import Path

    import keras_sentiment

    package = Path(keras_sentiment.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert modules == set(STAGES), "a new module needs its place in STAGES"
    for stage in STAGES:
        tree = ast.parse((package / f"{stage}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                name = node.module or ""
                if node.level == 1 or name.startswith("keras_sentiment."):
                    target = name.removeprefix("keras_sentiment.").split(".")[0]
                    targets = [a.name for a in node.names] if not target else [target]
                    for t in targets:
                        if t in STAGES:
                            assert STAGES.index(t) < STAGES.index(stage), f"{stage} -> {t}"


def test_the_shape_stays_readable():
    # One job per module, and no function a reader cannot see at once.
    import ast
    from pathlib import Path

    import keras_sentiment

    package = Path(keras_sentiment.__file__).parent
    for path in package.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, f"{path.name}: over 400 lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.name}: {node.name} has {length} lines"


@pytest.mark.parametrize(
    "dataset, quick, name",
    [
        ("imdb_reviews", False, "imdb_lstm"),
        ("imdb_reviews", True, "imdb_lstm_quick"),
        ("data/reviews.csv", False, "reviews_lstm"),
        ("reviews.jsonl", True, "reviews_lstm_quick"),
        ("path/to/aclImdb/", False, "aclImdb_lstm"),
        ("yelp_polarity_reviews", False, "yelp_polarity_lstm"),
        ("memory:0123abcd", False, "memory_lstm"),
        ("my data (v2).csv", False, "my_data_v2_lstm"),
    ],
)
def test_the_default_name_follows_the_data(dataset, quick, name):
    from keras_sentiment.config import default_name

    assert default_name(dataset, quick) == name


def test_quick_naming_applies_however_the_config_was_made():
    import dataclasses

    from keras_sentiment.config import Config

    full = make_config({})
    assert full.run_name == "imdb_lstm"
    assert dataclasses.replace(full, max_train=2000).run_name == "imdb_lstm_quick"
    assert dataclasses.replace(Config(), max_test=10).run_name == "imdb_lstm_quick"
    assert dataclasses.replace(full, dataset="reviews.csv").run_name == "reviews_lstm"
    assert make_config({"max_train": 2000, "name": "mine"}).run_name == "mine"
    # An explicit name is the only way onto another data set's served name.
    assert make_config({"dataset": "reviews.csv", "name": "imdb_lstm"}).run_name == "imdb_lstm"


def test_fit_help_carries_no_measurements():
    from keras_sentiment.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["fit"]
    text = sub.format_help()
    assert "--text-column" in text and "--label-column" in text
    assert "seed spread" not in text and "%" not in text.replace("%%", "")

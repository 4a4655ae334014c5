import re

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
    "text, said",
    [
        ("lstm_unitz = 3", "unknown key 'lstm_unitz'"),
        ('epochs = "ten"', "epochs must be an integer, got 'ten'"),
        ("lemmatize = 1", "lemmatize must be true or false, got 1"),
        ('dropout = "half"', "dropout must be a number, got 'half'"),
        ("dataset = 3", "dataset must be a string, got 3"),
    ],
)
def test_toml_unknown_keys_and_wrong_types_name_the_key(tmp_path, text, said):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(said)):
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


# The package in the order the data moves: each stage imports only the stages before it (and
# the modules of its own subpackage).
STAGES = [
    "startup", "config", "files", "records", "compat", "registration", "data", "text",
    "network", "training", "reporting", "serving", "scoring", "api", "cli", "__main__",
]  # fmt: skip


def _stage_of(module: str) -> str:
    return module.removeprefix("keras_sentiment.").split(".")[0]


def test_each_stage_imports_only_the_stages_before_it():
    import ast
    from pathlib import Path

    import keras_sentiment

    package = Path(keras_sentiment.__file__).parent
    found = {p.relative_to(package).parts[0].removesuffix(".py") for p in package.rglob("*.py")}
    assert found - {"__init__"} == set(STAGES), "a new module or subpackage needs its STAGES place"
    for path in package.rglob("*.py"):
        stage = path.relative_to(package).parts[0].removesuffix(".py")
        if stage == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "keras_sentiment"
            ):
                targets = [_stage_of(node.module)]
                if node.module == "keras_sentiment":
                    targets = [a.name for a in node.names]
                for target in targets:
                    if target in STAGES and target != stage:
                        assert STAGES.index(target) < STAGES.index(stage), (
                            f"{path}: {stage} -> {target}"
                        )
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import"


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

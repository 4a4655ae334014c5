import pytest

from keras_sentiment.config import UserError, make_config


def test_defaults_are_valid():
    cfg = make_config({})
    assert (cfg.name, cfg.epochs, cfg.lstm_units, cfg.bidirectional) == ("imdb_lstm", 8, 128, True)
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
    "config", "data", "preprocessing", "embeddings", "ngrams", "model", "batching", "pretraining",
    "training",
    "evaluation",
    "plots", "model_card", "listing", "export", "prediction", "pipeline", "cli", "__main__",
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

import pytest

from keras_sentiment.config import UserError, make_config


def test_defaults_are_valid():
    cfg = make_config({})
    assert (cfg.name, cfg.epochs, cfg.lstm_units, cfg.bidirectional) == ("imdb_lstm", 8, 128, True)
    assert (cfg.sequence_length, cfg.vocab_size, cfg.pooling) == (800, 50000, "max")
    assert not cfg.lemmatize and cfg.embeddings == "glove-6b-50d"


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

"""Language-model pretraining: each direction learns its task, reaches the classifier, is cached."""

import numpy as np
import pytest

from keras_sentiment.config import Config
from keras_sentiment.network.model import build_model
from keras_sentiment.training.pretraining import cache_key, corpus, load_pretrained, pretrain

from .helpers import model_config

VOCAB = 8  # padding, OOV and the tokens 2..7 of a cycle


def cycles(n: int, seed: int = 0) -> list[np.ndarray]:
    """Texts walking the cycle 2, 3, ..., 7, 2, ...: the next and previous word are certain."""
    rng = np.random.default_rng(seed)
    starts, lengths = rng.integers(0, 6, n), rng.integers(8, 31, n)
    return [(2 + (s + np.arange(k)) % 6).astype(np.int32) for s, k in zip(starts, lengths)]


def tiny(tmp_path, **overrides) -> Config:
    values = dict(lstm_units=16, batch_size=16, pretrain_epochs=1, runs_dir=str(tmp_path))
    return model_config(**{**values, **overrides})


@pytest.mark.slow  # pretraining is not a default stage
def test_pretrained_directions_predict_the_next_and_the_previous_word(tmp_path, capsys):
    cfg = tiny(tmp_path, pretrain_epochs=12)
    weights = pretrain(cfg, cycles(384), None, VOCAB)
    assert "pretraining epoch 12/12" in capsys.readouterr().out

    # In the classifier, the Bidirectional layer's forward states must predict the next word
    # and its backward states, in Keras' time order, the previous word.
    model = build_model(cfg, VOCAB, 2, None)
    load_pretrained(model, weights)
    units = cfg.lstm_units
    for row in cycles(4, seed=1):
        hidden = np.asarray(model.get_layer(index=2)(model.get_layer("embedding")(row[None])))[0]
        for name, half, shift in [
            ("forward", slice(0, units), 1),
            ("backward", slice(units, None), -1),
        ]:
            kernel, bias = weights[f"{name}/softmax_kernel"], weights[f"{name}/softmax_bias"]
            predicted = (hidden[:, half] @ kernel.T + bias)[:, 2:].argmax(-1) + 2  # real tokens
            inner = slice(1, len(row) - 1)  # the words that have both neighbours
            assert (predicted[inner] == np.roll(row, -shift)[inner]).mean() > 0.9, name


@pytest.mark.slow  # pretraining is not a default stage
def test_pretraining_is_cached_by_content(tmp_path, capsys):
    cfg = tiny(tmp_path)
    rows = cycles(48)
    first = pretrain(cfg, rows, None, VOCAB)
    capsys.readouterr()
    again = pretrain(cfg, rows, None, VOCAB)
    assert "reusing" in capsys.readouterr().out
    assert first.keys() == again.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert len(list((tmp_path / ".pretrained").glob("*.npz"))) == 1

    # What the key leaves out must not change the result: the seed and fine-tuning's rate.
    other = pretrain(tiny(tmp_path / "other", seed=7, learning_rate=1e-4), rows, None, VOCAB)
    assert all(np.array_equal(first[k], other[k]) for k in first)

    # Another seed shares the entry; other texts or settings do not.
    key = cache_key(cfg, rows, None)
    assert cache_key(tiny(tmp_path, seed=7), rows, None) == key
    assert cache_key(tiny(tmp_path, learning_rate=1e-4), rows, None) == key
    assert cache_key(tiny(tmp_path, pretrain_epochs=2), rows, None) != key
    assert cache_key(tiny(tmp_path, embedding_dim=4), rows, None) != key
    assert cache_key(cfg, rows[:-1], None) != key
    assert cache_key(cfg, rows, np.ones((VOCAB, 8), np.float32)) != key


def test_the_corpus_does_not_depend_on_how_a_seed_split_it():
    texts = np.array([b"c", b"a", b"d", b"b"], dtype=object)
    one = corpus(texts[:2], texts[2:])
    other = corpus(texts[[3, 0]], texts[[2, 1]])
    assert one.tolist() == other.tolist() == [b"a", b"b", b"c", b"d"]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_load_pretrained_fills_the_embedding_and_the_first_lstm(tmp_path, bidirectional):
    cfg = tiny(tmp_path, bidirectional=bidirectional, lstm_layers=2)
    rng = np.random.default_rng(0)
    units, dim = cfg.lstm_units, cfg.embedding_dim
    weights = {"embedding": rng.normal(size=(VOCAB, dim)).astype(np.float32)}
    for name in ["forward", "backward"] if bidirectional else ["forward"]:
        weights[f"{name}/kernel"] = rng.normal(size=(dim, 4 * units)).astype(np.float32)
        weights[f"{name}/recurrent_kernel"] = rng.normal(size=(units, 4 * units)).astype(np.float32)
        weights[f"{name}/bias"] = rng.normal(size=(4 * units,)).astype(np.float32)
    model = build_model(cfg, VOCAB, 2, None)
    second = [np.asarray(v) for v in model.layers[3].weights]
    load_pretrained(model, weights)
    assert np.array_equal(model.get_layer("embedding").embeddings, weights["embedding"])
    first = model.layers[2]
    cells = (
        {"forward": first.forward_layer.cell, "backward": first.backward_layer.cell}
        if bidirectional
        else {"forward": first.cell}
    )
    for name, cell in cells.items():
        for part in ("kernel", "recurrent_kernel", "bias"):
            assert np.array_equal(getattr(cell, part), weights[f"{name}/{part}"])
    # The second layer reads both directions' states at once: it has no LM of its own.
    assert all(np.array_equal(a, b) for a, b in zip(second, model.layers[3].weights))


@pytest.mark.slow
def test_fit_with_pretraining_reads_unlabeled_reviews(tmp_path, capsys):
    from keras_sentiment.api import fit

    cfg = dict(
        max_train=300,
        max_test=100,
        sequence_length=64,
        lstm_units=8,
        epochs=1,
        pretrain_epochs=1,
        runs_dir=str(tmp_path / "runs"),
        output_dir=str(tmp_path / "saved_models"),
    )
    first = fit(Config(**cfg))
    pre = first.summary.pretraining
    # 300 training texts (270 train + 30 validation) and 300 of the 50,000 unlabeled.
    assert (pre.texts, pre.unlabeled_texts) == (600, 300)
    card = (first.export_path / "assets.extra" / "MODEL_CARD.md").read_text()
    assert "- Unlabeled texts: 300," in card
    assert "reusing" not in capsys.readouterr().out
    # The cache (reused by content, the same weights) is test_pretraining_is_cached_by_content.
    assert len(list((tmp_path / "runs" / ".pretrained").glob("*.npz"))) == 1


def test_unlabeled_texts_come_from_a_file_a_folder_or_the_data_set(tmp_path, toy_csv):
    from keras_sentiment.config import UserError
    from keras_sentiment.data.splits import load_unlabeled

    lines = tmp_path / "more.txt"
    lines.write_bytes(b"first text\n\nsecond text\r\nthird\n")
    assert load_unlabeled(Config(unlabeled=str(lines))).tolist() == [
        b"first text",
        b"second text",
        b"third",
    ]
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_bytes(f"text {i}\nwith two lines".encode())
    assert len(load_unlabeled(Config(unlabeled=str(folder)))) == 3
    assert len(load_unlabeled(Config(unlabeled=str(folder), max_train=2))) == 2
    assert len(load_unlabeled(Config(dataset=str(toy_csv)))) == 0  # a CSV has none of its own
    for bad in (tmp_path / "missing.txt", toy_csv):
        with pytest.raises(UserError, match="unlabeled: "):
            load_unlabeled(Config(unlabeled=str(bad)))

"""The mix: n-gram members (NB-LR on word or char n-grams) stacked with the LSTM on log-odds,
the same in the graph as in their references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sentiment.config import Config, UserError
from keras_sentiment.network.mix import Mix, char_order, fit_mix, fit_stack, log_odds
from keras_sentiment.network.model import split_text_model, text_model
from keras_sentiment.network.ngrams import CHARS, WORDS, fit_member, ngram_keys
from keras_sentiment.reporting.evaluation import mix_rows
from keras_sentiment.text.preprocessing import vectorize

from .helpers import HOSTILE_BYTES, synthetic_reviews

# Hostile texts, the 5 MB one cut to a text longer than the sequence length: reading 5 MB
# once costs a process about 20 s (a one-time cost of the string ops), and other suites hold it.
ODD = [t for t in HOSTILE_BYTES if len(t) < 10_000] + [b"great " * 1_000]


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """The tiny run's preprocessor and network, and 600 new labeled reviews read by it."""
    pre, network, _ = split_text_model(tiny_run["run"].model)
    texts, labels = synthetic_reviews(600, seed=1)
    texts = np.array(
        [t.encode() for t in texts + [b.decode("utf-8", "replace") for b in ODD]],
        dtype=object,
    )
    words, rows = vectorize(pre, texts, words=True)
    labels = np.array([int(y == "pos") for y in labels])
    return pre, network, words, rows, labels


@pytest.fixture(scope="module")
def members(tiny):
    """A word and a char member fitted on 400 reviews, C picked on 200."""
    pre, _, words, rows, labels = tiny
    train, val = (
        (words[:400], rows[:400], labels[:400]),
        (words[400:600], rows[400:600], labels[400:]),
    )
    fitted = {}
    for kind, order in ((WORDS, 3), (CHARS, 4)):
        fitted[kind] = fit_member(kind, order, len(pre.vocabulary), train, val, seed=1)
    return fitted


def padded(words: list, rows: list) -> tuple[tf.Tensor, tf.Tensor]:
    width = max(1, *(len(r) for r in rows))
    ids = np.zeros((len(rows), width), np.int32)
    read = np.full((len(rows), width), b"", dtype=object)
    for i, (w, r) in enumerate(zip(words, rows)):
        ids[i, : len(r)], read[i, : len(w)] = r, w
    return tf.constant(read, tf.string), tf.constant(ids)


def reference_logit(member, word_list: np.ndarray, row: np.ndarray) -> float:
    """The logit by hand: every distinct n-gram of the text, looked up in a dict."""
    weights = dict(zip(member.keys.numpy().tolist(), member.coefficients.numpy().tolist()))
    if member.kind == WORDS:
        grams = {
            tuple(row[i : i + n])
            for n in range(1, member.order + 1)
            for i in range(len(row) - n + 1)
        }
        keys = set()
        for gram in grams:
            key = 0
            for token in gram:
                key = key * member.vocabulary_size + int(token)
            keys.add(key)
    else:  # scikit-learn's char_wb: each word padded with a space each side
        grams = set()
        for word in word_list:
            chars = f" {word.decode('utf-8')} "
            grams |= {
                chars[i : i + n]
                for n in range(2, member.order + 1)
                for i in range(len(chars) - n + 1)
            }
        keys = (
            set(tf.strings.to_hash_bucket_fast(sorted(grams), 2**63 - 1).numpy().tolist())
            if grams
            else set()
        )
    return float(member.bias.numpy()) + sum(weights.get(k, 0.0) for k in keys)


@pytest.mark.parametrize("kind", [WORDS, CHARS])
def test_a_member_scores_as_its_reference(tiny, members, kind):
    _, _, words, rows, labels = tiny
    member, val_logits, info = members[kind]
    assert info["ngrams"] == member.size > 300 and info["kind"] == kind
    assert info["validation_accuracy"] > 0.8  # it learned from 400 reviews
    # The validation logits come from the fit on train alone (C picked on validation).
    assert (
        val_logits.shape == (200,)
        and np.mean((val_logits > 0) == labels[400:]) == info["validation_accuracy"]
    )
    # Rows of different lengths padded together, repeats of n-grams, hostile texts, an empty one.
    batch = list(range(400, 440)) + list(range(600, len(rows)))
    read, ids = padded([words[i] for i in batch], [rows[i] for i in batch])
    got = member.logits(read, ids).numpy()
    expected = [reference_logit(member, words[i], rows[i]) for i in batch]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # One text alone is the same as padded among longer ones.
    alone = [member.logits(*padded([words[i]], [rows[i]])).numpy()[0] for i in batch[:5]]
    np.testing.assert_allclose(alone, got[:5], rtol=0, atol=1e-5)
    if kind == CHARS:  # a word's edges are n-grams too (a space each side, as char_wb)
        edges = sorted({f" {w.decode()[:2]}" for i in range(400) for w in words[i]})
        fingerprints = tf.strings.to_hash_bucket_fast(edges, 2**63 - 1).numpy()
        assert np.isin(fingerprints, member.keys.numpy()).any()
    # Each word's share: the rows' shares sum to the logit less the bias, exactly.
    shares = member.shares(read, ids).numpy()
    np.testing.assert_allclose(shares.sum(1), got - member.bias.numpy(), atol=1e-4)
    assert not shares[ids.numpy() == 0].any()  # padding has no share


def test_the_members_are_refitted_on_train_and_validation(tiny, members):
    pre, _, words, rows, labels = tiny
    member, _, _ = members[WORDS]
    # An n-gram seen only in two validation texts is kept: the refit read them.
    train_keys = np.unique(
        np.concatenate([ngram_keys(r, 3, len(pre.vocabulary)) for r in rows[:400]])
    )
    assert len(np.setdiff1d(member.keys.numpy(), train_keys)) > 0


def test_the_stack_keeps_what_helps_and_never_loses_to_a_part():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    signal = np.where(labels == 1, 1.0, -1.0)
    strong, weak = signal * 2 + rng.normal(0, 2, 400), signal + rng.normal(0, 3, 400)
    noise = rng.normal(0, 1, 400)
    stack = fit_stack({"lstm": weak, "words": strong, "chars": noise}, labels, seed=0)
    c = stack["coefficients"]
    assert c["words"] > c["lstm"] > 0  # both informative parts have a say, the stronger more
    assert stack["mixed"] >= max(stack["parts"].values())
    # A part that only adds noise is dropped (refitted without it), or kept near 0.
    assert c["chars"] == 0 or abs(c["chars"]) < 0.2 * c["words"]
    # A part that would count backwards (a negative coefficient) is dropped, the rest refitted.
    backwards = fit_stack({"lstm": weak, "words": strong, "chars": -weak}, labels, seed=0)
    assert backwards["coefficients"]["chars"] == 0 and backwards["coefficients"]["lstm"] > 0
    # Where one part alone beats the stack (cross-validated), it answers alone: its
    # coefficient 1, bias 0. On 30 texts the stack leans on a confident part that is wrong
    # 30% of the time; a timid part that is always right wins.
    labels = np.array([0, 1] * 15)
    signal = np.where(labels == 1, 1.0, -1.0)
    confident = np.where(np.random.default_rng(0).random(30) < 0.3, -signal, signal) * 3
    alone = fit_stack({"lstm": confident, "words": signal * 0.3}, labels, seed=0)
    assert alone["coefficients"] == {"lstm": 0.0, "words": 1.0} and alone["bias"] == 0.0
    assert alone["mixed"] == 1.0 > alone["parts"]["lstm"]


def test_the_mix_layer_the_report_and_the_formula_agree(tiny, members):
    pre, network, words, rows, labels = tiny
    kept = [members[WORDS][0], members[CHARS][0]]
    mix = Mix(kept, 0.7, [0.5, 0.25], -0.1)
    batch = list(range(400, 440)) + list(range(600, len(rows)))
    read, ids = padded([words[i] for i in batch], [rows[i] for i in batch])
    lstm = network(ids).numpy()
    by_hand = -0.1 + 0.7 * np.asarray(log_odds(lstm))
    by_hand += 0.5 * kept[0].logits(read, ids).numpy() + 0.25 * kept[1].logits(read, ids).numpy()
    layer = mix([read, ids, tf.constant(lstm)]).numpy()
    np.testing.assert_allclose(layer[:, 1], 1 / (1 + np.exp(-by_hand)), atol=1e-5)
    np.testing.assert_allclose(layer.sum(1), 1, atol=1e-5)
    mixed, parts = mix_rows(mix, [words[i] for i in batch], [rows[i] for i in batch], lstm)
    np.testing.assert_allclose(mixed, layer, atol=1e-5)
    assert set(parts) == {"lstm", WORDS, CHARS}
    # The raw-text model reads the same words and gives the same answer, and survives saving.
    model = text_model(pre, network, mix, ["neg", "pos"])
    texts = tf.constant(ODD)
    direct = model(texts).numpy()
    restored = keras.models.Model.from_config(model.get_config())
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(restored(texts).numpy(), direct, atol=1e-6)


def test_fit_mix_stacks_on_validation_and_says_so(tiny, capsys):
    pre, network, words, rows, labels = tiny
    train, val = (
        (words[:400], rows[:400], labels[:400]),
        (words[400:600], rows[400:600], labels[400:]),
    )
    read, ids = padded(val[0], val[1])
    mix, info, fitted = fit_mix(
        Config(ngrams=2, seed=1), 3, len(pre.vocabulary), train, val, network(ids).numpy()
    )
    assert [m["kind"] for m in info["members"]] == [m.kind for m in fitted] == [WORDS, CHARS]
    assert info["validation_texts"] == 200 and set(info["coefficients"]) == {"lstm", WORDS, CHARS}
    accuracy = info["validation_accuracy"]
    assert accuracy["mixed"] >= max(accuracy[p] for p in ("lstm", WORDS, CHARS))
    kept = [m.kind for m in mix.members] if mix else []
    assert kept == [k for k in (WORDS, CHARS) if info["coefficients"][k]]
    assert "mix: log-odds =" in capsys.readouterr().out


def test_chars_join_by_default_for_short_texts_only():
    short, long = [np.ones(20)] * 5, [np.ones(300)] * 5
    assert char_order(Config(), short) == 5 and char_order(Config(), long) == 0
    assert char_order(Config(char_ngrams=0), short) == 0
    assert char_order(Config(char_ngrams=3), long) == 3
    with pytest.raises(UserError, match="char_ngrams"):
        Config(char_ngrams=1).validate()


def test_keys_keep_each_order_apart():
    keys = ngram_keys(np.array([3, 1, 3, 1]), 3, 10)
    # 1-grams 1, 3; 2-grams 31, 13; 3-grams 313, 131: distinct, each once.
    assert keys.tolist() == [1, 3, 13, 31, 131, 313]
    empty = ([], [], np.array([]))
    with pytest.raises(UserError, match="overflows int64"):
        fit_member(WORDS, 4, 3_000_000, empty, empty, seed=0)


def test_models_from_before_the_stacked_mix_still_load_and_predict(tiny, tmp_path):
    from keras_sentiment.config import UserError as Refused
    from keras_sentiment.network.ngrams import NgramMix
    from keras_sentiment.serving.explanation import keras_explain_function

    pre, network, words, rows, _ = tiny
    old = NgramMix(3, len(pre.vocabulary), 2, 0.5)
    old.keys.assign(np.array(sorted(ngram_keys(rows[0], 1, len(pre.vocabulary))[:2]), np.int64))
    old.coefficients.assign(np.array([1.0, -2.0], np.float32))
    # The raw-text model as the package built it then: ids in, the mix on ids and the LSTM.
    text = keras.Input(shape=(), dtype="string", name="text")
    ids = pre(text)
    model = keras.Model(text, old([ids, network(ids)]))
    model.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    texts = tf.constant([b"a wonderful film", b""])
    np.testing.assert_allclose(loaded(texts).numpy(), model(texts).numpy(), atol=1e-6)
    with pytest.raises(Refused, match="fit it again"):
        keras_explain_function(loaded)

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sentiment.config import Config
from keras_sentiment.text.preprocessing import (
    OOV,
    PAD,
    TextPreprocessor,
    TokenMap,
    adapt_preprocessor,
    ids_of_one,
    lemma_table,
    load_stopwords,
    separate,
    standardize,
    token_ids,
    tokens_and_ids,
    vectorize,
)

from .helpers import NEGATIVE, POSITIVE


def clean(text) -> str:
    return standardize(tf.constant([text])).numpy()[0].decode()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Great<br /><br />movie", "great movie"),
        ("I didn't like it", "i did n't like it"),
        ("It's NOT good!!", "it 's not good ! !"),
        ("can't won't", "ca n't wo n't"),
        ("Well... ok, fine.", "well ok fine"),
        ("'quoted' words", "quoted words"),
        ("&amp; <i>italic</i>", "italic"),
        ("Was it good?", "was it good ?"),
        ("Café übel", "café übel"),
    ],
)
def test_standardize(raw, expected):
    assert clean(raw) == expected


def test_standardize_survives_hostile_input():
    cases = {
        "": "",
        "   ": "",
        "<br/>": "",  # markup is not a word
        "!!!": "! ! !",  # punctuation kept as tokens: "!!!" says something
        "😀🎬": "",
        "日本語": "日本語",  # other scripts survive
        "\x00": "",
        "I <b>didn't</b> LIKE it!!": "i did n't like it ! !",  # negation split off, kept
        "Great.<br /><br />Really": "great really",
        "x" * 100_000: "x" * 100_000,
    }
    out = standardize(tf.constant(list(cases))).numpy()
    assert [o.decode() for o in out] == list(cases.values())
    assert clean(b"bad\xff\xfebytes") == "bad bytes"


def test_invalid_utf8_is_cleaned_as_after_a_transcode():
    # standardize() relies on lower() replacing bad bytes as unicode_transcode does.
    rng = np.random.default_rng(0)
    pieces = [b"good", b"don't", b"<br />", b" ", b"!", b"\x00", "\u00e9".encode(), b"\x80",
              b"\xff", b"\xc3", b"\xe2\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
              b"\xc3(", "\u2019".encode(), "\U0001f600".encode()[:3], b"N'T"]  # fmt: skip
    texts = [rng.bytes(int(n)) for n in rng.integers(1, 20, 500)]
    for n in rng.integers(1, 12, 1500):
        texts.append(b"".join(pieces[i] for i in rng.integers(0, len(pieces), n)))
    transcoded = tf.strings.unicode_transcode(
        tf.constant(texts), "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    assert standardize(tf.constant(texts)).numpy().tolist() == (
        standardize(transcoded).numpy().tolist()
    )


def reference_standardize(texts: tf.Tensor) -> tf.Tensor:
    """The ten passes standardize() made before 2026-12-01, one space between tokens."""
    a = "\x01"
    x = tf.strings.lower(tf.strings.regex_replace(texts, "\x00", " "), encoding="utf-8")
    x = tf.strings.regex_replace(x, r"<[^>]*>|&[a-z]+;", " ")
    x = tf.strings.regex_replace(x, "[’‘`´]", "'")
    x = tf.strings.regex_replace(x, r"n't\b", f" n{a}t")
    x = tf.strings.regex_replace(x, r"(\pL)'(s|re|ve|ll|d|m)\b", rf"\1 {a}\2")
    x = tf.strings.regex_replace(x, rf"[^\pL\pN{a}!?]+", " ")
    x = tf.strings.regex_replace(x, r"([!?])", r" \1 ")
    x = tf.strings.regex_replace(x, a, "'")
    return tf.strings.strip(tf.strings.regex_replace(x, " +", " "))


def test_separate_gives_the_tokens_of_the_old_passes():
    # The preprocessor splits separate()'s output, whose spaces are left as they fall; its
    # tokens must be those of the passes every earlier model was trained on, on markup,
    # punctuation runs, odd spaces and bad bytes.
    rng = np.random.default_rng(1)
    pieces = [b"good", b"don't", b"<br />", b" ", b"  ", b"!", b"?!", b"\x00", b"\t", b"\n\r",
              "\u00a0".encode(), "\u3000".encode(), b"--", b"...", b"'s", b"<a href='x y'>",
              b"&amp;", b"\xff", b"\xc3(", "\u2019".encode(), "caf\u00e9".encode(),
              b"N'T"]  # fmt: skip
    texts = [b"".join(pieces[i] for i in rng.integers(0, len(pieces), n))
             for n in rng.integers(1, 16, 3000)]  # fmt: skip
    texts += [rng.bytes(int(n)) for n in rng.integers(1, 40, 1000)]
    got = tf.strings.split(separate(tf.constant(texts))).to_list()
    assert got == tf.strings.split(reference_standardize(tf.constant(texts))).to_list()
    assert standardize(tf.constant(texts)).numpy().tolist() == (
        reference_standardize(tf.constant(texts)).numpy().tolist()
    )


def test_stopwords_never_drop_negations():
    words = load_stopwords()
    assert "the" in words and "and" in words
    for negation in ["not", "no", "nor", "n't", "don't", "didn", "wasn", "never"]:
        assert negation not in words


def test_lemma_table_rule():
    table = lemma_table(["movies", "loved", "running", "films", "as", "was", "better"], set())
    assert table["movies"] == "movie" and table["loved"] == "love" and table["running"] == "run"
    assert "as" not in table and "was" not in table  # short words are left alone
    assert "better" not in table  # comparatives keep their degree


@pytest.fixture(scope="module")
def pre() -> TextPreprocessor:
    texts = np.array([t.encode() for t in POSITIVE + NEGATIVE], dtype=object)
    return adapt_preprocessor(Config(vocab_size=60, sequence_length=6, lemmatize=True), texts)


def test_vocabulary_layout_and_lemmas(pre):
    vocab = pre.vocabulary
    assert vocab[:2] == ["", "[UNK]"] and len(vocab) <= 60
    assert "movie" in vocab and "movies" not in vocab  # lemmatized before counting
    assert pre.mapping["movies"] == "movie"


def test_ids_right_padded_truncated_and_never_empty(pre):
    ids = pre(tf.constant(["", "great", "a b c d e f g h great"])).numpy()
    assert ids.shape == (3, 6)
    assert ids[0].tolist() == [OOV, 0, 0, 0, 0, 0]  # empty -> one OOV token
    assert ids[1][0] == pre.vocabulary.index("great") and ids[1][1:].sum() == 0
    assert ids[2][-1] == pre.vocabulary.index("great")  # "pre": the end is kept


def test_ids_of_one_text_are_its_row_of_the_batch(pre):
    texts = ["", "   ", "great", "a b c d e f g h great", "I loved these movies!", "\x00\xff"]
    post = TextPreprocessor.from_config({**pre.get_config(), "truncate": "post"})
    dropping = TextPreprocessor.from_config({**pre.get_config(), "drop": ["great", "movie"]})
    for layer in (pre, post, dropping):
        rows = layer(tf.constant(texts)).numpy()
        words, _ = tokens_and_ids(layer, tf.constant(texts))
        for text, row, row_words in zip(texts, rows, words.numpy()):
            one = ids_of_one(layer, tf.constant(text)).numpy()
            assert one.dtype == np.int32
            n = max(1, np.count_nonzero(row))
            assert one.tolist() == row[:n].tolist()
            one_words, _ = token_ids(layer, tf.constant(text), words=True)
            assert one_words.numpy().tolist() == row_words[:n].tolist()


def test_truncate_post_keeps_the_start(pre):
    post = TextPreprocessor.from_config({**pre.get_config(), "truncate": "post"})
    ids = post(tf.constant(["great a b c d e f g h"])).numpy()
    assert ids[0][0] == pre.vocabulary.index("great")


def test_config_round_trip_and_vectorize(pre):
    again = TextPreprocessor.from_config(pre.get_config())
    texts = np.array([b"I loved these movies", b"", b"awful"], dtype=object)
    assert np.array_equal(again(tf.constant(list(texts))), pre(tf.constant(list(texts))))
    rows = vectorize(pre, texts)
    assert [len(r) for r in rows] == [4, 1, 1]
    assert all((r > 0).all() for r in rows)


def test_one_table_equals_lemmas_then_stopwords_then_vocabulary():
    # The preprocessor's single token -> id table against the steps it folds together:
    # TokenMap (lemmas, stopwords) and then TextVectorization, on real reviews.
    import tensorflow_datasets as tfds

    # The first 600 reviews of IMDB's test split, as the package reads them (in file order),
    # without reading the other 24,400.
    first = tfds.builder("imdb_reviews").as_dataset(split="test[:600]", shuffle_files=False)
    reviews = next(iter(tfds.as_numpy(first.batch(600))))["text"]
    # "found" -> "find" while "founding" -> "found": a lemma that is itself mapped elsewhere.
    special = b"I found it, founding a firm; she finds. Having had it, the movies were better!"
    texts = [special] * 20 + [bytes(t) for t in reviews]
    cfg = Config(vocab_size=3000, sequence_length=50, lemmatize=True, remove_stopwords=True)
    pre = adapt_preprocessor(cfg, np.array(texts[:400], dtype=object))
    assert pre.mapping["found"] == "find" and pre.mapping["founding"] == "found"
    assert "found" in pre.vocabulary
    assert "the" in pre.drop and len(pre.mapping) > 100
    vectorizer = keras.layers.TextVectorization(
        standardize=None, split="whitespace", vocabulary=pre.vocabulary, ragged=True
    )
    queries = texts[400:] + [special, b"", b"   ", b"the the", b"\xff\xfe bad \x80", b"XYZZY the"]
    expected = vectorizer(TokenMap(pre.mapping, pre.drop)(standardize(tf.constant(queries))))
    got = pre(tf.constant(queries)).numpy()
    for row, ids in zip(got, expected.numpy()):
        ids = list(ids[-cfg.sequence_length :]) or [OOV]
        assert row.tolist() == ids + [PAD] * (cfg.sequence_length - len(ids))


def test_stopword_removal_in_graph():
    texts = np.array([b"the movie was not good and the end", b"a film"] * 3, dtype=object)
    pre = adapt_preprocessor(
        Config(vocab_size=50, sequence_length=10, remove_stopwords=True, lemmatize=False), texts
    )
    words = pre.vocabulary
    assert "the" not in words and "not" in words

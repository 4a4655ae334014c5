"""Preprocessing: standardize, lemmatize (NLTK at adapt time only), vectorize, as Keras layers.

Every step is a Keras layer made of `tf.*` ops with a `get_config`, so the exported SavedModel
takes raw strings and TF Serving runs exactly the preprocessing that training saw, with no
Python. NLTK runs once, over the training vocabulary; its answers travel as a lookup table.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.config import Config, UserError, spelled

PAD, OOV = 0, 1
# Markers that cannot survive standardization, so they never collide with a real token.
_APOSTROPHE = "\x01"
_DROP = " "
DROPPED = -1  # the id of a dropped token, before it is dropped
NEGATIONS = {"no", "not", "nor", "never", "n't", "none", "nobody", "nothing", "neither", "nowhere"}


def separate(texts: tf.Tensor) -> tf.Tensor:
    """Clean raw reviews into tokens separated by runs of spaces, as `tf.strings.split` reads them.

    Keeps negations, '!' and '?'. The token stream of `standardize`, without its one-space
    layout: collapsing a review's runs of spaces would cost two more regex passes over every
    space (the tokens are identical; tests/test_preprocessing.py checks on hostile strings).
    """
    # lower() decodes with ICU, replacing every invalid UTF-8 sequence by U+FFFD exactly as
    # unicode_transcode(errors="replace") would (tested), so no op after it sees bad bytes and
    # no transcode pass is needed. lower() stops at a NUL byte, hence the first replace.
    x = tf.strings.regex_replace(texts, "\x00", " ")
    x = tf.strings.lower(x, encoding="utf-8")
    x = tf.strings.regex_replace(x, r"<[^>]*>|&[a-z]+;", " ")  # IMDB's <br /> and entities
    x = tf.strings.regex_replace(x, "[’‘`´]", "'")
    # Split clitics as GloVe's tokenizer did ("don't" -> "do n't"), guarding their apostrophe.
    x = tf.strings.regex_replace(x, r"n't\b", f" n{_APOSTROPHE}t")
    x = tf.strings.regex_replace(x, r"(\pL)'(s|re|ve|ll|d|m)\b", rf"\1 {_APOSTROPHE}\2")
    # One pass: '!' and '?' become tokens of their own, every other run of characters that
    # are neither letters, digits nor spaces a space (spaces are left: each would be a match).
    x = tf.strings.regex_replace(x, rf"([!?])|[^\pL\pN{_APOSTROPHE}!? ]+", r" \1 ")
    return tf.strings.regex_replace(x, _APOSTROPHE, "'")


def standardize(texts: tf.Tensor) -> tf.Tensor:
    """Clean raw reviews into space-separated tokens, keeping negations, '!' and '?'."""
    return tf.strings.strip(tf.strings.regex_replace(separate(texts), " +", " "))


def _string_layer(layer: keras.layers.Layer) -> None:
    # String tensors in (Keras casts only float inputs to the compute dtype, so they pass as
    # they are): string ops have no XLA kernels.
    layer.supports_jit = False
    layer.built = True  # all state is made in __init__; export refuses unbuilt layers


@keras.saving.register_keras_serializable(package="keras_sentiment")
class TokenMap(keras.layers.Layer):
    """Maps each token through a fixed table (lemmas) and drops listed tokens (stopwords).

    Used where the vocabulary is counted; TextPreprocessor folds the same rules into its ids.
    """

    def __init__(self, mapping: dict[str, str] | None = None, drop=(), **kwargs):
        super().__init__(**kwargs)
        _string_layer(self)
        self.mapping = dict(mapping or {})
        self.drop = sorted(drop)
        keys = list(self.mapping) + self.drop
        values = list(self.mapping.values()) + [_DROP] * len(self.drop)
        self.table = None
        if keys:
            init = tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys, tf.string), tf.constant(values, tf.string)
            )
            self.table = tf.lookup.StaticHashTable(init, default_value="")

    def call(self, texts):
        if self.table is None:
            return texts
        tokens = tf.strings.split(texts)
        found = self.table.lookup(tokens.flat_values)
        mapped = tf.where(tf.equal(found, ""), tokens.flat_values, found)
        tokens = tokens.with_flat_values(mapped)
        if self.drop:
            tokens = tf.ragged.boolean_mask(tokens, tf.not_equal(tokens, _DROP))
        return tf.strings.reduce_join(tokens, axis=-1, separator=" ")

    def get_config(self):
        return {**super().get_config(), "mapping": self.mapping, "drop": self.drop}


@keras.saving.register_keras_serializable(package="keras_sentiment")
class TextPreprocessor(keras.layers.Layer):
    """Raw strings -> right-padded token ids [batch, time], never empty, cut to a length."""

    def __init__(
        self,
        vocabulary: list[str],
        sequence_length: int,
        truncate: str = "pre",
        mapping: dict[str, str] | None = None,
        drop=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        _string_layer(self)
        self.sequence_length = sequence_length
        self.truncate = truncate
        self._vocabulary = [str(token) for token in vocabulary]
        self.mapping, self.drop = dict(mapping or {}), sorted(drop)
        # One table from each raw token to its id, the lemma and stopword rules folded in,
        # so a text is split and looked up once, lemmatized or not. (A TokenMap in front of
        # TextVectorization would split, look up, join and split again at every request.)
        index = {token: i for i, token in enumerate(self._vocabulary) if i > OOV}
        ids = dict(index)
        ids.update({token: index.get(lemma, OOV) for token, lemma in self.mapping.items()})
        ids.update({token: DROPPED for token in self.drop})
        init = tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(ids), tf.string), tf.constant(list(ids.values()), tf.int64)
        )
        self.table = tf.lookup.StaticHashTable(init, default_value=OOV)

    def call(self, texts, words=False):
        """Right-padded ids [batch, time]; with `words`, the words as read and their ids."""
        return token_ids(self, texts, words=words)

    @property
    def vocabulary(self) -> list[str]:
        return list(self._vocabulary)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "sequence_length": self.sequence_length,
            "truncate": self.truncate,
            "mapping": self.mapping,
            "drop": self.drop,
        }


def token_ids(pre: TextPreprocessor, texts: tf.Tensor, words: bool = False):
    """Texts -> the token ids the model reads: every rule of reading, in this one function.

    Split into tokens (`separate`), each looked up in the preprocessor's one table (its lemma's
    id, OOV for an unknown token, DROPPED for a stopword), stopwords dropped, cut to the
    sequence length at the end or the start (`truncate`); an empty text reads one OOV token
    (a fully masked row breaks the LSTM on GPU). The preprocessor's `call`, the served graph's
    single review (`ids_of_one`) and the explanation's words (`tokens_and_ids`) all read here.

    Args:
        pre: the preprocessor (its table, `drop`, `sequence_length`, `truncate`).
        texts: a batch of texts [batch], or one text (a scalar string), the commonest serving
            request, which as a plain vector needs none of a batch's ragged bookkeeping.
        words: also return the tokens, aligned with the ids.

    Returns:
        int32 ids: [batch, time] right-padded with PAD (right padding only: cuDNN's
        condition), at least one column; for one text [time], unpadded. With `words`, the
        tokens and the ids, the tokens "" on padding and the vocabulary's OOV token ("[UNK]")
        for an empty text's one id.
    """
    one = texts.shape.rank == 0
    if one:  # the op under tf.strings.split, without its ragged wrapping
        tokens = tf.raw_ops.StringSplitV2(input=separate(texts)[None], sep="").values
    else:
        tokens = tf.strings.split(separate(texts))
    ids = tf.cast(pre.table.lookup(tokens), tf.int32)
    read = [ids, tokens] if words else [ids]  # the ids, and the tokens beside them
    if pre.drop:
        read = [tf.ragged.boolean_mask(r, tf.not_equal(ids, DROPPED)) for r in read]
    n = pre.sequence_length
    read = [r[..., -n:] if pre.truncate == "pre" else r[..., :n] for r in read]
    if one:  # [time], at least one step
        read = [tf.pad(r, [[0, tf.maximum(0, 1 - tf.size(r))]]) for r in read]
    else:  # [batch, time], at least one column
        shape = tf.stack([read[0].nrows(), tf.maximum(read[0].bounding_shape(1), 1)])
        read = [r.to_tensor(pad, shape=shape) for r, pad in zip(read, (PAD, ""))]
    empty = tf.equal(read[0][..., :1], PAD)  # a text without a token: padding alone
    unknown = (OOV, tf.constant(pre.vocabulary[OOV]))
    read = [
        tf.concat([tf.where(empty, u, r[..., :1]), r[..., 1:]], -1) for r, u in zip(read, unknown)
    ]
    return (read[1], read[0]) if words else read[0]


def ids_of_one(pre: TextPreprocessor, text: tf.Tensor) -> tf.Tensor:
    """The ids `pre` gives one text (a scalar string), unpadded: [time] int32, never empty."""
    return token_ids(pre, text)


def tokens_and_ids(pre: TextPreprocessor, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The words the model reads and their ids, aligned: [batch, time], padded with "" and 0;
    an empty text reads one unknown token, shown as the vocabulary's (`[UNK]`)."""
    return token_ids(pre, texts, words=True)


def adapt_preprocessor(cfg: Config, train_texts: np.ndarray) -> TextPreprocessor:
    """Learn the token map (NLTK) and the vocabulary from the training texts only."""
    start = time.perf_counter()
    texts = tf.data.Dataset.from_tensor_slices(train_texts.astype(bytes)).batch(1024)
    standardized = texts.map(standardize, num_parallel_calls=tf.data.AUTOTUNE)
    mapping, drop = {}, []
    if cfg.lemmatize or cfg.remove_stopwords:
        counter = keras.layers.TextVectorization(standardize=None, split="whitespace")
        counter.adapt(standardized)
        tokens = [str(t) for t in counter.get_vocabulary()[2:]]
        lemmatizer = wordnet_lemmatizer() if cfg.lemmatize else None
        stopwords = load_stopwords()
        if lemmatizer:
            mapping = lemma_table(tokens, stopwords, lemmatizer)
        if cfg.remove_stopwords:
            drop = sorted(set(tokens) & stopwords)
        print(
            f"preprocessing: {len(tokens)} distinct training tokens, {len(mapping)} lemmatized, "
            f"{len(drop)} stopwords dropped ({time.perf_counter() - start:.1f}s)",
            flush=True,
        )
    token_map = TokenMap(mapping, drop)
    vectorizer = keras.layers.TextVectorization(
        max_tokens=cfg.vocab_size, standardize=None, split="whitespace"
    )
    vectorizer.adapt(standardized.map(token_map, num_parallel_calls=tf.data.AUTOTUNE))
    pre = TextPreprocessor(
        [str(t) for t in vectorizer.get_vocabulary()],
        cfg.sequence_length,
        cfg.truncate,
        mapping,
        drop,
    )
    print(
        f"preprocessing: vocabulary {len(pre.vocabulary)} (of max {cfg.vocab_size}), "
        f"sequence length {cfg.sequence_length}, truncate {cfg.truncate!r} "
        f"({time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    return pre


def vectorize(pre: TextPreprocessor, texts: np.ndarray, batch_size: int = 512, words: bool = False):
    """Token ids of every text, unpadded, computed once in parallel batches.

    Returns:
        A list of int32 id arrays; with `words`, also the words as read (arrays of UTF-8
        bytes, aligned with the ids): `(words, ids)`.
    """
    ds = tf.data.Dataset.from_tensor_slices(texts.astype(bytes)).batch(batch_size)

    def read(texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:  # (words or a placeholder, ids)
        return token_ids(pre, texts, words=True) if words else (tf.zeros([0]), pre(texts))

    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    rows, found = [], []
    for tokens, batch in ds.as_numpy_iterator():
        lengths = np.count_nonzero(batch, axis=1)
        rows.extend(row[:n] for row, n in zip(batch, lengths))
        if words:
            found.extend(row[:n] for row, n in zip(tokens, lengths))
    return (found, rows) if words else rows


def load_stopwords() -> set[str]:
    """NLTK's English stopwords minus every negation, which carries sentiment."""
    from nltk.corpus import stopwords

    try:
        words = set(stopwords.words("english"))
    except LookupError:
        raise UserError(
            "NLTK stopwords not found: run python -c \"import nltk; nltk.download('stopwords')\" "
            "or set NLTK_DATA to a folder holding corpora/stopwords"
        ) from None
    negative = {w for w in words if w in NEGATIONS or w.endswith("n't") or f"{w}'t" in words}
    return words - negative


def wordnet_lemmatizer():
    """NLTK's WordNet lemmatizer, or one clear line on how to get WordNet."""
    from nltk.stem import WordNetLemmatizer

    lemmatizer = WordNetLemmatizer()
    try:
        lemmatizer.lemmatize("movies")
    except LookupError:
        raise UserError(
            "NLTK WordNet not found: run python -c \"import nltk; nltk.download('wordnet')\" "
            "or set NLTK_DATA to a folder holding corpora/wordnet (or pass "
            f"{spelled('lemmatize', False)})"
        ) from None
    return lemmatizer


def lemma_table(tokens: list[str], stopwords: set[str], lemmatizer=None) -> dict[str, str]:
    """token -> WordNet lemma for the tokens that change: verb form first, then noun."""
    lemmatizer = lemmatizer or wordnet_lemmatizer()
    table = {}
    for token in tokens:
        # Short and function words are where WordNet's noun rules misfire ("as" -> "a").
        if len(token) <= 3 or token in stopwords or not token.isalpha():
            continue
        lemma = lemmatizer.lemmatize(token, "v")
        if lemma == token:
            lemma = lemmatizer.lemmatize(token, "n")
        if lemma != token:
            table[token] = lemma
    return table

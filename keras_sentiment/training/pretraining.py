"""Pretraining: the embedding and the LSTM first learn to predict words (Dai & Le 2015).

Each direction of the first LSTM layer is trained as a language model on the training reviews
and the data set's unlabeled ones (IMDB: 50,000): the forward one predicts the next word, the
backward one the previous word, with a sampled softmax so that a 50,000-word vocabulary stays
affordable on a CPU. Their weights, and the embedding they shared, are where fine-tuning
starts. Labels are never read, and the test split is never touched.

The result depends on the texts, the vocabulary and the settings, not on the seed, so it is
cached under `runs/.pretrained/KEY.npz`: the seeds of one recipe share one pretraining, and a
second `fit` with the same settings skips it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from keras_sentiment.config import Config
from keras_sentiment.data.batching import train_dataset
from keras_sentiment.files import write_atomic
from keras_sentiment.network.compiled_lstm import CompiledLSTM

SAMPLED = 512  # classes per sampled softmax: a full softmax over 50,000 words would dwarf the LSTM
SEED = 0  # fixed, so that every seed of a recipe fine-tunes from the same pretraining
LEARNING_RATE, CLIPNORM = 2e-3, 1.0  # the defaults' Adam, fixed: --learning-rate is fine-tuning's
FORMAT = 1  # bump when the method changes, so old cache entries are not reused
PRINT_EVERY = 200  # steps between progress lines


def corpus(*parts: np.ndarray) -> np.ndarray:
    """Texts for the vocabulary and the language model, in one canonical (sorted) order.

    Sorted, so that the vocabulary's ties and the language model's batches are the same
    whichever seed split the training texts into train and validation.
    """
    return np.array(sorted(np.concatenate(parts).tolist()), dtype=object)


def cache_key(cfg: Config, rows: list[np.ndarray], matrix: np.ndarray | None) -> str:
    """Content key of the pretraining: token ids, starting embeddings and every setting."""
    settings = {
        key: getattr(cfg, key)
        for key in (
            "pretrain_epochs",
            "lstm_units",
            "bidirectional",
            "batch_size",
            "train_embeddings",
            "embedding_dim",
        )
    }
    settings.update(format=FORMAT, sampled=SAMPLED, seed=SEED, lr=LEARNING_RATE, clip=CLIPNORM)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for row in rows:
        digest.update(np.int32(len(row)).tobytes() + row.astype(np.int32).tobytes())
    if matrix is not None:
        digest.update(np.ascontiguousarray(matrix, np.float32).tobytes())
    return digest.hexdigest()[:20]


class SampledSoftmax(layers.Layer):
    """Output layer of a language model, trained with a sampled softmax (Jean et al. 2015)."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size

    def build(self, input_shape):
        units = input_shape[-1]
        self.kernel = self.add_weight(shape=(self.vocab_size, units), initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros")

    def call(self, hidden: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        # The default sampler is log-uniform (Zipf), which fits a vocabulary sorted by
        # frequency, as TextVectorization's is.
        losses = tf.nn.sampled_softmax_loss(
            weights=self.kernel,
            biases=self.bias,
            labels=tf.cast(targets[:, None], tf.int64),
            inputs=hidden,
            num_sampled=min(SAMPLED, self.vocab_size - 1),
            num_classes=self.vocab_size,
        )
        # A batch of one-word texts has no target: a zero loss, not the NaN of an empty mean.
        return tf.reduce_sum(losses) / tf.maximum(tf.cast(tf.size(losses), losses.dtype), 1.0)


def pretrain(
    cfg: Config, rows: list[np.ndarray], matrix: np.ndarray | None, vocab_size: int
) -> dict[str, np.ndarray]:
    """Embedding and first-layer LSTM weights after language modelling, from cache if there.

    Args:
        cfg: `pretrain_epochs`, the LSTM's shape, `batch_size` and `runs_dir` (the cache).
        rows: token-id rows of every text the language models read.
        matrix: the starting embeddings (GloVe), or None.
        vocab_size: the vocabulary, the language models' output classes.

    Returns:
        Arrays by name: "embedding", and "forward/kernel", "backward/bias", ... per direction.
    """
    key = cache_key(cfg, rows, matrix)
    path = Path(cfg.runs_dir) / ".pretrained" / f"{key}.npz"
    tokens = sum(len(r) for r in rows)
    if path.is_file():
        print(f"pretraining: reusing {path} ({len(rows)} texts, {tokens:,} tokens)", flush=True)
        with np.load(path) as cached:
            return dict(cached)
    print(
        f"pretraining: language models on {len(rows)} texts ({tokens:,} tokens), "
        f"{cfg.pretrain_epochs} epoch(s); cached as {path}",
        flush=True,
    )
    keras.utils.set_random_seed(SEED)
    embedding, lstms, heads = _language_models(cfg, matrix, vocab_size)
    step = _train_step(embedding, lstms, heads)
    steps = math.ceil(len(rows) / cfg.batch_size)
    batches = iter(train_dataset(rows, np.zeros(len(rows), np.int32), _lm_config(cfg)))
    for epoch in range(cfg.pretrain_epochs):
        start, total, seen = time.perf_counter(), 0.0, 0
        for i in range(steps):
            ids, _ = next(batches)
            total += float(step(ids))
            seen += int(tf.math.count_nonzero(ids))
            if (i + 1) % PRINT_EVERY == 0 or i + 1 == steps:
                seconds = time.perf_counter() - start
                print(
                    f"pretraining epoch {epoch + 1}/{cfg.pretrain_epochs}: step {i + 1}/{steps}, "
                    f"sampled loss {total / (i + 1):.3f}, {seen / seconds:,.0f} tokens/s, "
                    f"{seconds:.0f}s",
                    flush=True,
                )
    weights = {"embedding": np.asarray(embedding.embeddings)}
    for name, lstm, head in zip(("forward", "backward"), lstms, heads):
        for part in ("kernel", "recurrent_kernel", "bias"):
            weights[f"{name}/{part}"] = np.asarray(getattr(lstm.cell, part))
        # The output layers are not fine-tuned; kept so the cache holds whole language models.
        weights[f"{name}/softmax_kernel"] = np.asarray(head.kernel)
        weights[f"{name}/softmax_bias"] = np.asarray(head.bias)
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    write_atomic(path, buffer.getvalue())  # whole or absent: a kill never leaves half a cache
    return weights


def _language_models(cfg: Config, matrix: np.ndarray | None, vocab_size: int) -> tuple:
    """The shared embedding, and an LSTM and a sampled-softmax head per direction, built."""
    dim = cfg.embedding_dim if matrix is None else matrix.shape[1]
    embedding = layers.Embedding(vocab_size, dim, trainable=cfg.train_embeddings or matrix is None)
    embedding.build((None, None))
    if matrix is not None:
        embedding.embeddings.assign(matrix)
    directions = 2 if cfg.bidirectional else 1
    lstms = [CompiledLSTM(cfg.lstm_units, return_sequences=True) for _ in range(directions)]
    heads = [SampledSoftmax(vocab_size) for _ in range(directions)]
    for lstm, head in zip(lstms, heads):
        lstm.build((None, None, dim))
        head.build((None, cfg.lstm_units))
    return embedding, lstms, heads


def _train_step(embedding, lstms: list, heads: list):
    """One Adam step of every direction's language model on a batch of ids."""
    variables = [v for layer in [embedding, *lstms, *heads] for v in layer.trainable_variables]
    optimizer = keras.optimizers.Adam(LEARNING_RATE, clipnorm=CLIPNORM)
    optimizer.build(variables)

    # One trace for every batch shape; CompiledLSTM's loops still compile per shape.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def step(ids):
        lengths = tf.math.count_nonzero(ids, axis=1, dtype=tf.int32)
        with tf.GradientTape() as tape:
            losses = []
            for i, (lstm, head) in enumerate(zip(lstms, heads)):
                # The backward LSTM of a Bidirectional layer reads each text from its last
                # word: the same as reading the text reversed within its length.
                seq = tf.reverse_sequence(ids, lengths, 1, 0) if i else ids
                hidden = lstm(embedding(seq[:, :-1]), mask=seq[:, :-1] > 0, training=True)
                targets = seq[:, 1:]
                real = targets > 0
                losses.append(head(tf.boolean_mask(hidden, real), tf.boolean_mask(targets, real)))
            loss = tf.add_n(losses) / len(losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def _lm_config(cfg: Config) -> Config:
    # The language model's batches: the classifier's buckets, seeded with SEED.
    return Config(**{**cfg.to_dict(), "seed": SEED})


def load_pretrained(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    """Put pretrained weights into a `build_model` classifier: embedding and first LSTM."""
    model.get_layer("embedding").embeddings.assign(weights["embedding"])
    first = next(
        layer for layer in model.layers if isinstance(layer, (layers.LSTM, layers.Bidirectional))
    )
    cells = (
        {"forward": first.forward_layer.cell, "backward": first.backward_layer.cell}
        if isinstance(first, layers.Bidirectional)
        else {"forward": first.cell}
    )
    for name, cell in cells.items():
        for part in ("kernel", "recurrent_kernel", "bias"):
            getattr(cell, part).assign(weights[f"{name}/{part}"])

"""Stage 6, model: Embedding (GloVe start, padding masked) -> LSTM stack -> Dense softmax."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .config import Config


@keras.saving.register_keras_serializable(package="keras_sentiment")
class MaskedGlobalMaxPooling1D(layers.Layer):
    """Max over the real time steps only: padded steps never win the max."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            inputs = ops.where(ops.expand_dims(mask, -1), inputs, ops.full_like(inputs, -1e9))
        return ops.max(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def build_model(
    cfg: Config, vocab_size: int, num_classes: int, matrix: np.ndarray | None
) -> keras.Sequential:
    """The classifier over token ids, as one readable Sequential."""
    dim = cfg.embedding_dim if matrix is None else matrix.shape[1]
    init = "uniform" if matrix is None else keras.initializers.Constant(matrix)
    stack: list[layers.Layer] = [
        keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        layers.Embedding(
            vocab_size,
            dim,
            embeddings_initializer=init,
            mask_zero=True,
            trainable=cfg.train_embeddings or matrix is None,
            name="embedding",
        ),
        layers.SpatialDropout1D(cfg.dropout / 2),
    ]
    for i in range(cfg.lstm_layers):
        last = i == cfg.lstm_layers - 1
        lstm = layers.LSTM(cfg.lstm_units, return_sequences=not last or cfg.pooling != "last")
        stack.append(layers.Bidirectional(lstm) if cfg.bidirectional else lstm)
    if cfg.pooling == "max":
        stack.append(MaskedGlobalMaxPooling1D())
    elif cfg.pooling == "mean":
        stack.append(layers.GlobalAveragePooling1D())
    stack += [
        layers.Dropout(cfg.dropout),
        # float32 output even under mixed precision, for a stable softmax.
        layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities"),
    ]
    return keras.Sequential(stack, name="sentiment_lstm")


def disable_cudnn(model: keras.Model) -> None:
    """Trace LSTMs with the generic kernel, so a graph exported on a GPU still serves on CPU."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.LSTM):
            layer.use_cudnn = False

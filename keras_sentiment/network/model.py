"""The model: Embedding (GloVe start, padding masked) -> LSTM stack -> Dense softmax.

`build_model` is the network over token ids (the backbone); `text_model` puts the
preprocessing layer in front and the n-gram mix behind it: raw strings in, probabilities out,
one `.keras` file.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from keras import layers

from keras_sentiment.config import Config
from keras_sentiment.network import lstm_math
from keras_sentiment.network.compiled_lstm import CompiledLSTM, cpu_cores
from keras_sentiment.network.mix import Mix
from keras_sentiment.network.ngrams import NgramMix
from keras_sentiment.text.preprocessing import TextPreprocessor


@keras.saving.register_keras_serializable(package="keras_sentiment")
class MaskedGlobalMaxPooling1D(layers.Layer):
    """Max over the real time steps only (`lstm_math.pool_steps`): padding never wins."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return lstm_math.pool_steps("max", inputs, mask, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def build_model(
    cfg: Config, vocab_size: int, num_classes: int, matrix: np.ndarray | None
) -> keras.Sequential:
    """The classifier over token ids, as one readable Sequential."""
    dim = cfg.embedding_dim if matrix is None else matrix.shape[1]
    # GloVe is assigned after building: as a Constant initializer the whole matrix would be
    # written into every .keras file's config.json as JSON numbers.
    init = "uniform" if matrix is None else "zeros"
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
        lstm = CompiledLSTM(
            cfg.lstm_units,
            return_sequences=not last or cfg.pooling != "last",
            matmul_dtype=cfg.precision,
            # Two directions are already two loops at once; one direction splits its batch
            # in two (benchmarks/README.md, the training rows of the seed model).
            batch_splits=2 if not cfg.bidirectional and cpu_cores() >= 2 else 1,
        )
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
    model = keras.Sequential(stack, name="sentiment_lstm")
    if matrix is not None:
        model.get_layer("embedding").embeddings.assign(matrix)
    return model


@keras.saving.register_keras_serializable(package="keras_sentiment")
class ClassNames(layers.Layer):
    """Passes the probabilities through; carries the class names of their columns."""

    def __init__(self, class_names: list[str], **kwargs):
        super().__init__(**kwargs)
        self.class_names = [str(name) for name in class_names]

    def call(self, probabilities):
        return probabilities

    def get_config(self):
        return {**super().get_config(), "class_names": self.class_names}


def text_model(
    pre: TextPreprocessor,
    network: keras.Model,
    mix: Mix | None = None,
    class_names: list[str] | None = None,
) -> keras.Model:
    """Raw strings in, probabilities out: the preprocessing layer, the network, the mix.

    One .keras file holds them all; after `import keras_sentiment`, `keras.saving.load_model`
    restores it in a new process, in Keras' safe mode.

    Args:
        pre: the adapted preprocessing layer.
        network: the classifier over token ids (`build_model`).
        mix: the mix of the network with the n-gram members, or None.
        class_names: the classes of the output columns, kept in the model.

    Returns:
        A `keras.Model` from a `[batch]` string tensor to `[batch, classes]` probabilities.
    """
    text = keras.Input(shape=(), dtype="string", name="text")
    # Always the words too: Keras cannot connect a layer called once with one output and once
    # with two in another model (best.keras and model.keras share the preprocessor).
    words, ids = pre(text, words=True)
    probabilities = network(ids)
    if mix is not None:
        probabilities = mix([words, ids, probabilities])
    if class_names is not None:
        probabilities = ClassNames(class_names, name="classes")(probabilities)
    return keras.Model(text, probabilities, name="sentiment_text")


def class_names_of(model: keras.Model) -> list[str]:
    """The class names a raw-text model carries, or "0", "1", ... for one without them."""
    for layer in model.layers:
        if isinstance(layer, ClassNames):
            return list(layer.class_names)
    return [str(i) for i in range(model.output_shape[-1])]


def split_text_model(
    model: keras.Model,
) -> tuple[TextPreprocessor, keras.Model, Mix | NgramMix | None]:
    """The preprocessing layer, token-id network and mix (or None) of a `text_model`; a model
    from before the stacked mix has the older `NgramMix`."""
    pre = next(layer for layer in model.layers if isinstance(layer, TextPreprocessor))
    network = next(layer for layer in model.layers if isinstance(layer, keras.Sequential))
    mix = next((layer for layer in model.layers if isinstance(layer, (Mix, NgramMix))), None)
    return pre, network, mix


def load_run_model(run_dir: Path) -> tuple[TextPreprocessor, keras.Model, NgramMix | None]:
    """The preprocessor, the token-id network and the n-gram mix a finished run trained.

    Its `model.keras` is a `text_model`. Runs from before model.keras held the raw-text model
    saved the token-id network alone, with the preprocessor beside it in preprocessor.json
    (and no n-gram branch).
    """
    model = keras.saving.load_model(Path(run_dir) / "model.keras")
    if any(isinstance(layer, TextPreprocessor) for layer in model.layers):
        return split_text_model(model)
    config = json.loads((Path(run_dir) / "preprocessor.json").read_text())
    return TextPreprocessor.from_config(config), model, None

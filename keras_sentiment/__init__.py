"""keras_sentiment: an IMDB LSTM sentiment classifier with Keras 3, from raw text to TF Serving.

Stages, in data-flow order: config, data, preprocessing, embeddings, ngrams, model, batching,
training, evaluation, plots, model_card, listing, export, prediction, then pipeline (`fit`,
`load`) and cli.

    import keras_sentiment as ks
    run = ks.fit(ks.Config(epochs=3))

TensorFlow is imported on first use of `fit`, `load` or `Run`, so `import keras_sentiment` and
the CLI's help stay fast; `import keras_sentiment.model` registers the package's Keras layers
for `keras.saving.load_model`.
"""

from .config import Config

__version__ = "0.1.0"
__all__ = ["Config", "Run", "fit", "load"]


def __getattr__(name: str):
    if name in ("Run", "fit", "load"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'keras_sentiment' has no attribute {name!r}")

"""keras_sentiment: an IMDB LSTM sentiment classifier with Keras 3, from raw text to TF Serving.

    import keras_sentiment as ks

    run = ks.fit(ks.Config(max_train=2000, max_test=2000, epochs=1))  # a quick run
    predictor = ks.load(run.export_path)  # or "saved_models/imdb_lstm_quick"
    predictor(["What a wonderful film!"])["label"]  # array(['pos'], dtype=object)
    ks.evaluate(predictor)["accuracy"]  # the test split its fit scored
    ks.export(run)  # the same model again, as the next version
    predictor.explain(["What a wonderful film!"])["attributions"]  # each word's share

Subpackages, in the order the data moves (each imports only those before it): data, text,
network, training, reporting, serving, scoring; under them config, files (atomic writes) and
records (where runs and exports live); on top the Python API (`api`) and the command line (`cli`).

TensorFlow starts (quietly) on first use of `fit`, `load`, `evaluate`, `export` or `score`, so
`import keras_sentiment` and the command line's help stay fast. After `import keras_sentiment`,
`keras.saving.load_model("model.keras")` reads the package's `.keras` files
(`registration.py`).
"""

from keras_sentiment import registration
from keras_sentiment.config import Config, UserError

__version__ = "0.2.0"
__all__ = ["Config", "Run", "UserError", "evaluate", "export", "fit", "load", "score"]
_API = ("Run", "evaluate", "export", "fit", "load", "score")


def __getattr__(name: str):
    if name in _API:
        from keras_sentiment.startup import start_tensorflow

        start_tensorflow()
        from keras_sentiment import api

        return getattr(api, name)
    raise AttributeError(f"module 'keras_sentiment' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The API is loaded on first use, so list it for dir() and tab completion; the modules
    # this file imports for itself stay out.
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})


# `keras.saving.load_model` reads the package's .keras files once Keras is imported, and this
# import imports no Keras (registration.py says how).
registration.install()

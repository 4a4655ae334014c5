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
`import keras_sentiment` and the command line's help stay fast. The package's Keras layers are
registered when Keras is imported, so after `import keras_sentiment`,
`keras.saving.load_model("model.keras")` reads the package's `.keras` files.
"""

import importlib
import importlib.abc
import importlib.util
import sys

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


_PREFIX = "keras_sentiment."


def _initializing(module) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_layers() -> None:
    # Importing the model registers TextPreprocessor, NgramMix, CompiledLSTM, ... with Keras.
    importlib.import_module("keras_sentiment.network.model")


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Registers the package's layers right after Keras is imported, and only then: Keras
    (and TensorFlow) stay unimported until someone needs them."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            # A module of this package that imports Keras itself is still half-imported:
            # importing the model now would go round in a circle. The layers then register
            # as the package's modules finish importing, each with its own decorator.
            if not any(
                _initializing(m) for n, m in list(sys.modules.items()) if n.startswith(_PREFIX)
            ):
                _register_layers()

        spec.loader.exec_module = exec_and_register
        return spec


if "keras" in sys.modules:
    _register_layers()
else:
    sys.meta_path.insert(0, _RegisterWithKeras())

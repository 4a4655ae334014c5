"""Keras reads the package's `.keras` files after `import keras_sentiment`, which imports no
Keras.

`keras.saving.load_model` finds a custom layer in Keras' registry by its registered name
("keras_sentiment>TextPreprocessor"). A class enters the registry when the module defining
it is imported, and those modules import TensorFlow, which `import keras_sentiment` must not
(seconds, and TensorFlow's start-up lines). Keras has no plugin mechanism for custom objects
and Python no supported post-import hook (PEP 369 was withdrawn), so `install`:

- if Keras is imported already, puts a stand-in for each of the package's layers into Keras'
  registry (its public `keras.saving.get_custom_objects()`);
- otherwise puts a finder at the front of `sys.meta_path` that answers for the module "keras"
  alone: Keras is found by the other finders and loaded as always, then the stand-ins go into
  its registry, and the finder removes itself. It answers nothing else, imports nothing of the
  package, and changes nothing of Keras.

A stand-in's `from_config` imports the package's network module, whose classes then register
themselves and replace every stand-in, and hands over to the real class. Nothing of the package
is imported while Keras is being imported, so a module of the package that imports Keras itself
never meets a half-imported module of its own.

Tested on the installed Keras by tests/test_registration.py; tox's `keras-oldest` environment
runs it on the oldest Keras setup.cfg allows.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

# The package's Keras layers: their registered names (each class's
# `keras.saving.register_keras_serializable(package="keras_sentiment")`); importing `LAYERS`
# registers them all. tests/test_registration.py checks the list against the registry.
REGISTERED = (
    "TokenMap",
    "TextPreprocessor",
    "CompiledLSTM",
    "NgramMix",
    "NgramMember",
    "Mix",
    "MaskedGlobalMaxPooling1D",
    "ClassNames",
)
PACKAGE = "keras_sentiment"
LAYERS = "keras_sentiment.network.model"


def install() -> None:
    """Make `keras.saving.load_model` find the package's layers (see the module's docstring)."""
    if "keras" in sys.modules:
        _register_stand_ins()
    elif not any(isinstance(finder, _AfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())


class _StandIn:
    """A layer in Keras' registry until its module is imported: `from_config` imports it."""

    def __init__(self, registered_name: str):
        self.registered_name = registered_name

    def from_config(self, config: dict):
        import keras

        importlib.import_module(LAYERS)  # registers the real classes over the stand-ins
        cls = keras.saving.get_custom_objects().get(self.registered_name)
        if cls is None or isinstance(cls, _StandIn):
            raise TypeError(f"{LAYERS} did not register {self.registered_name}")
        return cls.from_config(config)

    def __repr__(self) -> str:
        return f"<stand-in for {self.registered_name}>"


def _register_stand_ins() -> None:
    import keras

    registry = keras.saving.get_custom_objects()
    for name in REGISTERED:
        registry.setdefault(f"{PACKAGE}>{name}", _StandIn(f"{PACKAGE}>{name}"))


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Answers for "keras" alone: Keras' own spec, with a loader that registers the stand-ins
    once Keras has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        # Found by the finders after this one, as if it were not there.
        for finder in sys.meta_path[sys.meta_path.index(self) + 1 :]:
            spec = getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ThenRegister(spec.loader, self)
        return spec


class _ThenRegister(importlib.abc.Loader):
    """Runs Keras' own loader, then registers the stand-ins and hands the module its loader
    back."""

    def __init__(self, loader, finder: _AfterKeras):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # Gone first: an import of "keras" while Keras runs is Keras' own business.
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _register_stand_ins()

    def __getattr__(self, name):  # anything else a loader is asked (get_resource_reader, ...)
        return getattr(self.loader, name)

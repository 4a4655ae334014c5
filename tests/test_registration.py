"""`keras.saving.load_model` reads the package's .keras files after `import keras_sentiment`,
whichever is imported first, and `import keras_sentiment` imports no Keras (registration.py).

Each order runs in a new process on the installed Keras; tox's `keras-oldest` environment runs
this file on the oldest Keras setup.cfg allows.
"""

import json

import numpy as np
import pytest

from .helpers import model_config, run_python

TEXTS = ["What a wonderful film!", "Dull, predictable and far too long.", ""]

# Each order imports in its own way, then loads the file with Keras alone (safe mode).
ORDERS = {
    "keras_sentiment, then keras": "import keras_sentiment\nimport keras",
    "keras, then keras_sentiment": "import keras\nimport keras_sentiment",
    # TensorFlow looks Keras up (importlib.util.find_spec) before it imports it.
    "keras_sentiment, then tensorflow": "import keras_sentiment\nimport tensorflow\nimport keras",
    # A module of the package that imports Keras itself, half-imported while Keras runs.
    "a module of the package first": "import keras_sentiment.network.compiled_lstm\nimport keras",
}
LOAD = """
import json, sys
{imports}
from keras_sentiment.registration import _AfterKeras, _ThenRegister
import tensorflow as tf
assert not any(isinstance(f, _AfterKeras) for f in sys.meta_path), "the finder stayed"
assert not isinstance(keras.__loader__, _ThenRegister), "Keras kept the wrapping loader"
assert keras.__spec__.loader is keras.__loader__
model = keras.saving.load_model(sys.argv[1])
texts = json.loads(sys.argv[2])
print(json.dumps(model.predict(tf.constant(texts), verbose=0).tolist()))
"""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A raw-text model with every layer of the package (untrained: no fit, no export, so it
    saves on every Keras version), and its answers to TEXTS."""
    import tensorflow as tf

    from keras_sentiment.network.mix import Mix
    from keras_sentiment.network.model import build_model, text_model
    from keras_sentiment.network.ngrams import CHARS, WORDS, NgramMember
    from keras_sentiment.text.preprocessing import adapt_preprocessor

    cfg = model_config(vocab_size=50, sequence_length=16, lemmatize=False)
    pre = adapt_preprocessor(cfg, np.array([t.encode() for t in TEXTS], dtype=object))
    network = build_model(cfg, len(pre.vocabulary), 2, None)
    members = [NgramMember(kind, 3, len(pre.vocabulary), 4) for kind in (WORDS, CHARS)]
    mix = Mix(members, 0.5, [1.0, 0.5], 0.1)
    model = text_model(pre, network, mix, ["neg", "pos"])
    path = tmp_path_factory.mktemp("registration") / "model.keras"
    model.save(path)
    return path, model.predict(tf.constant(TEXTS), verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_keras_loads_the_file_whichever_is_imported_first(order, model_file):
    path, expected = model_file
    done = run_python(LOAD.format(imports=ORDERS[order]), path, json.dumps(TEXTS))
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(loaded, expected, rtol=0, atol=1e-6)


def test_the_import_imports_no_keras_and_waits_for_it():
    code = (
        "import sys\nimport keras_sentiment\n"
        "from keras_sentiment.registration import _AfterKeras\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
        "print(sum(isinstance(f, _AfterKeras) for f in sys.meta_path))\n"
        "import keras_sentiment.registration as r\nr.install()\n"  # twice: still one finder
        "print(sum(isinstance(f, _AfterKeras) for f in sys.meta_path))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]", "1", "1"]


def test_the_stand_ins_cover_the_package_s_layers_and_give_way():
    import keras

    from keras_sentiment import registration
    from keras_sentiment.network.model import ClassNames  # every layer of the package

    registration._register_stand_ins()  # after the real classes: they stay
    registry = keras.saving.get_custom_objects()
    ours = {name for name in registry if name.startswith(f"{registration.PACKAGE}>")}
    assert ours == {f"{registration.PACKAGE}>{name}" for name in registration.REGISTERED}
    assert all(isinstance(registry[name], type) for name in ours)
    # A stand-in hands over to the real class.
    stand_in = registration._StandIn(f"{registration.PACKAGE}>ClassNames")
    layer = stand_in.from_config(ClassNames(["neg", "pos"]).get_config())
    assert isinstance(layer, ClassNames) and list(layer.class_names) == ["neg", "pos"]

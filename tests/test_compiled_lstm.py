"""The training kernel's settings: bfloat16 runs exactly where asked and where the CPU has it.

That it trains exactly as keras.layers.LSTM is in tests/test_lstm_parity.py."""

import pytest

from keras_sentiment.config import Config
from keras_sentiment.network import compiled_lstm as kernel_module
from keras_sentiment.network.compiled_lstm import gradient_dtype
from keras_sentiment.network.model import build_model
from keras_sentiment.training.train import set_precision

from .helpers import model_config


@pytest.mark.parametrize("has_bfloat16", [True, False])
def test_bfloat16_runs_exactly_where_asked_and_the_cpu_has_it(monkeypatch, capsys, has_bfloat16):
    monkeypatch.setattr(kernel_module, "cpu_has_bfloat16", lambda: has_bfloat16)
    assert Config().precision == "float32"  # bfloat16: at most 10% faster in fit (README)
    cfg = model_config(bidirectional=False, precision="auto")
    assert build_model(cfg, 30, 2, None).layers[2].matmul_dtype == "auto"
    used = "bfloat16" if has_bfloat16 else "float32"
    assert gradient_dtype("auto") == gradient_dtype("bfloat16") == used
    assert gradient_dtype("float32") == "float32"
    # The strategy line says where bfloat16 runs; only an explicit request that cannot be
    # met prints the fallback, auto falls back silently.
    assert ("bfloat16" in set_precision(cfg)) == has_bfloat16
    assert capsys.readouterr().out == ""
    assert set_precision(model_config()) == "float32"
    assert ("bfloat16" in set_precision(model_config(precision="bfloat16"))) == has_bfloat16
    fallback = "bfloat16 needs a CPU with AVX512_BF16 or AMX: training in float32\n"
    assert capsys.readouterr().out == ("" if has_bfloat16 else fallback)

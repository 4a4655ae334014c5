"""The measurements behind two choices in the code (benchmarks/README.md, "Choices in the code").

- SavedModel endpoints come from Python functions with an input signature
  (`serving/saved_model.py`): a `tf.function` endpoint is traced in and out of the save
  context and both traces are written. Exports the run's model both ways: saved_model.pb
  bytes and load seconds.
- `Predictor.__call__` scores a single batch without a thread pool
  (`serving/prediction.py`): starting and joining a two-thread pool against one short call.

    python -m benchmarks.choices runs/NAME/VERSION saved_models/NAME/VERSION
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.network.model import load_run_model
from keras_sentiment.network.serving_network import ServingNetwork
from keras_sentiment.serving.graph import ServingNgrams, serving_function
from keras_sentiment.serving.prediction import SavedModelPredictor


def endpoints(run_dir: Path) -> dict[str, tuple[int, float]]:
    """saved_model.pb bytes and load seconds of the run's model, by kind of endpoint."""
    pre, model, mix = load_run_model(run_dir)
    found = {}
    for kind in ("tf.function", "Python function"):
        archive = keras.export.ExportArchive()
        network = ServingNetwork(model)
        archive.track(pre)
        archive.track(network)
        ngrams = ServingNgrams(mix) if mix is not None else None
        if ngrams is not None:
            archive.track(ngrams)
        serve = serving_function(pre, network, ["neg", "pos"], ngrams)
        if kind == "tf.function":
            archive.add_endpoint("serving_default", serve)
        else:
            spec = [tf.TensorSpec([None], tf.string, name="text")]
            archive.add_endpoint("serving_default", serve.python_function, input_signature=spec)
        folder = tempfile.mkdtemp()
        archive.write_out(folder, verbose=False)
        start = time.perf_counter()
        tf.saved_model.load(folder)
        found[kind] = (
            os.path.getsize(Path(folder) / "saved_model.pb"),
            time.perf_counter() - start,
        )
    return found


def thread_pool(version: Path, calls: int = 200) -> tuple[float, float]:
    """p50 milliseconds of one short scoring call, and of starting and joining a pool."""
    predictor = SavedModelPredictor(version)
    predictor(["A fine film."])  # warm-up
    call, pool = [], []
    for _ in range(calls):
        start = time.perf_counter()
        predictor._score([b"A fine film."])
        call.append(time.perf_counter() - start)
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as executor:
            list(executor.map(abs, [0]))
        pool.append(time.perf_counter() - start)
    return float(np.median(call)) * 1e3, float(np.median(pool)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("version", type=Path)
    args = parser.parse_args()
    found = endpoints(args.run_dir)
    for kind, (size, seconds) in found.items():
        print(f"{kind} endpoint: saved_model.pb {size:,} bytes, loads in {seconds:.2f} s")
    ratio = found["tf.function"][0] / found["Python function"][0]
    print(f"graph ratio: {ratio:.2f}x")
    call, pool = thread_pool(args.version)
    print(f"one short call p50 {call:.3f} ms; a two-thread pool {pool:.3f} ms ({pool / call:.0%})")


if __name__ == "__main__":
    main()

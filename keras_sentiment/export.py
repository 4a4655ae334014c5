"""Stage 9, export: a raw-text SavedModel in TF Serving's layout, written atomically."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .config import save_json, write_atomic
from .model import ServingNetwork
from .preprocessing import TextPreprocessor

WARMUP_TEXTS = [
    "A wonderful film with a moving story and great acting.",
    "Dull, predictable and far too long. I wanted my money back.",
    "",
]


def serving_function(pre: TextPreprocessor, network: ServingNetwork, class_names: list[str]):
    """raw strings `text` -> probabilities, label, label_id and classes, all graph ops."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        probabilities = network(pre(text))
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        names = tf.constant(class_names)  # class names live in the graph
        return {
            "probabilities": probabilities,
            "label": tf.gather(names, label_id),
            "label_id": label_id,
            # TF Serving's own classify convention: the class of each score column.
            "classes": tf.tile(names[None, :], [tf.shape(label_id)[0], 1]),
        }

    return serve


def export_saved_model(
    pre: TextPreprocessor,
    model: keras.Model,
    class_names: list[str],
    base_dir: str | Path,
    metadata: dict,
    extra_files: dict[str, str | Callable[[dict], str]] | None = None,
) -> Path:
    """Write `base_dir/<next version>/`; a server watching base_dir never sees it half-written."""
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(base)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".tmp-{os.getpid()}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server's user
        network = ServingNetwork(model)  # the served graph: no cuDNN, no XLA, no Keras loop
        archive = keras.export.ExportArchive()
        archive.track(pre)
        archive.track(network)
        archive.add_endpoint("serving_default", serving_function(pre, network, class_names))
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        extra.mkdir()
        write_warmup(extra / "tf_serving_warmup_requests", WARMUP_TEXTS)
        while True:  # take the next free version; another exporter may race us
            version = next_version(base)
            metadata = {**metadata, "version": version, "path": str(base / str(version))}
            save_json(extra / "metadata.json", metadata)
            # A callable gets the final metadata: the model card names its version.
            for name, text in (extra_files or {}).items():
                write_atomic(extra / name, text(metadata) if callable(text) else text)
            target = base / str(version)
            if not target.exists():
                os.rename(tmp, target)  # atomic on one file system
                return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def next_version(base: Path) -> int:
    """One more than the highest integer version folder (1 for the first)."""
    return max(versions(base), default=0) + 1


def versions(base: Path) -> list[int]:
    """The integer version folders TF Serving would see, ascending."""
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def _remove_stale_temporaries(base: Path) -> None:
    # Left by an exporter that was killed; only remove those whose process is gone.
    for tmp in base.glob(".tmp-*"):
        pid = tmp.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_warmup(path: Path, texts: list[str]) -> None:
    """TF Serving warm-up file: a TFRecord of PredictionLog, so the first request is fast."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(signature_name="serving_default")
    )
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())


def models_config(models: dict[str, str]) -> str:
    """ModelServerConfig text for TF Serving's --model_config_file: name -> base path."""
    entries = "".join(
        f"  config {{\n    name: '{name}'\n    base_path: '{path}'\n"
        f"    model_platform: 'tensorflow'\n  }}\n"
        for name, path in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"


def library_versions() -> dict[str, str]:
    """Versions of what produced the model, for reproducing it."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ["keras-sentiment", "tensorflow", "keras", "nltk", "scikit-learn", "numpy"]:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def batching_parameters(version_dir: Path, texts: list[bytes], cores: int | None = None) -> str:
    """TF Serving's --batching_parameters_file for this model, from timing it on `texts`.

    The batching guide's CPU advice (one batch thread per core, tune max_batch_size and
    batch_timeout_micros by measurement) with the measured numbers: max_batch_size is the
    smallest size within 5% of the best reviews/s, and a request waits at most as long as a
    single review takes to serve, so batching at most doubles a lone request's latency.
    """
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    rates, single = {}, 0.0
    for size in (1, 8, 32, 64, 128, 256, 512):
        requests = [
            tf.constant([texts[(start + i) % len(texts)] for i in range(size)])
            for start in range(0, max(2 * size, 512), size)
        ]
        serve(text=requests[0])["label_id"].numpy()  # warm-up: the first call of a shape
        seconds = []
        for request in requests:
            start = time.perf_counter()
            serve(text=request)["label_id"].numpy()
            seconds.append(time.perf_counter() - start)
        rates[size] = size * len(seconds) / sum(seconds)
        single = float(np.median(seconds)) if size == 1 else single
    best = max(rates.values())
    max_batch = min(size for size, rate in rates.items() if rate >= 0.95 * best)
    threads = cores or os.cpu_count() or 1
    measured = ", ".join(f"{size}: {rate:.0f}" for size, rate in rates.items())
    return (
        f"# Measured on {platform.node()} ({threads} cores): reviews/s by batch size {measured};\n"
        f"# single review p50 {single * 1e3:.2f} ms. Use with --enable_batching "
        f"--batching_parameters_file=<this file>.\n"
        f"max_batch_size {{ value: {max_batch} }}\n"
        f"batch_timeout_micros {{ value: {max(1, round(single * 1e6))} }}\n"
        f"num_batch_threads {{ value: {threads} }}\n"
        f"max_enqueued_batches {{ value: {2 * threads} }}\n"
    )

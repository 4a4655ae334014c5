"""Stage 9, export: a raw-text SavedModel in TF Serving's layout, written atomically."""

from __future__ import annotations

import errno
import os
import platform
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .config import kill_point, save_json, versions, write_atomic
from .listing import read_metadata
from .model import ServingNetwork
from .ngrams import NgramMix, ServingNgrams
from .preprocessing import TextPreprocessor

WARMUP_TEXTS = [
    "A wonderful film with a moving story and great acting.",
    "Dull, predictable and far too long. I wanted my money back.",
    "",
]  # one request of these three, then one of the first alone: the batch and the single path


def serving_function(
    pre: TextPreprocessor,
    network: ServingNetwork,
    class_names: list[str],
    mix: ServingNgrams | None = None,
):
    """raw strings `text` -> probabilities, label, label_id and classes, all graph ops."""

    def one(text: tf.Tensor) -> tf.Tensor:
        ids = pre.ids_of_one(text[0])
        probabilities = network.one(ids)
        if mix is not None:
            probabilities = mix.combine(tf.sigmoid(mix.logit_of_one(ids))[None], probabilities)
        return probabilities

    # The batch path as a function call the graph keeps (not inlined): for a single review
    # TensorFlow's executor then passes "dead" through one op instead of through each of the
    # batch path's hundreds (0.11 ms of a one-word request's 0.53; benchmarks/README.md).
    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string)],
        experimental_attributes={"_noinline": True},
    )
    def batch(text: tf.Tensor) -> tf.Tensor:
        ids = pre(text)
        probabilities = network(ids)
        if mix is not None:
            probabilities = mix.mixed(ids, probabilities)
        return probabilities

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        # A single review, the commonest request, skips the batch's ragged ids, lengths and
        # masks: fewer small ops, each a step of TensorFlow's executor (benchmarks/README.md).
        probabilities = tf.cond(tf.size(text) == 1, lambda: one(text), lambda: batch(text))
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
    version: int | None = None,
    mix: NgramMix | None = None,
) -> Path:
    """Write `base_dir/VERSION/` (default: the next free); a server never sees it half-written.

    A run exports under its own version. If that folder already holds this run's export
    (a kill came after the rename), it is kept as it is; if another exporter took the
    number, the next free one is used.
    """
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    if version is not None and _exported_by(base / str(version), metadata.get("run_dir")):
        return base / str(version)
    _remove_stale_temporaries(base)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".tmp-{_host()}-{os.getpid()}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server's user
        network = ServingNetwork(model)  # the served graph: no cuDNN, no XLA, no Keras loop
        archive = keras.export.ExportArchive()
        archive.track(pre)
        archive.track(network)
        ngrams = ServingNgrams(mix) if mix is not None else None
        if ngrams is not None:
            archive.track(ngrams)
        serve = serving_function(pre, network, class_names, ngrams)
        archive.add_endpoint("serving_default", serve)
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        extra.mkdir()
        write_warmup(extra / "tf_serving_warmup_requests", WARMUP_TEXTS)
        candidate = version or next_version(base)
        while True:  # another exporter may take a number between our look and our rename
            metadata = {**metadata, "version": candidate, "path": str(base / str(candidate))}
            save_json(extra / "metadata.json", metadata)
            # A callable gets the final metadata: the model card names its version.
            for name, text in (extra_files or {}).items():
                write_atomic(extra / name, text(metadata) if callable(text) else text)
            kill_point("export-written")
            try:
                # Atomic on one file system; refused when the target exists and is not
                # empty, which every version folder is.
                os.rename(tmp, base / str(candidate))
                return base / str(candidate)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                candidate = next_version(base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exported_by(version_dir: Path, run_dir: str | None) -> bool:
    if not run_dir or not (version_dir / "saved_model.pb").is_file():
        return False
    meta = read_metadata(version_dir)
    return meta is not None and meta.get("run_dir") == run_dir


def next_version(base: Path) -> int:
    """One more than the highest integer version folder (1 for the first)."""
    return max(versions(base), default=0) + 1


def served_before(base: Path, version: int, metadata: dict) -> list[str]:
    """Lines saying how `version` compares with the version TF Serving served until now.

    Scores are only compared on the same test split; a lower score is said loudly, with the
    way back, since TF Serving serves the highest version as soon as it appears.
    """
    older = [v for v in versions(base) if v < version]
    if not older or version != max(versions(base)):
        return []
    previous = older[-1]
    before = read_metadata(base / str(previous))
    try:
        old, new = before["metrics"]["accuracy"], metadata["metrics"]["accuracy"]
    except (KeyError, TypeError):  # no readable metadata, or no score in it
        return []
    way_back = (
        f"to serve version {previous} again, remove {base / str(version)} (its run stays in "
        f"{metadata.get('run_dir', 'runs/')}), or keep quick runs apart with --name"
    )
    if _test_split(before) != _test_split(metadata):
        return [
            f"note: TF Serving now serves version {version} instead of {previous}, which was "
            f"scored on another test split ({_describe(before)} vs {_describe(metadata)}): "
            "the two accuracies are not comparable",
            way_back,
        ]
    if new < old:
        return [
            f"warning: version {version} scores {new:.4f} on the test split, below version "
            f"{previous}'s {old:.4f}, and TF Serving now serves it",
            way_back,
        ]
    return [f"version {version}: {new:.4f} on the test split; version {previous} had {old:.4f}"]


def _test_split(meta: dict) -> tuple:
    cfg, data = meta.get("config", {}), meta.get("dataset", {})
    keys = ("dataset", "test_data", "max_test", "seed", "validation_fraction")
    return data.get("source"), data.get("test"), *(cfg.get(k) for k in keys)


def _describe(meta: dict) -> str:
    data = meta.get("dataset", {})
    return f"{data.get('test', '?')} texts of {data.get('source', '?')}"


def _host() -> str:
    # Temporary names carry host and PID: on storage shared by hosts a PID alone means nothing.
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _remove_stale_temporaries(base: Path) -> None:
    # Left by an exporter that was killed: only this host's, and only if its process is gone.
    for tmp in base.glob(".tmp-*"):
        _, host, pid, _ = (tmp.name.split("-") + ["", "", ""])[:4]
        if host == _host() and pid.isdigit() and not _alive(int(pid)):
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
    """TF Serving warm-up file: a TFRecord of PredictionLog, so the first request is fast.

    Two requests, `texts` and its first text alone: the served graph has a path for each.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in (texts, texts[:1]):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name="serving_default")
            )
            request.inputs["text"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
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

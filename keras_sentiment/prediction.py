"""Prediction: score raw texts with an exported SavedModel, locally or through TF Serving."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from .config import UserError, versions


def resolve_version(path: str | Path) -> Path:
    """A version folder itself, or the highest version under a model's base folder."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.exists():
        raise UserError(f"{path}: no such model folder")
    found = versions(path)
    if not found:
        raise UserError(f"{path}: not a SavedModel (no saved_model.pb) and no version folders")
    return path / str(found[-1])


def serving_threads() -> int:
    """Keep each op to half the cores, so the LSTM's two directions run side by side."""
    # Both directions already run at once; an op spread over every core then fights the
    # other direction. Measured on 2 cores: `evaluate` 16.1 s with TensorFlow's default
    # threads against 11.8-12.6 s with 1 (batches of 512, two in flight). Process-wide,
    # and only possible before TensorFlow runs its first op.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (cores or 2) // 2))
    except RuntimeError:  # TensorFlow is already running: keep what it has
        pass
    return tf.config.threading.get_intra_op_parallelism_threads()


class SavedModelPredictor:
    """The `serving_default` signature of an exported model, fed in length-sorted batches."""

    def __init__(self, path: str | Path):
        self.path = resolve_version(path)
        try:
            # Keep the loaded object: its resources (tables, variables) die with it.
            self._loaded = tf.saved_model.load(str(self.path))
            self.signature = self._loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path}: not a loadable SavedModel ({first})") from None
        meta = self.path / "assets.extra" / "metadata.json"
        self.metadata = json.loads(meta.read_text()) if meta.is_file() else {}

    def __call__(
        self, texts: list[str | bytes], batch_size: int | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs for every text, in input order, two batches in flight."""
        if batch_size is None:
            # Big batches pay only when ops keep to their own cores (see serving_threads):
            # 512 against 256 took 11.8-12.6 s against 13.4 s with 1 thread per op, but
            # 16.1 against 13.5 s with TensorFlow's default threads.
            batch_size = 512 if tf.config.threading.get_intra_op_parallelism_threads() else 256
        data = [t.encode("utf-8", "surrogatepass") if isinstance(t, str) else t for t in texts]
        if not data:  # the model's own answer to no texts: every output, with zero rows
            return {
                k: v.numpy() for k, v in self.signature(text=tf.constant([], tf.string)).items()
            }
        order = np.argsort([len(t) for t in data], kind="stable")

        def score(start: int) -> dict[str, np.ndarray]:
            batch = tf.constant([data[i] for i in order[start : start + batch_size]], tf.string)
            return {k: v.numpy() for k, v in self.signature(text=batch).items()}

        starts = range(0, len(data), batch_size)
        if len(starts) == 1:  # starting a thread pool costs 170 us, a tenth of a short call
            parts = [score(0)]
        else:  # a second batch in flight fills the cores while the first runs its short rows
            with ThreadPoolExecutor(2) as pool:
                parts = list(pool.map(score, starts))
        outputs = {}
        for key in parts[0] if parts else []:
            joined = np.concatenate([p[key] for p in parts])
            outputs[key] = np.empty_like(joined)
            outputs[key][order] = joined
        return outputs


def to_records(outputs: dict[str, np.ndarray]) -> list[dict]:
    """One JSON-ready record per text: label, label_id and each class's probability."""
    records = []
    for i in range(len(outputs.get("label_id", []))):
        classes = [_text(c) for c in outputs["classes"][i]]
        records.append(
            {
                "label": _text(outputs["label"][i]),
                "label_id": int(outputs["label_id"][i]),
                "probabilities": {
                    c: round(float(p), 6) for c, p in zip(classes, outputs["probabilities"][i])
                },
            }
        )
    return records


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def rest_predict(
    server: str, model_name: str, texts: list[str], timeout: float = 30.0
) -> list[dict]:
    """TF Serving REST predict (row format); answers in the same records as local prediction."""
    if not texts:  # nothing to predict: nothing to ask the server
        return []
    url = f"{server.rstrip('/')}/v1/models/{model_name}:predict"
    body = json.dumps({"signature_name": "serving_default", "instances": texts}).encode("utf-8")
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise UserError(f"{url}: HTTP {e.code}: {_server_error(e.read())}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"{url}: cannot reach TF Serving ({reason})") from None
    except json.JSONDecodeError:
        raise UserError(f"{url}: the answer is not JSON") from None
    if "error" in answer:
        raise UserError(f"{url}: {answer['error']}")
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(texts):
        raise UserError(f"{url}: unexpected answer (no predictions for {len(texts)} texts)")
    columns = {k: np.array([p[k] for p in predictions], dtype=object) for k in predictions[0]}
    columns["probabilities"] = columns["probabilities"].astype(float)
    return to_records(columns)


def _server_error(raw: bytes) -> str:
    try:
        return json.loads(raw).get("error", raw.decode("utf-8", "replace"))
    except (json.JSONDecodeError, AttributeError):
        return raw.decode("utf-8", "replace")[:200]

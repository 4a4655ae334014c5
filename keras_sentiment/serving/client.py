"""A client for TF Serving's REST API, and the JSON records `predict` prints.

Only the standard library and NumPy: `predict --server` asks a running server and starts no
TensorFlow of its own.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np

from keras_sentiment.config import UserError


def to_records(outputs: dict[str, np.ndarray]) -> list[dict]:
    """One JSON-ready record per text: label, label_id, each class's probability and
    `known_words` where the model counts them (how many words read are in its vocabulary; 0:
    the answer is the model's prior); with an explanation's outputs also `words` ([word,
    attribution] in reading order), `score` and `baseline_score` (the predicted class's
    log-odds, for the text and the baseline)."""
    records = []
    for i in range(len(outputs.get("label_id", []))):
        classes = [_text(c) for c in outputs["classes"][i]]
        record = {
            "label": _text(outputs["label"][i]),
            "label_id": int(outputs["label_id"][i]),
            "probabilities": {
                c: round(float(p), 6) for c, p in zip(classes, outputs["probabilities"][i])
            },
        }
        if "known_words" in outputs:  # 0: no word the model knows; the answer is its prior
            record["known_words"] = int(outputs["known_words"][i])
        if "tokens" in outputs:  # padding is "", never a word the model read
            pairs = zip(outputs["tokens"][i], outputs["attributions"][i])
            record["words"] = [[_text(t), round(float(a), 5)] for t, a in pairs if _text(t)]
            for key in ("score", "baseline_score"):
                record[key] = round(float(outputs[key][i]), 5)
        records.append(record)
    return records


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def rest_predict(
    server: str,
    model_name: str,
    texts: list[str],
    timeout: float = 30.0,
    signature: str = "serving_default",
) -> list[dict]:
    """TF Serving REST predict (row format); answers in the same records as local prediction.

    Args:
        server: the server's REST address, e.g. "http://localhost:8501".
        model_name: the name it serves the model under.
        texts: the texts to label.
        timeout: seconds to wait for the answer.
        signature: the signature to ask: "serving_default", or "explain" for each word's
            share of the score as well.

    Returns:
        One record per text, as `to_records` makes them.

    Raises:
        UserError: the server is unreachable, too slow, or answers with an error.
    """
    if not texts:  # nothing to predict: nothing to ask the server
        return []
    url = f"{server.rstrip('/')}/v1/models/{model_name}:predict"
    body = json.dumps({"signature_name": signature, "instances": texts}).encode("utf-8")
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
    try:
        columns = {k: np.array([p[k] for p in predictions], dtype=object) for k in predictions[0]}
        for key in ("probabilities", "attributions", "score", "baseline_score"):
            if key in columns:
                columns[key] = columns[key].astype(float)
        return to_records(columns)
    except (KeyError, TypeError, ValueError, IndexError):
        raise UserError(f"{url}: unexpected answer from signature {signature!r}") from None


def _server_error(raw: bytes) -> str:
    try:
        return json.loads(raw).get("error", raw.decode("utf-8", "replace"))
    except (json.JSONDecodeError, AttributeError):
        return raw.decode("utf-8", "replace")[:200]

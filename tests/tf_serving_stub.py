"""A stand-in for TF Serving's REST API on 127.0.0.1, for tests.

`tensorflow_model_server` ships only as a Docker image and an apt package from Google, neither of
which installs on these machines. This stub serves a SavedModel by TF Serving's documented REST
contract (https://www.tensorflow.org/tfx/serving/api_rest): POST
/v1/models/NAME[/versions/V]:predict with a row ("instances") or columnar ("inputs") body,
answered by {"predictions": ...} or {"outputs": ...}, errors as {"error": "..."}.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import tensorflow as tf


def _jsonable(value: np.ndarray):
    if value.dtype.kind in "SO":
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


class StubServer:
    """Serve `base_path`'s highest version as model `name` until stopped."""

    def __init__(self, name: str, base_path: Path, delay: float = 0.0):
        versions = sorted(int(p.name) for p in Path(base_path).iterdir() if p.name.isdigit())
        self.name, self.version, self.delay = name, versions[-1], delay
        self.requests: list[tuple[str, dict, bytes]] = []  # (path, headers, body) as received
        self.loaded = tf.saved_model.load(str(Path(base_path) / str(self.version)))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def predict(self, body: dict) -> tuple[int, dict]:
        signature = self.loaded.signatures.get(body.get("signature_name", "serving_default"))
        if signature is None:
            return 400, {"error": f'Serving signature name: "{body["signature_name"]}" not found'}
        if ("instances" in body) == ("inputs" in body):
            return 400, {"error": "Missing 'inputs' or 'instances' key"}
        row = "instances" in body
        data = body["instances"] if row else body["inputs"]
        if isinstance(data, dict):
            data = data.get("text")
        elif row and data and isinstance(data[0], dict):
            data = [x.get("text") for x in data]
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            return 400, {"error": "JSON Value: expected a list of strings for input 'text'"}
        out = {k: _jsonable(v.numpy()) for k, v in signature(text=tf.constant(data)).items()}
        if not row:
            return 200, {"outputs": out}
        return 200, {"predictions": [{k: out[k][i] for k in out} for i in range(len(data))]}

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                if self.path.rstrip("/") == f"/v1/models/{stub.name}":
                    state = {"version": str(stub.version), "state": "AVAILABLE"}
                    self._send(200, {"model_version_status": [{**state, "status": {}}]})
                else:
                    self._send(404, {"error": f"Servable not found for request: {self.path}"})

            def do_POST(self):
                time.sleep(stub.delay)
                prefix = f"/v1/models/{stub.name}"
                path = self.path
                if not (
                    path == f"{prefix}:predict"
                    or path == f"{prefix}/versions/{stub.version}:predict"
                ):
                    name = path.split("/")[3].split(":")[0] if path.count("/") >= 3 else path
                    self._send(404, {"error": f"Servable not found for request: Latest({name})"})
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append((path, dict(self.headers), raw))
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, TypeError, ValueError):
                    self._send(400, {"error": "JSON Parse error: Invalid value"})
                    return
                self._send(*stub.predict(body))

        return Handler

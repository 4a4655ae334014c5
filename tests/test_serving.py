"""The REST client against a local server that keeps TF Serving's REST contract."""

import json
import socket
import urllib.request

import pytest

from .tf_serving_stub import StubServer


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(tiny_run):
    with StubServer("tiny", tiny_run["base"]) as stub:
        yield stub


def test_the_client_asks_in_tf_serving_s_row_format(server):
    from keras_sentiment.serving.client import rest_predict

    texts = ["a great film", ""]
    records = rest_predict(server.url, "tiny", texts, signature="explain")
    path, headers, raw = server.requests[-1]
    # TF Serving's documented REST request: the row format, the signature by name.
    assert path == "/v1/models/tiny:predict" and headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {"signature_name": "explain", "instances": texts}
    assert [w for w, _ in records[0]["words"]] == ["a", "great", "film"]
    assert set(records[0]["probabilities"]) == {"neg", "pos"}


def test_cli_client_matches_local_prediction(server, tiny_run, capsys):
    from keras_sentiment.cli import main

    texts = ["A wonderful film.", "Dreadful.", ""]
    assert main(["predict", "--server", server.url, "--model-name", "tiny", *texts]) == 0
    remote = capsys.readouterr().out
    assert main(["predict", str(tiny_run["base"]), *texts]) == 0
    local = capsys.readouterr().out
    assert remote == local and len(local.splitlines()) == 3


def test_a_server_error_is_said_in_one_line(server, capsys):
    from keras_sentiment.cli import main

    url = f"{server.url}/v1/models/nope:predict"
    status, answer = post(url, {"instances": ["hi"]})
    assert main(["predict", "--server", server.url, "--model-name", "nope", "hi"]) == 2
    # The server's own words, after where and what: one line.
    assert capsys.readouterr().err == f"error: {url}: HTTP {status}: {answer['error']}\n"


def test_refused_connection_and_timeout(tiny_run, capsys):
    from keras_sentiment.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    refused = ["predict", "--server", f"http://127.0.0.1:{port}", "--model-name", "m", "hi"]
    assert main(refused) == 2 and "cannot reach TF Serving" in capsys.readouterr().err
    with StubServer("tiny", tiny_run["base"], delay=5) as slow:
        args = ["--server", slow.url, "--model-name", "tiny", "--timeout", "1", "hi"]
        assert main(["predict", *args]) == 2
    assert "timed out" in capsys.readouterr().err


def test_no_instances_answer_nothing():
    from keras_sentiment.serving.client import rest_predict

    # Nothing to ask: no request is sent (nothing listens on port 9), and no error.
    assert rest_predict("http://127.0.0.1:9", "tiny", []) == []

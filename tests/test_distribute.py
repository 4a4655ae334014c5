"""tf.distribute on one CPU machine: two workers on 127.0.0.1, and two mirrored logical CPUs."""

import json
import os
import socket
import subprocess
import sys

import pytest

from keras_sentiment.config import UserError
from keras_sentiment.records import versions
from keras_sentiment.training.train import make_strategy

from .conftest import ROOT, synthetic_reviews, write_csv


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """1,000 synthetic reviews: learnable by the LSTM alone in a few epochs."""
    texts, labels = synthetic_reviews(1000, seed=4)
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", list(zip(texts, labels)))


def fit_args(work, name: str, strategy: str, data) -> list[str]:
    # The LSTM alone (no n-gram branch), so the accuracy is the distributed training's own.
    return [
        "fit", "--name", name, "--strategy", strategy, "--dataset", str(data), "--ngrams", "0",
        "--epochs", "3", "--no-lemmatize", "--embeddings", "none", "--embedding-dim", "16",
        "--sequence-length", "64", "--lstm-units", "16", "--batch-size", "32",
        "--output-dir", str(work / "saved_models"), "--runs-dir", str(work / "runs"),
    ]  # fmt: skip


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def accuracy(work, name: str) -> float:
    meta = work / "saved_models" / name / "1" / "assets.extra" / "metadata.json"
    return json.loads(meta.read_text())["metrics"]["accuracy"]


@pytest.fixture(scope="module")
def single(tmp_path_factory, reviews) -> float:
    """Test accuracy of the same small fit on one device, to hold the distributed ones to."""
    work = tmp_path_factory.mktemp("single")
    done = subprocess.run(
        [sys.executable, "-m", "keras_sentiment", *fit_args(work, "single", "default", reviews)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert accuracy(work, "single") > 0.85  # it learned: a model at chance would say 0.5
    return accuracy(work, "single")


@pytest.mark.slow
def test_two_workers_then_only_the_chief_exports(tmp_path, single, reviews):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    args = fit_args(tmp_path, "mw", "multi-worker", reviews)
    cmd = [sys.executable, "-m", "keras_sentiment", *args]
    procs = []
    try:
        for index in range(2):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
            procs.append(
                subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
            )
        outputs = [p.communicate(timeout=480)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert "2 replica(s)" in outputs[0] and "worker done" in outputs[1]
    assert versions(tmp_path / "saved_models" / "mw") == [1]  # one export, by the chief
    assert not list((tmp_path / "runs" / "mw").glob(".worker-*"))  # worker scratch removed

    assert accuracy(tmp_path, "mw") > 0.85 and abs(accuracy(tmp_path, "mw") - single) < 0.05


MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_sentiment.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus(tmp_path, single, reviews):
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, *fit_args(tmp_path, "mirrored", "mirrored", reviews)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in done.stdout
    assert versions(tmp_path / "saved_models" / "mirrored") == [1]
    # Learns as one device does (the same global batch and rate).
    assert accuracy(tmp_path, "mirrored") > 0.85
    assert abs(accuracy(tmp_path, "mirrored") - single) < 0.05


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG"):
        make_strategy("multi-worker")

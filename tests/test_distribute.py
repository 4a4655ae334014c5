"""tf.distribute on one CPU machine: two workers on 127.0.0.1, and two mirrored logical CPUs."""

import json
import os
import socket

import pytest

from keras_sentiment.config import UserError
from keras_sentiment.records import read_metadata, versions
from keras_sentiment.training.train import make_strategy

from .helpers import (
    fit_args,
    run_cli,
    run_config,
    run_python,
    start_cli,
    synthetic_reviews,
    write_csv,
)


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """1,000 synthetic reviews: learnable by the LSTM alone in a few epochs."""
    texts, labels = synthetic_reviews(1000, seed=4)
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", list(zip(texts, labels)))


def small_fit(work, name: str, strategy: str, data) -> list[str]:
    # The LSTM alone (no n-gram branch), so the accuracy is the distributed training's own.
    return fit_args(
        run_config(
            work, name=name, strategy=strategy, dataset=str(data), ngrams=0, epochs=3,
            lemmatize=False, embeddings="none", embedding_dim=16, sequence_length=64,
            lstm_units=16, batch_size=32,
        )
    )  # fmt: skip


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
    return read_metadata(work / "saved_models" / name / "1").metrics.accuracy


@pytest.fixture(scope="module")
def single(tmp_path_factory, reviews) -> float:
    """Test accuracy of the same small fit on one device, to hold the distributed ones to."""
    work = tmp_path_factory.mktemp("single")
    done = run_cli(*small_fit(work, "single", "default", reviews), timeout=480)
    assert done.returncode == 0, done.stderr[-3000:]
    assert accuracy(work, "single") > 0.85  # it learned: a model at chance would say 0.5
    return accuracy(work, "single")


@pytest.mark.slow
def test_two_workers_then_only_the_chief_exports(tmp_path, single, reviews):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    args = small_fit(tmp_path, "mw", "multi-worker", reviews)
    procs = []
    try:
        for index in range(2):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            procs.append(start_cli(*args, env={**os.environ, "TF_CONFIG": json.dumps(tf_config)}))
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
    done = run_python(MIRRORED, *small_fit(tmp_path, "mirrored", "mirrored", reviews), timeout=480)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in done.stdout
    assert versions(tmp_path / "saved_models" / "mirrored") == [1]
    # Learns as one device does (the same global batch and rate).
    assert accuracy(tmp_path, "mirrored") > 0.85
    assert abs(accuracy(tmp_path, "mirrored") - single) < 0.05


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match=r"^Config\(strategy='multi-worker'\) needs .*TF_CONFIG"):
        make_strategy("multi-worker")

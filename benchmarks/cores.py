"""Do this machine's cores add matmul throughput? One LSTM step alone, then two at once.

The served graph's packed loop (`serving_network._packed_lstm`, max pooling) runs 200 wide
steps of 512 rows (128 units, 50-d inputs: four [512, 178] @ [178, 128] fused matmuls and the
cell a step) with one intra-op thread, first in one process, then in two processes at the same
time; a pure-Python loop the same way. If two processes each take twice as long, the cores share
their vector units (hyperthreads of one core, or a host that shares them), and running the
LSTM's two directions at once buys overlap, not FLOPs.

    python -m benchmarks.cores
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from subprocess import PIPE

ROWS, STEPS, DIM, UNITS = 512, 200, 50, 128


def lstm_step_us() -> float:
    """Median microseconds a step of the packed loop over 5 runs, one intra-op thread."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    from keras_sentiment.network.serving_network import _packed_lstm

    tf.config.threading.set_intra_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (DIM + UNITS, 4 * UNITS)).astype(np.float32)
    b = rng.normal(0, 0.1, 4 * UNITS).astype(np.float32)
    x = tf.constant(rng.normal(0, 1, (STEPS * ROWS, DIM)).astype(np.float32))
    sizes = tf.fill([STEPS], ROWS)  # every row goes on to the end: only wide steps
    run = tf.function(lambda x: _packed_lstm(x, sizes, w, b, "max"))
    run(x).numpy()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        run(x).numpy()
        times.append((time.perf_counter() - start) / STEPS * 1e6)
    return statistics.median(times)


def python_loop_s() -> float:
    """Seconds for 20 million additions in pure Python."""
    start, total = time.perf_counter(), 0
    for i in range(20_000_000):
        total += i
    return time.perf_counter() - start


def child(kind: str) -> None:
    """Print one measurement of `kind` ("lstm" or "python") for the parent to read."""
    value = lstm_step_us() if kind == "lstm" else python_loop_s()
    print(value, flush=True)


def run_children(kind: str, n: int) -> list[float]:
    """Start n child processes at once and return each one's measurement."""
    command = [sys.executable, "-m", "benchmarks.cores", "--child", kind]
    # TensorFlow's native start-up lines go to stderr whatever the log level: kept for errors.
    procs = [subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True) for _ in range(n)]
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            sys.exit(f"benchmarks.cores: a child failed: {(err.strip().splitlines() or ['?'])[-1]}")
        results.append(float(out.split()[-1]))
    return results


def main() -> None:
    """Each measurement alone, then two at once, and the slowdown."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores visible")
    for kind, unit, what in [
        ("lstm", "us a step", f"LSTM step, {ROWS} rows, one thread"),
        ("python", "s", "pure-Python loop"),
    ]:
        alone = run_children(kind, 1)[0]
        together = run_children(kind, 2)
        slowdown = sum(together) / len(together) / alone
        shown = " / ".join(f"{t:.2f}" for t in together)
        print(f"{what}: alone {alone:.2f} {unit}; two at once {shown} {unit}: {slowdown:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()

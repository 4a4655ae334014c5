"""Do this machine's cores add matmul throughput? One LSTM step alone, then two at once.

A wide step of the served graph's packed loop (512 rows, 128 units, 50-d inputs: four
[512, 178] @ [178, 128] matmuls with bias and activation, then the cell) runs in a
`tf.while_loop` with one intra-op thread, first in one process, then in two processes at
the same time; a pure-Python loop the same way. If two processes each take twice as long,
the cores share their vector units (hyperthreads of one core, or a host that shares them),
and running the LSTM's two directions at once buys overlap, not FLOPs.

    python -m benchmarks.cores
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

ROWS, STEPS, DIM, UNITS = 512, 200, 50, 128


def lstm_step_us() -> float:
    """Median microseconds a step over 5 runs of STEPS steps, one intra-op thread."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (DIM + UNITS, 4 * UNITS)).astype(np.float32)
    kernels, bias = np.split(w, 4, 1), np.split(rng.normal(0, 0.1, 4 * UNITS), 4)
    x = tf.constant(rng.normal(0, 1, (STEPS, ROWS, DIM)).astype(np.float32))

    @tf.function
    def run(x):
        def step(t, h, c):
            xh = tf.concat([x[t], h], 1)
            i, f, g, o = [tf.nn.bias_add(tf.matmul(xh, k), b) for k, b in zip(kernels, bias)]
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return t + 1, tf.sigmoid(o) * tf.tanh(c), c

        zeros = tf.zeros([ROWS, UNITS])
        return tf.while_loop(lambda t, *_: t < STEPS, step, (0, zeros, zeros))[1]

    run(x).numpy()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        run(x).numpy()
        times.append((time.perf_counter() - start) / STEPS * 1e6)
    return sorted(times)[2]


def python_loop_s() -> float:
    """Seconds for 20 million additions in pure Python."""
    start, total = time.perf_counter(), 0
    for i in range(20_000_000):
        total += i
    return time.perf_counter() - start


def child(kind: str) -> None:
    value = lstm_step_us() if kind == "lstm" else python_loop_s()
    print(value, flush=True)


def run_children(kind: str, n: int) -> list[float]:
    command = [sys.executable, "-m", "benchmarks.cores", "--child", kind]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def main() -> None:
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

"""Starting TensorFlow quietly, for the command line and the Python API alike.

TensorFlow's native start-up lines (oneDNN notices, CUDA probing such as "failed call to
cuInit") bypass Python's logging and `TF_CPP_MIN_LOG_LEVEL` for some of them, and bury the
package's one-line messages. `start_tensorflow` imports TensorFlow and probes its devices with
stderr muted, once per process, before any other stage touches it. A process that imported
TensorFlow itself keeps its own settings and output.
"""

from __future__ import annotations

import os
import sys


def start_tensorflow(run_an_op: bool = True, serving: bool = False) -> None:
    """Import TensorFlow and probe its devices with stderr muted (a no-op once it is running).

    Args:
        run_an_op: also run one boolean op, so oneDNN's once-per-process "supports DT_BOOL only
            on platforms with AVX-512" line is spent here. Multi-worker training must be the
            first to run an op, so it passes False.
        serving: keep each op to half the cores (see `serving_threads`), which must happen
            before TensorFlow runs its first op.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] >= "2"
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            if quiet:
                os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
            if serving:
                serving_threads()
            if run_an_op and quiet:
                tf.transpose(tf.zeros([2, 1], tf.bool))
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def serving_threads() -> int:
    """Keep each TensorFlow op to half the cores, so the LSTM's two directions run side by side.

    Both directions of a bidirectional layer already run at once; an op spread over every core
    then fights the other direction (benchmarks/README.md, "evaluate" rows). Process-wide, and
    only possible before TensorFlow runs its first op; later calls keep what it has.

    Returns:
        The intra-op thread count now in force (0: TensorFlow's default).
    """
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (cores or 2) // 2))
    except RuntimeError:  # TensorFlow is already running
        pass
    return tf.config.threading.get_intra_op_parallelism_threads()

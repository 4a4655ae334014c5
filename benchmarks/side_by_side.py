"""Two versions of the package side by side: is a change as fast as the code before it?

    # serving_default at 1 / 32 / 256 reviews a request and explain, two exports of one run
    python -m benchmarks.side_by_side serving OLD_EXPORT/VERSION NEW_EXPORT/VERSION --rounds 5
    # real tokens/s of the default model's training steps under two checkouts of the package
    python -m benchmarks.side_by_side training OLD_CHECKOUT NEW_CHECKOUT --run-dir runs/NAME/V
    # a run exported by the checkout on PYTHONPATH, the LSTM's weight in the mix set
    PYTHONPATH=CHECKOUT python benchmarks/side_by_side.py export runs/NAME/V OUT --lstm-weight 0.5

The served graph is built at export, so the serving rows compare two exports of the same run,
one made with each version (`PYTHONPATH=CHECKOUT python -m keras_sentiment export ...`); both
are loaded into one process and each request goes to A and to B in turn, the order
alternating, so that the two calls of a pair see the same moment of a shared, drifting
machine. Training runs one process per checkout (PYTHONPATH set to it), each warmed up (every
batch shape compiled), then asked for STEPS_A_TURN training steps at a time, in turns, both
on the same batches. Each row gives both medians and B / A: the median of the pairs' ratios,
with their quartiles. Reviews come from the TFDS IMDB files (`TFDS_DATA_DIR`), read with
TensorFlow alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SINGLE_CALLS = 200  # single-review requests a round (the first 200 test reviews)
BATCH_REVIEWS = 1024  # reviews a round sends in requests of each batch size
EXPLAIN_CALLS = 20  # single-review explain requests a round (the first 20 test reviews)
STEPS_A_TURN = 4  # training steps each side runs in its turn: a few seconds, a pair's moment


def imdb(split: str, n: int) -> tuple[list[bytes], np.ndarray]:
    """The first n reviews of TFDS' IMDB `split` and their labels, in TFDS' order."""
    import tensorflow as tf

    folder = Path(os.environ["TFDS_DATA_DIR"]) / "imdb_reviews/plain_text/1.0.0"
    files = sorted(str(f) for f in folder.glob(f"imdb_reviews-{split}.tfrecord-*"))
    features = {
        "text": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = [
        tf.io.parse_single_example(r, features) for r in tf.data.TFRecordDataset(files).take(n)
    ]
    return [p["text"].numpy() for p in parsed], np.array([int(p["label"]) for p in parsed])


def summary(name: str, a: list[float], b: list[float], unit: str) -> dict:
    """Rates measured in pairs (A's i-th beside B's i-th): both medians, and B / A as the
    median of the pairs' ratios with their quartiles (above 1: B is faster)."""
    ratios = sorted(y / x for x, y in zip(a, b))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    row = {
        "row": name,
        "unit": unit,
        "pairs": len(ratios),
        "a": statistics.median(a),
        "b": statistics.median(b),
        "b_over_a": statistics.median(ratios),
        "quartiles": [round(quartiles[0], 3), round(quartiles[2], 3)],
    }
    print(
        f"{name}: A {row['a']:,.1f} / B {row['b']:,.1f} {unit}: B/A {row['b_over_a']:.3f} "
        f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}, {len(ratios)} pairs)",
        flush=True,
    )
    return row


# --- serving ---------------------------------------------------------------------------------


def paired_rates(calls: dict, requests: list, size: int, rounds: int) -> dict[str, list[float]]:
    """Each request to A and to B in turn, the order alternating, `rounds` times: the reviews/s
    of each call, so that each pair of calls saw the same moment of the machine."""
    rates = {"a": [], "b": []}
    for r in range(rounds):
        for i, request in enumerate(requests):
            for key in ("a", "b") if (r + i) % 2 == 0 else ("b", "a"):
                start = time.perf_counter()
                calls[key](request)
                rates[key].append(size / (time.perf_counter() - start))
    return rates


def side_by_side_serving(a: str, b: str, rounds: int) -> list[dict]:
    import tensorflow as tf

    reviews, _ = imdb("test", BATCH_REVIEWS)
    loaded = {"a": tf.saved_model.load(a), "b": tf.saved_model.load(b)}

    def calls(signature: str, output: str) -> dict:
        fns = {key: m.signatures[signature] for key, m in loaded.items()}
        return {
            key: lambda texts, fn=fn: fn(text=tf.constant(texts))[output].numpy()
            for key, fn in fns.items()
        }

    serve, explain = calls("serving_default", "label_id"), calls("explain", "attributions")
    rows = {
        "serving, batch 1": (serve, [[r] for r in reviews[:SINGLE_CALLS]], 1),
        "serving, batch 32": (
            serve,
            [reviews[i : i + 32] for i in range(0, BATCH_REVIEWS, 32)],
            32,
        ),
        "serving, batch 256": (
            serve,
            [reviews[i : i + 256] for i in range(0, BATCH_REVIEWS, 256)],
            256,
        ),
        "explain, batch 1": (explain, [[r] for r in reviews[:EXPLAIN_CALLS]], 1),
    }
    for fns, requests, size in rows.values():  # warm-up: the first calls of each path
        paired_rates(fns, requests[:2], size, 1)
    results = []
    for name, (fns, requests, size) in rows.items():
        rates = paired_rates(fns, requests, size, rounds)
        results.append(summary(name, rates["a"], rates["b"], "reviews/s"))
    return results


# --- training ---------------------------------------------------------------------------------


def package() -> dict:
    """The functions this script calls, in the subpackage layout or the flat one before it."""
    import importlib

    places = {
        "train_dataset": ("data.batching", "batching"),
        "build_model": ("network.model", "model"),
        "vectorize": ("text.preprocessing", "preprocessing"),
        "load_run_model": ("network.model", "training.runs", "runs"),
        "compile_model": ("training.train", "training"),
        "NgramMix": ("network.ngrams", "ngrams"),
        "Mix": ("network.mix",),  # the stacked mix (runs before it have NgramMix)
        "export_saved_model": ("serving.saved_model", "saved_model"),
        "version_files": ("serving.saved_model", "saved_model"),
        "read_summary": ("records",),  # typed records: the export writes its files itself
    }
    found = {}
    for name, modules in places.items():
        for module in modules:
            try:
                found[name] = getattr(importlib.import_module(f"keras_sentiment.{module}"), name)
                break
            except (ImportError, AttributeError):
                continue
    return found


def export(run_dir: str, output_dir: str, lstm_weight: float | None) -> None:
    """Export a run with the checkout on PYTHONPATH, its mix's LSTM weight (the stacked mix: its
    coefficient) changed to `lstm_weight` (a quick fit's mix may give the LSTM 0, so explain
    and serving would skip it). A run is exported by the checkout that fitted it."""
    ks = package()
    pre, network, mix = ks["load_run_model"](Path(run_dir))
    if lstm_weight is not None and "Mix" in ks and isinstance(mix, ks["Mix"]):
        # The stacked mix: the LSTM's coefficient on its log-odds.
        mix = ks["Mix"](mix.members, lstm_weight, mix.coefficients, mix.bias)
    elif lstm_weight is not None:
        weighted = ks["NgramMix"](mix.order, mix.vocabulary_size, mix.size, lstm_weight)
        for mine, theirs in zip(weighted.weights, mix.weights):
            mine.assign(theirs)
        mix = weighted
    if "read_summary" in ks:
        record = ks["read_summary"](Path(run_dir))
        path = ks["export_saved_model"](
            pre, network, record.class_names, Path(output_dir), record, mix=mix
        )
    else:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        files = ks["version_files"](summary)
        path = ks["export_saved_model"](
            pre, network, summary["class_names"], Path(output_dir), summary, files, mix=mix
        )
    print(path, flush=True)


def worker(run_dir: str, reviews: int) -> None:
    """One checkout's side: the default model trained on `reviews` IMDB training reviews as
    the run's preprocessor reads them, in the package's length-bucketed batches. It warms up
    on two epochs of batches (every bucket shape compiled), prints "ready", then for each line
    it reads, a number of steps, trains that many and prints their real tokens and seconds."""
    import keras
    import tensorflow as tf

    from keras_sentiment.config import Config

    ks = package()
    texts, labels = imdb("train", reviews)
    pre = ks["load_run_model"](Path(run_dir))[0]
    rows = ks["vectorize"](pre, np.array(texts, dtype=object))
    cfg = Config()
    keras.utils.set_random_seed(cfg.seed)
    matrix = np.random.default_rng(0).normal(0, 0.3, (len(pre.vocabulary), 50))
    model = ks["build_model"](cfg, len(pre.vocabulary), 2, matrix.astype(np.float32))
    ks["compile_model"](model, cfg)
    batches = iter(ks["train_dataset"](rows, labels, cfg))  # the same stream on both sides
    for _ in range(2 * math.ceil(reviews / cfg.batch_size)):
        model.train_on_batch(*next(batches))
    print("ready", flush=True)
    for line in sys.stdin:
        tokens, seconds = 0, 0.0
        for _ in range(int(line)):
            ids, y = next(batches)
            start = time.perf_counter()
            model.train_on_batch(ids, y)
            seconds += time.perf_counter() - start
            tokens += int(tf.math.count_nonzero(ids))
        print(json.dumps({"tokens": tokens, "seconds": seconds}), flush=True)


def side_by_side_training(a: str, b: str, run_dir: str, reviews: int, pairs: int) -> list[dict]:
    workers = {}
    for key, checkout in (("a", a), ("b", b)):  # one at a time: warm-ups are not timed
        env = {**os.environ, "PYTHONPATH": str(Path(checkout).resolve())}
        args = [sys.executable, __file__, "worker", run_dir, str(reviews)]
        proc = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        while (line := proc.stdout.readline()) and line.strip() != "ready":
            pass  # what the package printed while it started
        assert line, f"worker {key} ({checkout}) stopped before it was ready"
        workers[key] = proc
    rates = {"a": [], "b": []}
    for r in range(pairs):  # the same batches on both sides, the order alternating
        for key in ("a", "b") if r % 2 == 0 else ("b", "a"):
            workers[key].stdin.write(f"{STEPS_A_TURN}\n")
            workers[key].stdin.flush()
            while not (line := workers[key].stdout.readline()).startswith("{"):
                assert line, f"worker {key} stopped"
            turn = json.loads(line)
            rates[key].append(turn["tokens"] / turn["seconds"])
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    return [summary("training (a) defaults, real tokens/s", rates["a"], rates["b"], "tokens/s")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.side_by_side", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    serving = sub.add_parser("serving", help="two exports of one run, A and B")
    serving.add_argument("a")
    serving.add_argument("b")
    serving.add_argument("--rounds", type=int, default=5, help="passes over the requests")
    training = sub.add_parser("training", help="two checkouts of the package, A and B")
    training.add_argument("a")
    training.add_argument("b")
    training.add_argument("--run-dir", required=True, help="a run whose preprocessor tokenizes")
    training.add_argument("--reviews", type=int, default=1280)
    training.add_argument("--pairs", type=int, default=60, help="turns of each side, timed")
    exporting = sub.add_parser("export", help="export a run with the checkout on PYTHONPATH")
    exporting.add_argument("run_dir")
    exporting.add_argument("output_dir", help="the model's folder: the export is its next version")
    exporting.add_argument("--lstm-weight", type=float, help="the LSTM's weight in the mix")
    work = sub.add_parser("worker")  # one side of `training`, started by it
    work.add_argument("run_dir")
    work.add_argument("reviews", type=int)
    args = parser.parse_args(argv)
    if args.what == "worker":
        worker(args.run_dir, args.reviews)
        return 0
    if args.what == "export":
        export(args.run_dir, args.output_dir, args.lstm_weight)
        return 0
    if args.what == "serving":
        rows = side_by_side_serving(args.a, args.b, args.rounds)
    else:
        rows = side_by_side_training(args.a, args.b, args.run_dir, args.reviews, args.pairs)
    print(json.dumps(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks: matmul peak, input pipeline, training tokens/s and serving speed on this machine.

Run `python -m benchmarks.bench --quick` (a few minutes) or `python -m benchmarks.bench --runs 3`
(the full numbers). Every row is printed as it finishes and the JSON file is rewritten after each
row, so a long run shows progress and keeps what it measured if it is stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import keras_sentiment as ks
from keras_sentiment.config import Config, UserError
from keras_sentiment.data.batching import bucket_boundaries, train_dataset
from keras_sentiment.data.splits import Splits, load_splits
from keras_sentiment.files import save_json
from keras_sentiment.network.compiled_lstm import cpu_has_bfloat16, gradient_dtype
from keras_sentiment.network.model import (
    MaskedGlobalMaxPooling1D,
    build_model,
    load_run_model,
    split_text_model,
)
from keras_sentiment.records import ExportRecord, read_metadata
from keras_sentiment.serving.prediction import SavedModelPredictor, resolve_version
from keras_sentiment.text.embeddings import embedding_matrix
from keras_sentiment.text.preprocessing import TextPreprocessor, adapt_preprocessor, vectorize
from keras_sentiment.training.train import compile_model

QUICK_TRAIN = 2000  # training reviews in --quick (after the validation hold-out)
SERVE_REVIEWS = {"quick": 1024, "full": 2048}  # test reviews pushed through the batch runs
SERVE_BATCHES = (32, 256)
SINGLE_CALLS = 200  # single-review calls for batch-1 throughput and p50/p99 latency
# Batches per timed PyTorch run: packed sequences train many times slower than padded batches
# on CPU (the "PyTorch peer, packed" and "padded" rows), so fewer of them.
TORCH_BATCHES = {"packed": 20, "padded": 120}
WARMUP_STEPS = 5  # training steps before timing, so tf.function tracing is not counted
MATMUL_N = 4096
# Published in the issue for the PyTorch/torchtext version of config (b), not measured here.
PUBLISHED = {"tokens_per_s": (80_000, 86_000), "epoch_s": 75.0, "reviews": 22_500}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, SIMD flags, library versions and GPUs: what the numbers depend on."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first processor's entries
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "cpu": info.get("model name", "unknown"),
        # A vague model name ("AMD EPYC" under a hypervisor) still has family/model/MHz.
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "cpu_mhz": info.get("cpu MHz", "unknown"),
        "cores": os.cpu_count(),
        "simd": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "gpu_visible": bool(gpus),
        "gpus": [g.name for g in gpus],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
    }


class Report:
    """Rows of results: printed as they finish, kept in a JSON file rewritten after each row."""

    def __init__(self, path: Path, machine: dict[str, Any], mode: str):
        self.path, self.machine, self.rows = path, machine, []
        self.head = {
            "benchmark": "keras_sentiment",
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(
                [Path(sys.executable).name, "-m", "benchmarks.bench", *sys.argv[1:]]
            ),
            "mode": mode,
            "machine": machine,
        }

    def add(
        self,
        measurement: str,
        data: str,
        settings: dict[str, Any],
        seconds: float | None,
        result: dict[str, Any],
        summary: str,
        brief: str = "",
    ) -> dict[str, Any]:
        """Record one row, print it at once and save the JSON so far."""
        row = {
            "id": len(self.rows) + 1,
            "measurement": measurement,
            "data": data,
            "settings": settings,
            "settings_brief": brief or ", ".join(f"{k}={v}" for k, v in settings.items()),
            "seconds": None if seconds is None else round(seconds, 4),
            "result": result,
            "summary": summary,
            # Load from the other work on the machine, to judge how disturbed a number is.
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "machine": self.machine,
        }
        self.rows.append(row)
        secs = "-" if seconds is None else f"{seconds:.3f}s"
        print(
            f"\n[{row['id']}] {measurement}: {summary}\n"
            f"    data: {data}\n    settings: {row['settings_brief']}\n"
            f"    seconds: {secs}   load avg: {row['load_avg_1m']}",
            flush=True,
        )
        save_json(self.path, {**self.head, "rows": self.rows})
        return row

    def table(self) -> str:
        """All rows as one Markdown table, with the machine above it."""
        m = self.machine
        lines = [
            f"machine: {m['cpu']} (family/model {m['cpu_family_model']}, {m['cpu_mhz']} MHz), "
            f"{m['cores']} cores ({' '.join(m['simd'])}), "
            f"TF {m['tensorflow']}, Keras {m['keras']}, GPU visible: {m['gpu_visible']}",
            "",
            "| # | measurement | data | settings | seconds | result |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in self.rows:
            secs = "-" if r["seconds"] is None else f"{r['seconds']:.3f}"
            cells = [str(r["id"]), r["measurement"], r["data"], r["settings_brief"], secs]
            lines.append("| " + " | ".join([*cells, r["summary"]]) + " |")
        return "\n".join(lines)


def bench_matmul(report: Report, n: int, repeats: int) -> float:
    """Float32 tf.matmul GFLOP/s (median of repeats): the ceiling for the LSTM numbers below."""
    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    tf.matmul(a, b)[0, 0].numpy()  # warm-up: thread pool and oneDNN primitive creation
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b)[0, 0].numpy()  # reading one value waits for the product
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    gflops = 2 * n**3 / median / 1e9
    report.add(
        "float32 matmul peak",
        f"random {n}x{n} @ {n}x{n}",
        {"n": n, "repeats": repeats, "warmup": 1, "dtype": "float32"},
        median,
        {"gflops": round(gflops, 1), "run_seconds": [round(s, 4) for s in seconds]},
        f"{gflops:.1f} GFLOP/s (2n^3/s, median of {repeats})",
    )
    return gflops


def model_brief(cfg: Config) -> str:
    """The settings that shape the work per token, for the table (the JSON has all of them)."""
    kind = "biLSTM" if cfg.bidirectional else "LSTM"
    return (
        f"{cfg.lstm_layers}x{kind} {cfg.lstm_units}, {gradient_dtype(cfg.precision)}, "
        f"glove {cfg.embeddings}, "
        f"vocab {cfg.vocab_size}, seq {cfg.sequence_length}, batch {cfg.batch_size}, "
        f"pool {cfg.pooling}, dropout {cfg.dropout}, lemmatize {cfg.lemmatize}, "
        f"stopwords {cfg.remove_stopwords}, lr {cfg.learning_rate}"
    )


def lstm_flops_per_token(cfg: Config, input_dim: int) -> int:
    """Forward FLOPs per token of the LSTM stack: 2*4*u*(d+u) per layer and direction."""
    directions = 2 if cfg.bidirectional else 1
    total, d = 0, input_dim
    for _ in range(cfg.lstm_layers):
        total += directions * 2 * 4 * cfg.lstm_units * (d + cfg.lstm_units)
        d = directions * cfg.lstm_units
    return total


def bench_pipeline(
    report: Report, label: str, cfg: Config, pre: TextPreprocessor, texts: np.ndarray, data: str
) -> tuple[list[np.ndarray], float]:
    """Raw texts -> token-id rows with the package's vectorize; returns the rows and examples/s."""
    start = time.perf_counter()
    rows = vectorize(pre, texts)  # includes tracing the map function once, as fit pays it too
    seconds = time.perf_counter() - start
    lengths = np.array([len(r) for r in rows])
    cut = int(np.sum(lengths >= cfg.sequence_length))
    rate = len(rows) / seconds
    report.add(
        f"input pipeline {label}: raw text -> token ids (preprocessing.vectorize)",
        data,
        {
            "lemmatize": cfg.lemmatize,
            "remove_stopwords": cfg.remove_stopwords,
            "vocabulary": len(pre.vocabulary),
            "sequence_length": cfg.sequence_length,
            "truncate": cfg.truncate,
            "map_batch": 512,
            "num_parallel_calls": "AUTOTUNE",
        },
        seconds,
        {
            "examples_per_s": round(rate, 1),
            "tokens_per_s": round(lengths.sum() / seconds),
            "tokens": int(lengths.sum()),
            "mean_tokens": round(float(lengths.mean()), 1),
            "max_tokens": int(lengths.max()),
            "rows_at_sequence_length": cut,
        },
        f"{rate:,.0f} examples/s, {lengths.sum() / seconds:,.0f} tokens/s; "
        f"mean {lengths.mean():.0f} tokens, longest {lengths.max()}, "
        f"{cut} rows cut at {cfg.sequence_length}",
        f"lemmatize {cfg.lemmatize}, vocab {len(pre.vocabulary)}, seq {cfg.sequence_length}, "
        "batches of 512 mapped with AUTOTUNE",
    )
    return rows, rate


def bench_dataset(
    report: Report, label: str, cfg: Config, rows: list[np.ndarray], labels: np.ndarray, data: str
) -> dict[str, Any]:
    """One epoch of training.train_dataset batches, iterated with no model."""
    steps = math.ceil(len(labels) / cfg.batch_size)
    start = time.perf_counter()
    ds = train_dataset(rows, labels, cfg)
    built = time.perf_counter()
    iterator = iter(ds)
    examples = tokens = slots = 0
    first = 0.0
    for step in range(steps):
        ids, _ = next(iterator)
        if step == 0:
            first = time.perf_counter() - built  # iterator start and the shuffle buffer fill
        examples += int(ids.shape[0])
        slots += int(ids.shape[0] * ids.shape[1])
        tokens += int(tf.math.count_nonzero(ids))  # PAD is 0, every real token is > 0
    seconds = time.perf_counter() - built
    steady = (steps - 1) / (seconds - first) if steps > 1 else float("nan")
    result = {
        "steps": steps,
        "build_seconds": round(built - start, 3),
        "first_batch_seconds": round(first, 3),
        "batches_per_s": round(steps / seconds, 1),
        "steady_batches_per_s": round(steady, 1),
        "examples_per_s": round(examples / seconds, 1),
        "examples": examples,
        "real_tokens": tokens,
        "padded_slots": slots,
        "padding_overhead": round(slots / tokens - 1, 4),
    }
    report.add(
        f"training dataset {label} alone (training.train_dataset)",
        data,
        {
            "batch_size": cfg.batch_size,
            "bucket_width": 32,
            "sequence_length": cfg.sequence_length,
            "shuffle": len(labels),
            "prefetch": 4,
            "steps": steps,
        },
        seconds,
        result,
        f"{steps / seconds:,.1f} batches/s, {examples / seconds:,.0f} examples/s "
        f"(first batch {first:.2f}s, then {steady:,.1f} batches/s); "
        f"padding adds {slots / tokens - 1:.1%} steps",
        f"batch {cfg.batch_size}, {len(bucket_boundaries(cfg.sequence_length))} length "
        f"buckets up to {cfg.sequence_length} (padded to their bound), "
        f"one epoch = {steps} batches, build {built - start:.2f}s not counted",
    )
    return result


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of every epoch of a model.fit, in `seconds`."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class EpochTokens(EpochTimer):
    """EpochTimer that also reads how many real tokens and examples each epoch consumed."""

    def __init__(self, counter: tf.Variable, examples: tf.Variable):
        super().__init__()
        self.counter, self.examples = counter, examples
        self.tokens: list[int] = []
        self.batches: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._at = int(self.counter.numpy()), int(self.examples.numpy())
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.tokens.append(int(self.counter.numpy()) - self._at[0])
        self.batches.append(int(self.examples.numpy()) - self._at[1])


def counted(ds: tf.data.Dataset, tokens: tf.Variable, examples: tf.Variable) -> tf.data.Dataset:
    """The same batches, adding each one's real tokens to a counter as fit takes it."""

    # A stateful map after the prefetch runs when fit pulls the batch (one per step), so the
    # counter holds what was consumed, not what was prefetched.
    def count(ids, labels):
        with tf.control_dependencies(
            [
                tokens.assign_add(tf.math.count_nonzero(ids, dtype=tf.int64)),
                examples.assign_add(tf.cast(tf.shape(ids)[0], tf.int64)),
            ]
        ):
            return tf.identity(ids), labels

    return ds.map(count)


@dataclasses.dataclass
class TimedFit:
    """What the timed epochs of one model.fit measured."""

    model: keras.Model
    timer: EpochTokens
    dim: int  # the embedding width, the LSTM's input
    steps: int  # per epoch
    batch_size: int
    warmup: float  # seconds of the warm-up steps, not timed
    wall: float  # seconds of the timed fit, epochs and what lies between them
    traces: tuple[int | None, int | None]  # train-step traces before and after the timed fit

    @property
    def rate(self) -> float:
        """Median real tokens/s over the epochs."""
        # Real tokens are counted per epoch. The sum of the n rows' lengths is what an epoch
        # holds on average, but a fresh bucketing iterator first emits the common (short)
        # lengths while long reviews wait in part-filled buckets, so a short run consumes
        # fewer tokens than that.
        return statistics.median(t / s for t, s in zip(self.timer.tokens, self.timer.seconds))

    @property
    def median(self) -> float:
        """Median epoch seconds."""
        return statistics.median(self.timer.seconds)

    @property
    def consumed(self) -> int:
        """Examples an epoch should take: its steps of full batches."""
        return self.steps * self.batch_size


def timed_fit(
    cfg: Config, pre: TextPreprocessor, rows: list[np.ndarray], splits: Splits, runs: int
) -> TimedFit:
    """Build and compile the model, run the warm-up steps, then `runs` timed epochs."""
    keras.utils.set_random_seed(cfg.seed)
    labels = splits.train.labels
    matrix, _ = embedding_matrix(cfg, pre.vocabulary)
    dim = cfg.embedding_dim if matrix is None else matrix.shape[1]
    model = build_model(cfg, len(pre.vocabulary), len(splits.class_names), matrix)
    compile_model(model, cfg)
    tokens_seen = tf.Variable(0, dtype=tf.int64, trainable=False)
    examples_seen = tf.Variable(0, dtype=tf.int64, trainable=False)
    ds = counted(train_dataset(rows, labels, cfg), tokens_seen, examples_seen)
    steps = math.ceil(len(labels) / cfg.batch_size)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=WARMUP_STEPS, epochs=1, shuffle=False, verbose=0)
    warmup = time.perf_counter() - start
    traces_before = tracing_count(model)
    timer = EpochTokens(tokens_seen, examples_seen)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=runs, shuffle=False, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - start
    traces = (traces_before, tracing_count(model))
    return TimedFit(model, timer, dim, steps, cfg.batch_size, warmup, wall, traces)


def training_result(fit: TimedFit, flops: int, row_tokens: int, peak: float) -> dict[str, Any]:
    """The JSON result of a training row."""
    gflops = fit.rate * flops / 1e9
    return {
        "tokens_per_s": round(fit.rate),
        "examples_per_s": round(fit.consumed / fit.median, 1),
        "epoch_seconds": [round(s, 3) for s in fit.timer.seconds],
        "median_epoch_seconds": round(fit.median, 3),
        "tokens_per_epoch": fit.timer.tokens,
        "examples_per_epoch": fit.timer.batches,
        "sum_of_row_lengths": row_tokens,
        "tokens_per_s_from_row_lengths": round(row_tokens / fit.median),
        "steps_per_epoch": fit.steps,
        "warmup_seconds": round(fit.warmup, 2),
        "fit_seconds_outside_epochs": round(fit.wall - sum(fit.timer.seconds), 3),
        "tf_function_traces": list(fit.traces),
        "lstm_train_flops_per_token": flops,
        "achieved_gflops": round(gflops, 2),
        "fraction_of_matmul_peak": round(gflops / peak, 4),
        "parameters": fit.model.count_params(),
    }


def training_warnings(fit: TimedFit) -> str:
    """What would make a training row's numbers wrong: retracing, or miscounted examples."""
    before, after = fit.traces
    warnings = ""
    if before != after:
        warnings += f"; RETRACED {after - before}x while timed"
    if any(b != fit.consumed for b in fit.timer.batches):  # the counter would be reading ahead
        warnings += f"; COUNTED {fit.timer.batches} examples, expected {fit.consumed} per epoch"
    return warnings


def bench_training(
    report: Report,
    label: str,
    cfg: Config,
    pre: TextPreprocessor,
    rows: list[np.ndarray],
    splits: Splits,
    runs: int,
    peak: float,
    data: str,
) -> tuple[float, float]:
    """Epoch time and real tokens/s of model.fit: examples/s and tokens/s."""
    fit = timed_fit(cfg, pre, rows, splits, runs)
    rate, median, consumed, steps = fit.rate, fit.median, fit.consumed, fit.steps
    row_tokens = sum(len(r) for r in rows)
    flops = 3 * lstm_flops_per_token(cfg, fit.dim)  # forward + backward ~ 3x forward
    gflops = rate * flops / 1e9
    report.add(
        f"training {label}: model.fit, one epoch",
        data,
        {
            **cfg.to_dict(),
            "vocabulary": len(pre.vocabulary),
            "embedding_dim": fit.dim,
            "runs": runs,
            "warmup_steps": WARMUP_STEPS,
            "steps_per_epoch": steps,
        },
        median,
        training_result(fit, flops, row_tokens, peak),
        f"{rate:,.0f} real tokens/s, median of {runs} epoch(s) of {median:.1f}s "
        f"({consumed / median:,.1f} reviews/s; sum of row lengths / epoch would say "
        f"{row_tokens / median:,.0f}); {flops / 1e6:.2f} MFLOP/token -> {gflops:.1f} GFLOP/s = "
        f"{gflops / peak:.1%} of matmul peak{training_warnings(fit)}",
        model_brief(cfg) + f"; {runs} epoch(s) of {steps} steps of {cfg.batch_size} after "
        f"{WARMUP_STEPS} warm-up steps; tokens = unpadded tokens of the batches fit consumed",
    )
    return consumed / median, rate


def tracing_count(model: keras.Model) -> int | None:
    """How often Keras traced its train step, to show the timed epochs did not retrace."""
    fn = getattr(model, "train_function", None)
    inner = getattr(fn, "__closure__", None) or ()
    for cell in inner:  # train_function wraps the tf.function that does the tracing
        count = getattr(cell.cell_contents, "experimental_get_tracing_count", None)
        if count:
            return count()
    return None


def published_row(report: Report, peak: float, seed_cfg: Config, full_tokens: int | None) -> None:
    """The PyTorch/torchtext figure from the issue, for reference only."""
    low, high = PUBLISHED["tokens_per_s"]
    flops = 3 * lstm_flops_per_token(seed_cfg, 50)
    implied = (low + high) / 2 * flops / 1e9
    result = {
        "tokens_per_s": [low, high],
        "epoch_seconds": PUBLISHED["epoch_s"],
        "implied_gflops": round(implied, 1),
        "implied_fraction_of_matmul_peak_here": round(implied / peak, 3),
    }
    summary = (
        f"{low:,}-{high:,} tokens/s, {PUBLISHED['epoch_s']:.0f}s per epoch; at "
        f"{flops / 1e6:.2f} MFLOP/token that is {implied:.0f} GFLOP/s = {implied / peak:.0%} "
        "of the matmul peak measured here"
    )
    if full_tokens:  # our tokenization differs from torchtext's: what the published epoch means
        ours = full_tokens / PUBLISHED["epoch_s"]
        result["our_tokens_per_epoch"] = full_tokens
        result["our_tokens_in_75s_epoch_per_s"] = round(ours)
        summary += f"; our tokenization gives {full_tokens:,} tokens/epoch = {ours:,.0f}/s in "
        summary += f"{PUBLISHED['epoch_s']:.0f}s"
    report.add(
        "training (b) PyTorch/torchtext: PUBLISHED IN THE ISSUE, NOT MEASURED HERE",
        f"IMDB train, {PUBLISHED['reviews']:,} reviews, full length",
        {"source": "issue", "model": "1xLSTM 256, GloVe 50d, vocab 25000, batch 64"},
        PUBLISHED["epoch_s"],
        result,
        summary,
        "same model as (b), PyTorch on these 2 cores (as reported)",
    )


def run_torch_peer(
    python: str, rows: Path, cfg: Config, runs: int, mode: str
) -> tuple[dict[str, Any], float] | None:
    """One run of benchmarks/torch_peer.py: its JSON result and wall seconds, or None if it
    failed (said on stdout)."""
    script = Path(__file__).with_name("torch_peer.py")
    command = [python, str(script), str(rows), "--epochs", str(runs)]
    command += ["--batch-size", str(cfg.batch_size), "--units", str(cfg.lstm_units)]
    command += ["--max-batches", str(TORCH_BATCHES[mode])]
    command += ["--padded"] if mode == "padded" else []
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"PyTorch peer failed ({python}): {tail}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def bench_torch_peer(
    report: Report,
    python: str,
    cfg: Config,
    pre: TextPreprocessor,
    rows: list[np.ndarray],
    labels: np.ndarray,
    runs: int,
    ours: dict[str, float],
    data: str,
    modes: tuple[str, ...] = ("packed", "padded"),
) -> None:
    """The same seed model in PyTorch (benchmarks/torch_peer.py), on the same token ids."""
    matrix, _ = embedding_matrix(cfg, pre.vocabulary)
    with tempfile.TemporaryDirectory(prefix="bench-torch-") as tmp:
        path = Path(tmp) / "rows.npz"
        np.savez(
            path,
            ids=np.concatenate(rows),
            lengths=np.array([len(r) for r in rows], np.int64),
            labels=labels,
            embeddings=matrix,
        )
        for mode in modes:
            ran = run_torch_peer(python, path, cfg, runs, mode)
            if ran is None:
                return
            result, wall = ran
            rate = result["median_tokens_per_s"]
            seconds = statistics.median(e["seconds"] for e in result["epochs"])
            ratios = {f"ours_{name}_over_torch": round(r / rate, 3) for name, r in ours.items()}
            result.update(ratios)
            said = ", ".join(f"ours (b) {k} / PyTorch = {r / rate:.2f}x" for k, r in ours.items())
            how = "packed sequences (the tutorial's)" if mode == "packed" else "padded batches"
            report.add(
                f"training (b) PyTorch peer, {mode}: same model, same token ids, measured here",
                data,
                {
                    "script": "benchmarks/torch_peer.py",
                    "torch": result["torch"],
                    "threads": result["threads"],
                    "model": f"Embedding {matrix.shape[1]} (GloVe) -> nn.LSTM "
                    f"{cfg.lstm_units} over {how} -> Linear",
                    "batch": cfg.batch_size,
                    "epochs": runs,
                    "batches_per_epoch": result["batches_per_epoch"],
                    "wall_seconds_with_start": round(wall, 1),
                },
                seconds,
                result,
                f"{rate:,.0f} real tokens/s, median of {runs} run(s) of "
                f"{result['batches_per_epoch']} batches ({seconds:.1f}s); {said}",
                f"torchtext tutorial model in PyTorch, {how}, Adam, same machine, same run",
            )


def measure_serving(serve, reviews: list[bytes]) -> dict[str, float]:
    """One pass: batch-1 reviews/s with p50/p99/max latency, then batches of 32 and 256."""
    for size in (1, *SERVE_BATCHES):  # warm-up: first calls of a new shape are slow
        for _ in range(2):
            serve(text=tf.constant(reviews[:size]))["label_id"].numpy()
    singles = [
        tf.constant(reviews[i % len(reviews) : i % len(reviews) + 1]) for i in range(SINGLE_CALLS)
    ]
    latencies = []
    for batch in singles:
        start = time.perf_counter()
        serve(text=batch)["label_id"].numpy()  # reading the answer waits for it
        latencies.append(time.perf_counter() - start)
    p50, p99 = np.percentile(latencies, [50, 99])
    rates = {
        "batch_1": SINGLE_CALLS / sum(latencies),
        "p50_ms": p50 * 1e3,
        "p99_ms": p99 * 1e3,
        "max_ms": max(latencies) * 1e3,
    }
    for size in SERVE_BATCHES:
        batches = [tf.constant(reviews[i : i + size]) for i in range(0, len(reviews), size)]
        start = time.perf_counter()
        for batch in batches:
            serve(text=batch)["label_id"].numpy()
        rates[f"batch_{size}"] = len(reviews) / (time.perf_counter() - start)
    return rates


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each key's median over the rounds."""
    return {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}


def serving_settings(
    predictor: SavedModelPredictor, origin: str, rounds: int, with_peer: bool
) -> tuple[dict[str, Any], str]:
    """The settings of the serving rows, and their brief for the table."""
    arch = predictor.metadata.config
    settings = {
        "model": str(predictor.path),
        "origin": origin,
        "signature": "serving_default",
        "order": "test-split order (not length-sorted, like independent requests)",
        "rounds": rounds,
        **{
            k: arch[k]
            for k in ("lstm_layers", "lstm_units", "bidirectional", "sequence_length", "ngrams")
            if k in arch
        },
    }
    mix, old = predictor.metadata.mix, predictor.metadata.ngrams
    kept = [m.kind for m in mix.members if mix.coefficients.get(m.kind)] if mix else []
    branch = f", stacked with NB-LR on {' and '.join(kept)} n-grams" if kept else ""
    branch = f", plus the 1-{old.order}-gram NB-LR branch" if old else branch
    brief = f"{origin}{branch}; raw strings through signatures['serving_default'], arrival order"
    brief += f"; medians of {rounds} rounds" + (", each ours then PyTorch" if with_peer else "")
    return settings, brief


def serving_rounds(
    predictor: SavedModelPredictor, reviews: list[bytes], rounds: int, peer=None
) -> tuple[list[dict[str, float]], list[dict]]:
    """Each round ours, then the PyTorch peer if given: both rounds' rates, printed as they come."""
    ours, theirs = [], []
    for i in range(rounds):
        ours.append(measure_serving(predictor.signature, reviews))
        print(f"serving round {i + 1}/{rounds}: ours {ours[-1]}", flush=True)
        if peer:
            theirs.append(peer())
            print(f"serving round {i + 1}/{rounds}: PyTorch {theirs[-1]}", flush=True)
    return ours, theirs


def bench_serving(
    report: Report,
    path: Path,
    texts: np.ndarray,
    data: str,
    origin: str,
    rounds: int,
    peer=None,
) -> None:
    """Reviews/s at batch 1, 32 and 256 and single-review latency of serving_default.

    With `peer` (a callable running the PyTorch peer once), each round times ours and then
    the peer, so both see the same minutes of a machine whose speed drifts; the rows give
    medians over the rounds and the ratio of the medians, the JSON every round.
    """
    predictor = SavedModelPredictor(path)  # loads with tf.saved_model.load, keeps the object
    reviews = [bytes(t) for t in texts]
    settings, brief = serving_settings(predictor, origin, rounds, peer is not None)
    ours, theirs = serving_rounds(predictor, reviews, rounds, peer)
    rates = median_of(ours)
    rounds_json = {"rounds": [{k: round(v, 3) for k, v in r.items()} for r in ours]}
    report.add(
        "serving throughput, batch 1",
        f"IMDB test, first {SINGLE_CALLS} of the {len(reviews)} reviews below, one per call",
        {**settings, "batch": 1, "calls": SINGLE_CALLS},
        SINGLE_CALLS / rates["batch_1"],
        {"reviews_per_s": round(rates["batch_1"], 1), **rounds_json},
        f"{rates['batch_1']:,.1f} reviews/s",
        brief,
    )
    report.add(
        "serving latency, single review",
        f"IMDB test, {SINGLE_CALLS} single-review calls after warm-up",
        {**settings, "batch": 1, "calls": SINGLE_CALLS},
        rates["p50_ms"] / 1e3,
        {k: round(rates[k], 2) for k in ("p50_ms", "p99_ms", "max_ms")},
        f"p50 {rates['p50_ms']:.2f} ms, p99 {rates['p99_ms']:.2f} ms, max {rates['max_ms']:.1f} ms",
        brief,
    )
    for size in SERVE_BATCHES:
        calls = -(-len(reviews) // size)
        report.add(
            f"serving throughput, batch {size}",
            data,
            {**settings, "batch": size, "calls": calls},
            len(reviews) / rates[f"batch_{size}"],
            {"reviews_per_s": round(rates[f"batch_{size}"], 1), "calls": calls},
            f"{rates[f'batch_{size}']:,.1f} reviews/s ({calls} calls)",
            brief,
        )
    if theirs:
        report_torch_serving(report, ours, theirs, data)


def bench_fit(report: Report, cfg: Config, folder: Path, data: str) -> ks.Run:
    """`ks.fit` end to end (the work of `python -m keras_sentiment fit`), one epoch."""
    where = {"output_dir": str(folder / "saved_models"), "runs_dir": str(folder / "runs")}
    cfg = Config(**{**cfg.to_dict(), "epochs": 1, "name": "bench_default", **where})
    start = time.perf_counter()
    run = ks.fit(cfg)
    seconds = time.perf_counter() - start
    report.add(
        "ks.fit end to end (a), 1 epoch",
        data,
        cfg.to_dict(),
        seconds,
        {"accuracy": run.report["accuracy"], "export": str(run.export_path)},
        f"{seconds:.0f}s: data, preprocessing, training, report, plots, export "
        f"(test accuracy {run.report['accuracy']:.4f} after 1 epoch)",
        model_brief(cfg) + "; the model the serving rows below serve",
    )
    return run


def bench_evaluate(report: Report, path: Path) -> None:
    """`evaluate` on the whole IMDB test split, run as a user runs it, timed by the CLI itself."""
    # Its own process: the CLI sets TensorFlow's threads for serving before the first op,
    # which this process, already training and serving, can no longer do.
    command = [sys.executable, "-m", "keras_sentiment", "evaluate", str(path), "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise UserError(f"evaluate failed: {last[0]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds, n = result["seconds"], result["support"]
    report.add(
        "evaluate: the whole test split through the SavedModel",
        f"IMDB test, all {n:,} reviews",
        {"model": result["model"], "command": " ".join(command[1:])},
        seconds,
        {"reviews_per_s": round(n / seconds, 1), "accuracy": round(result["accuracy"], 4)},
        f"{seconds:.1f}s, {n / seconds:,.0f} reviews/s (accuracy {result['accuracy']:.4f})",
        "`python -m keras_sentiment evaluate`: its own timing, after the model and data load",
    )


def serving_peer(python: str | None, path: Path, texts: np.ndarray):
    """The PyTorch serving peer of an exported model, if asked for and its run is still there."""
    if not python:
        return None
    network = trained_network(path)
    if network is None:
        print(f"PyTorch serving peer: no run folder with model.keras for {path}", flush=True)
        return None
    return torch_serving_peer(python, network, texts)


def trained_network(path: Path) -> tuple[keras.Model, TextPreprocessor] | None:
    """The Keras model and preprocessor of the run that exported `path`, if still there."""
    meta = read_metadata(path) or ExportRecord()
    # The metadata names its run; exports from before runs were numbered lie in runs/NAME,
    # NAME being the export's own folder name.
    run_dir = Path(meta.run_dir or Path(meta.config.get("runs_dir", "runs")) / path.parent.name)
    if not (run_dir / "model.keras").is_file():
        return None
    pre, network, _ = load_run_model(run_dir)  # the peer runs the LSTM alone, without n-grams
    return network, pre


def torch_serving_peer(
    python: str, network: tuple[keras.Model, TextPreprocessor], texts: np.ndarray
):
    """A callable that runs the PyTorch peer once (benchmarks/torch_serving.py), or None.

    The same network and weights, fed our token ids; only for the default architecture.
    """
    model, pre = network
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    pooling = [layer for layer in model.layers if isinstance(layer, MaskedGlobalMaxPooling1D)]
    if len(lstms) != 1 or not pooling or len(model.layers) != 6:
        print("PyTorch serving peer: only for the default network (BiLSTM, max pool)", flush=True)
        return None
    reviews = [bytes(t) for t in texts]
    ids = pre(tf.constant(reviews)).numpy()
    lengths = np.count_nonzero(ids, axis=1)
    forward, backward = lstms[0].forward_layer.cell, lstms[0].backward_layer.cell
    dense = model.layers[-1]
    arrays = {
        "ids": np.concatenate([row[:n] for row, n in zip(ids, lengths)]).astype(np.int64),
        "lengths": lengths.astype(np.int64),
        "embedding": np.asarray(model.layers[0].embeddings),
        "dense_kernel": np.asarray(dense.kernel),
        "dense_bias": np.asarray(dense.bias),
        # The network alone, as the peer serves it: the export may also mix in the n-grams.
        "probabilities": model(ids[:256], training=False).numpy(),
    }
    for side, cell in (("fw", forward), ("bw", backward)):
        arrays[f"{side}_kernel"] = np.asarray(cell.kernel)
        arrays[f"{side}_recurrent"] = np.asarray(cell.recurrent_kernel)
        arrays[f"{side}_bias"] = np.asarray(cell.bias)
    folder = tempfile.TemporaryDirectory(prefix="bench-torch-serving-")  # removed with `run`
    npz = Path(folder.name) / "net.npz"
    np.savez(npz, **arrays)
    script = Path(__file__).with_name("torch_serving.py")
    command = [python, str(script), str(npz), "--singles", str(SINGLE_CALLS)]
    command += ["--batches", ",".join(str(b) for b in SERVE_BATCHES)]

    def run(folder=folder) -> dict:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"PyTorch serving peer failed ({python}): {tail}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


def report_torch_serving(report: Report, ours: list[dict], theirs: list[dict], data: str) -> None:
    """The PyTorch rows: medians over the rounds, each beside ours of the same rounds."""
    first = theirs[0]
    settings = {
        "script": "benchmarks/torch_serving.py",
        "torch": first["torch"],
        "threads": first["threads"],
        "model": "the same network and weights, fed our token ids",
        "max_abs_diff_vs_ours": max(
            max(r["max_abs_diff_vs_ours_packed"], r["max_abs_diff_vs_ours_chunked"]) for r in theirs
        ),
    }
    brief = "PyTorch, same network, weights and token ids; faster of packed / sorted chunks of 64"
    brief += f"; medians of {len(theirs)} rounds, each after ours"
    mine = median_of(ours)
    for size in (1, *SERVE_BATCHES):
        best = []  # per round, the faster of the two ways
        for r in theirs:
            modes = {m: r[f"batch_{size}_{m}"] for m in ("packed", "chunked")}
            mode = max(modes, key=lambda m: modes[m]["reviews_per_s"])
            best.append({**modes[mode], "mode": mode})
        rate = float(np.median([b["reviews_per_s"] for b in best]))
        per_round = [o[f"batch_{size}"] / b["reviews_per_s"] for o, b in zip(ours, best)]
        extra = ""
        if size == 1:
            p50 = float(np.median([b["p50_ms"] for b in best]))
            p99 = float(np.median([b["p99_ms"] for b in best]))
            extra = f", p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            extra += f" (ours p50 {mine['p50_ms']:.2f}, p99 {mine['p99_ms']:.2f})"
        modes_used = "/".join(sorted({b["mode"] for b in best}))
        report.add(
            f"serving throughput, batch {size}, PyTorch peer",
            data if size > 1 else f"IMDB test, first {SINGLE_CALLS} reviews, one per call",
            {**settings, "batch": size, "rounds": best},
            None,
            {
                "reviews_per_s": round(rate, 1),
                "ours_over_torch": round(mine[f"batch_{size}"] / rate, 3),
                "ours_over_torch_per_round": [round(x, 3) for x in per_round],
            },
            f"{rate:,.1f} reviews/s ({modes_used}){extra}; ours / PyTorch = "
            f"{mine[f'batch_{size}'] / rate:.2f}x (rounds: "
            + ", ".join(f"{x:.2f}x" for x in per_round)
            + ")",
            brief,
        )


def configs(quick: bool) -> dict[str, Config]:
    """(a) the package defaults and (b) the PyTorch "seed" model, on the same data slice."""
    data: dict[str, Any] = {"max_test": SERVE_REVIEWS["quick" if quick else "full"]}
    if quick:  # max_train is cut before the validation hold-out: ask enough to keep QUICK_TRAIN
        data["max_train"] = math.ceil(QUICK_TRAIN / (1 - Config().validation_fraction))
    seed = Config(
        **data,
        lstm_layers=1,
        lstm_units=256,
        bidirectional=False,
        embeddings="glove-6b-50d",
        vocab_size=25000,
        batch_size=64,
        pooling="last",
        sequence_length=3000,  # longer than any IMDB review: nothing is cut
        lemmatize=False,
        dropout=0.0,
    )
    return {"a": Config(**data).validate(), "b": seed.validate()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with --runs and --serving-rounds resolved to their counts."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2000 training reviews, 1 run")
    parser.add_argument("--runs", type=int, help="timed epochs per training config (3; quick 1)")
    parser.add_argument("--json", default="bench_results/bench.json", help="results file")
    parser.add_argument(
        "--serving-rounds",
        type=int,
        help="serving passes, each ours then the PyTorch peer; rows give medians (3; quick 1)",
    )
    parser.add_argument(
        "--model", help="saved_models/NAME or NAME/VERSION to serve (default: export model (a))"
    )
    parser.add_argument(
        "--torch-python",
        help="a Python with torch installed: also time the PyTorch peer of model (b)",
    )
    parser.add_argument(
        "--only",
        choices=["serving", "training"],
        help="serving: the matmul peak, serving and evaluate (needs --model); training: the "
        "matmul peak, pipeline and training rows, and PyTorch's padded peer",
    )
    args = parser.parse_args(argv)
    if args.only == "serving" and not args.model:
        parser.error("--only serving needs --model saved_models/NAME[/VERSION]")
    args.runs = args.runs or (1 if args.quick else 3)
    args.serving_rounds = args.serving_rounds or (1 if args.quick else 3)
    if args.runs < 1 or args.serving_rounds < 1:
        parser.error("--runs and --serving-rounds must be >= 1")
    return args


def start_report(args: argparse.Namespace) -> Report:
    """The report of this run, after printing the machine and warning of a loaded one."""
    machine = machine_info()
    report = Report(Path(args.json), machine, "quick" if args.quick else "full")
    print(f"machine: {machine}", flush=True)
    if os.getloadavg()[0] > 0.5:
        print(f"note: load average {os.getloadavg()[0]:.2f}: timings will be disturbed", flush=True)
    return report


def finish(report: Report) -> int:
    """Print the table of every row and where the JSON is; the exit code."""
    print("\n" + report.table(), flush=True)
    print(f"\nwrote {report.path}", flush=True)
    return 0


@dataclasses.dataclass
class Training:
    """What every training row of one bench run shares."""

    report: Report
    splits: Splits
    data: str  # the training data, as the rows describe it
    runs: int  # timed epochs per training row
    peak: float  # the matmul row's GFLOP/s
    torch_python: str | None
    only: str | None


def training_rows(t: Training, cfgs: dict[str, Config], quick: bool) -> None:
    """The input pipeline, dataset and training rows of both configs, then the published row."""
    # Lemmatization is on by default (Config.lemmatize), folded into the one token -> id table
    # so a text is still split and looked up once. This row without it, beside "input pipeline
    # (a) Config() defaults", shows what lemmatization costs the input pipeline.
    plain_cfg = Config(**{**cfgs["a"].to_dict(), "lemmatize": False}).validate()
    plain_pre = adapt_preprocessor(plain_cfg, t.splits.train.texts)
    texts = t.splits.train.texts
    bench_pipeline(t.report, "(a) without lemmatization", plain_cfg, plain_pre, texts, t.data)

    full_tokens = None
    for label, cfg in cfgs.items():
        tokens = config_rows(t, label, cfg)
        if label == "b" and not quick:
            full_tokens = tokens
    published_row(t.report, t.peak, cfgs["b"], full_tokens)


def config_rows(t: Training, label: str, cfg: Config) -> int:
    """One config's pipeline, dataset and training rows (and its PyTorch peer for (b)).

    Returns the real tokens of its training rows, for the published row.
    """
    name = f"({label}) {'Config() defaults' if label == 'a' else 'seed model'}"
    start = time.perf_counter()
    pre = adapt_preprocessor(cfg, t.splits.train.texts)  # setup, not a measurement
    print(f"adapted preprocessor {name} in {time.perf_counter() - start:.1f}s", flush=True)
    rows, pipeline_rate = bench_pipeline(t.report, name, cfg, pre, t.splits.train.texts, t.data)
    bench_dataset(t.report, name, cfg, rows, t.splits.train.labels, t.data)
    train_rate, tokens_per_s = bench_training(
        t.report, name, cfg, pre, rows, t.splits, t.runs, t.peak, t.data
    )
    t.report.add(
        f"pipeline / training speed {name}",
        t.data,
        {"pipeline_row": "input pipeline", "training_row": "training"},
        None,
        {"ratio": round(pipeline_rate / train_rate, 2)},
        f"pipeline {pipeline_rate:,.0f} examples/s / training {train_rate:,.1f} examples/s "
        f"= {pipeline_rate / train_rate:,.1f}x",
        "ratio of the two rows above",
    )
    used = gradient_dtype(cfg.precision)
    rates = {used: tokens_per_s}
    if cpu_has_bfloat16():  # the other precision too, in the same run
        other = "float32" if used == "bfloat16" else "bfloat16"
        other_cfg = dataclasses.replace(cfg, precision=other)
        _, rates[other] = bench_training(
            t.report, f"{name} {other}", other_cfg, pre, rows, t.splits, t.runs, t.peak, t.data
        )
    if label == "b" and t.torch_python:
        modes = ("padded",) if t.only == "training" else ("packed", "padded")
        labels = t.splits.train.labels
        bench_torch_peer(
            t.report, t.torch_python, cfg, pre, rows, labels, t.runs, rates, t.data, modes
        )
    return sum(len(r) for r in rows)


def serving_rows(
    report: Report,
    args: argparse.Namespace,
    cfg: Config,
    splits: Splits,
    model_path: Path | None,
    train_data: str,
    serve_data: str,
) -> None:
    """Serving and evaluate rows of the given model, or of `ks.fit` of `cfg` for one epoch."""
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        if model_path:
            origin = f"given model {model_path}"
            network = trained_network(model_path)
        else:
            # What a user runs: ks.fit of model (a)'s config for one epoch, in a temp folder.
            # Serving speed depends on the architecture, not on how well it was trained.
            run = bench_fit(report, cfg, Path(tmp), train_data)
            model_path, origin = run.export_path, "ks.fit of the default Config, 1 epoch"
            pre, lstm, _ = split_text_model(run.model)  # the peer serves the LSTM alone
            network = (lstm, pre)
        peer = None
        if args.torch_python and network:
            peer = torch_serving_peer(args.torch_python, network, splits.test.texts)
        texts, rounds = splits.test.texts, args.serving_rounds
        bench_serving(report, model_path, texts, serve_data, origin, rounds, peer)
        bench_evaluate(report, model_path)


def main(argv: list[str] | None = None) -> int:
    """Run every measurement in order, printing each row, then the table."""
    args = parse_args(argv)
    try:
        model_path = resolve_version(args.model) if args.model else None  # fail before the work
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    report = start_report(args)
    peak = bench_matmul(report, MATMUL_N, 3 if args.quick else 5)

    cfgs = configs(args.quick)
    splits = load_splits(cfgs["a"])  # same dataset, seed and cuts for both configs
    n_train, n_test = len(splits.train), len(splits.test)
    serve_data = f"IMDB test, {n_test:,} reviews (max_test {cfgs['a'].max_test}, seed stratified)"
    if args.only == "serving":
        texts, rounds = splits.test.texts, args.serving_rounds
        peer = serving_peer(args.torch_python, model_path, texts)
        origin = f"given model {model_path}"
        bench_serving(report, model_path, texts, serve_data, origin, rounds, peer)
        bench_evaluate(report, model_path)
        return finish(report)
    slice_text = "all" if not args.quick else f"slice of {n_train:,}"
    train_data = f"IMDB train ({slice_text}: {n_train:,} reviews, seed {cfgs['a'].seed})"

    t = Training(report, splits, train_data, args.runs, peak, args.torch_python, args.only)
    training_rows(t, cfgs, args.quick)
    if args.only == "training":
        return finish(report)
    serving_rows(report, args, cfgs["a"], splits, model_path, train_data, serve_data)
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())

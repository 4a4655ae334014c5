"""Bench rows: the IMDB test reviews through `score` (Beam, local runner) on one worker and on
several worker processes, against the in-process predictor, in one run, on the same machine.

    python -m benchmarks.score_bench --model saved_models/NAME[/VERSION] [--rounds 3] [--workers 2]

Writes the test split (25,000 reviews) as JSONL with ids plus 10 malformed lines, then, in each
round and in fresh processes, times (1) `SavedModelPredictor`: loading the model and scoring every
good row, timed inside its process once TensorFlow has started (its whole process's wall time is
kept too), (2) `python -m keras_sentiment score MODEL reviews.jsonl OUT` as a user runs it (the
whole command, Python, TensorFlow and Beam start-up included), on Beam's FnApiRunner in that
process, and (3) the same command with `--direct_num_workers N --direct_running_mode
multi_processing` (N = --workers; 0 leaves it out). The order rotates between rounds; medians
are compared. Each command's CPU seconds (its worker processes included) are the work it did,
which other load on the machine leaves alone; over its wall seconds they say how many cores it
kept busy. It checks that every review comes out once with the predictor's label and
probabilities (`evaluate` scores the same texts with the same predictor) in each score run, and
that the 10 bad lines are in `errors`; it prints the ratios: predictor seconds over score
seconds (the issue bounds it: at least 0.7), one worker's seconds over N's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BAD_LINES = [
    "this line is not JSON",
    '{"id": "bad-1", "text": 42}',
    '{"id": "bad-2", "text": null}',
    '{"id": "bad-3", "review": "no text field"}',
    '["an", "array"]',
    '{"id": "bad-5", "text": ["a", "list"]}',
    '{"id": "bad-6", "text": "unterminated',
    '{"id": {"nested": 1}, "text": "an id that is an object"}',
    '"just a string"',
    '{"id": "bad-9", "text": {"an": "object"}}',
]


def cpu() -> str:
    """The CPU's model name, family and model from /proc/cpuinfo, and the cores."""
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return (
        f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model "
        f"{info.get('model', '?')}), {os.cpu_count()} cores"
    )


def write_reviews(path: Path, texts: list[bytes]) -> list[str]:
    """The reviews as JSONL with ids, a malformed line after every 2,500th; the ids in order."""
    ids = [f"test-{i:05d}" for i in range(len(texts))]
    with open(path, "w", encoding="utf-8") as f:
        for i, (key, text) in enumerate(zip(ids, texts)):
            f.write(json.dumps({"id": key, "text": text.decode("utf-8")}) + "\n")
            if i % 2500 == 0 and i // 2500 < len(BAD_LINES):
                f.write(BAD_LINES[i // 2500] + "\n")
    return ids


def read_outputs(out: Path) -> tuple[list[dict], list[dict]]:
    def lines(pattern: str) -> list[dict]:
        return [json.loads(x) for p in glob.glob(str(out / pattern)) for x in open(p)]

    return lines("predictions-*.jsonl"), lines("errors-*.jsonl")


def check(ids: list[str], reference: dict, labels: np.ndarray, out: Path) -> dict:
    """Every review once with the predictor's label and probabilities; the bad lines in errors."""
    rows, errors = read_outputs(out)
    got = {r["id"]: r for r in rows}
    index = {key: i for i, key in enumerate(ids)}
    order = [index[r["id"]] for r in rows if r["id"] in index]
    names = list(reference["classes"])
    assert len(reference["label"]) == len(ids), "the predictor scored other rows"
    probabilities = np.array([[got[ids[i]]["probabilities"][c] for c in names] for i in order])
    return {
        "rows_out": len(rows),
        "distinct_ids": len(got),
        "all_ids_once": len(rows) == len(got) == len(ids) and set(got) == set(ids),
        "labels_equal": all(got[ids[i]]["label"] == reference["label"][i] for i in order),
        "max_abs_probability_diff": float(
            np.abs(probabilities - reference["probabilities"][order]).max()
        ),
        "accuracy": float(np.mean([got[ids[i]]["label_id"] == labels[i] for i in order])),
        "errors": len(errors),
        "error_reasons": sorted({e["reason"].split(" (")[0] for e in errors}),
    }


def predictor_run(model: str, data: Path, ref: Path) -> None:
    """In a fresh process, after TensorFlow starts: load the model and score every text of the
    JSONL (its good rows), timed; the outputs to `ref` (.npz), the seconds on stdout."""
    from keras_sentiment.startup import start_tensorflow

    start_tensorflow(serving=True)  # as `evaluate` and `score` do
    from keras_sentiment.serving.prediction import SavedModelPredictor

    texts = []
    for line in open(data, encoding="utf-8"):
        try:
            record = json.loads(line)
            if isinstance(record.get("text"), str) and not isinstance(record.get("id"), dict):
                texts.append(record["text"].encode("utf-8"))
        except (ValueError, AttributeError):
            continue
    start = time.perf_counter()
    predictor = SavedModelPredictor(model)
    loaded = time.perf_counter()
    out = predictor(texts)
    done = time.perf_counter()
    labels, classes = out["label"].astype(str), out["classes"][0].astype(str)
    np.savez(ref, probabilities=out["probabilities"], label=labels, classes=classes)
    print(json.dumps({"load": loaded - start, "score": done - loaded, "seconds": done - start}))


def timed(argv: list[str]) -> tuple[float, float, str]:
    """A subprocess's wall seconds (start-up included), its CPU seconds (its own processes
    included: the getrusage of waited-for descendants) and the last line it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        sys.exit(f"{argv[:3]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, cpu, done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="saved_models/NAME[/VERSION]")
    parser.add_argument("--max-test", type=int, default=0, help="first N reviews (0: all)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (0: skip)")
    parser.add_argument("--json", default="", help="also write the row to this file")
    parser.add_argument("--predictor-run", nargs=2, metavar=("DATA", "REF"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.predictor_run:
        return predictor_run(args.model, *map(Path, args.predictor_run))

    from keras_sentiment.data.sources import read_tfds

    test, _ = read_tfds("imdb_reviews", "test")
    n = args.max_test or len(test)
    texts, labels = list(test.texts[:n]), test.labels[:n]
    work = Path(tempfile.mkdtemp(prefix="score_bench_"))
    data = work / "reviews.jsonl"
    ids = write_reviews(data, texts)
    bench = ["-m", "benchmarks.score_bench", "--model", args.model, "--predictor-run"]
    many = [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
    names = ["predictor", "score", "score_workers"] if args.workers > 1 else ["predictor", "score"]
    rounds = []
    for r in range(args.rounds):  # fresh processes, cold caches; the order rotates
        score = ["-m", "keras_sentiment", "score", args.model, str(data)]
        argvs = {
            "predictor": [*bench, str(data), str(work / "ref.npz")],
            "score": [*score, str(work / f"one{r}")],
            "score_workers": [*score, str(work / f"many{r}"), *many],
        }
        order = names[r % len(names) :] + names[: r % len(names)]
        found = {name: timed(argvs[name]) for name in order}
        inner = json.loads(found["predictor"][2])
        row = {"predictor_seconds": round(inner["seconds"], 1),
               "predictor_process_seconds": round(found["predictor"][0], 1)}  # fmt: skip
        for name in names:
            seconds, busy, _ = found[name]
            if name != "predictor":
                row[f"{name}_seconds"] = round(seconds, 1)
            row[f"{name}_cpu_seconds"] = round(busy, 1)  # the work done, whatever else runs
            row[f"{name}_cores_busy"] = round(busy / seconds, 2)
        rounds.append(row)
        said = "; ".join(f"{name} said: {found[name][2]}" for name in names[1:])
        print(f"round {r + 1}: {row}; {said}", flush=True)
    ref = np.load(work / "ref.npz")
    reference = {k: ref[k] for k in ("probabilities", "label", "classes")}
    median = {k: round(float(np.median([x[k] for x in rounds])), 2) for k in rounds[0]}
    last = args.rounds - 1
    row = {
        "row": "score (Beam RunInference, local runner: one worker and worker processes) vs "
        "in-process SavedModelPredictor",
        "model": args.model,
        "reviews": n,
        "bad_lines": len(BAD_LINES),
        "workers": args.workers,
        "rounds": rounds,
        **{f"median_{k}": v for k, v in median.items()},
        "ratio": round(median["predictor_seconds"] / median["score_seconds"], 3),
        "ratio_process_to_process": round(
            median["predictor_process_seconds"] / median["score_seconds"], 3
        ),
        "check_one_worker": check(ids, reference, labels, work / f"one{last}"),
    }
    if args.workers > 1:
        row["speedup_workers"] = round(median["score_seconds"] / median["score_workers_seconds"], 3)
        row["check_workers"] = check(ids, reference, labels, work / f"many{last}")
    row.update(cpu=cpu(), load_average_1min=os.getloadavg()[0])
    print(json.dumps(row, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()

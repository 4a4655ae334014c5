"""The default `fit` on a user-sized data set: MR's standard 10-fold cross-validation.

MR (Pang & Lee 2005, the movie-review sentence polarity set: 10,662 one-sentence reviews) with
its `fold` column: for each fold, `fit` trains on the other nine (its own seeded 10% of them
held out for validation) and reports once on the fold. Prints each fold's accuracy, each part's
accuracy alone (from the fit's own "test accuracy of each part" line), the stack's
coefficients and the fold's wall time, then the mean, spread and the worst gap between the
final model and its better part:

    python -m benchmarks.mr_folds ../shared/datasets/mr/mr.csv [--folds 0 1 ...] [--set key=value]

`--set` passes settings to every fit (`--set char_ngrams=0`), as `fit --key value` would.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from benchmarks.bench import machine_info
from keras_sentiment.config import coerce


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="mr.csv: text, label, fold")
    parser.add_argument("--folds", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--set", action="append", default=[], help="key=value for every fit")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import pandas as pd

    import keras_sentiment as ks

    settings = dict(item.split("=", 1) for item in args.set)
    settings = {key: coerce(key, value) for key, value in settings.items()}
    frame = pd.read_csv(args.csv)
    rows = []
    for fold in args.folds:
        work = tempfile.mkdtemp(prefix=f"mr{fold}_")
        cfg = ks.Config(name=f"mr_fold{fold}", runs_dir=work, output_dir=work, **settings)
        start = time.perf_counter()
        train, test = frame[frame.fold != fold], frame[frame.fold == fold]
        run = ks.fit(cfg, data=train[["text", "label"]], test_data=test[["text", "label"]])
        mix = run.summary.mix
        parts = {k: v for k, v in (mix.test_accuracy if mix else {}).items() if k != "mixed"}
        rows.append(
            {
                "fold": fold,
                "accuracy": run.report["accuracy"],
                "parts": parts,
                "coefficients": mix.coefficients if mix else {},
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print("FOLD", json.dumps(rows[-1]), flush=True)
    accuracy = np.array([r["accuracy"] for r in rows])
    gaps = [max(r["parts"].values(), default=r["accuracy"]) - r["accuracy"] for r in rows]
    seconds = [r["seconds"] for r in rows]
    result = {
        "machine": machine_info(),
        "settings": settings,
        "folds": rows,
        "mean": float(accuracy.mean()),
        "min": float(accuracy.min()),
        "max": float(accuracy.max()),
        "std": float(accuracy.std()),
        "worst_gap_below_best_part": float(max(gaps)),
        "seconds_median": float(np.median(seconds)),
        "seconds_max": float(max(seconds)),
    }
    info = result["machine"]
    print(
        f"\nMR, {len(rows)} folds, default fit{' with ' + str(settings) if settings else ''} on "
        f"{info['cpu']} ({info['cpu_family_model']}, {info['cores']} cores): mean "
        f"{result['mean']:.4f} (folds {result['min']:.4f}-{result['max']:.4f}, std "
        f"{result['std']:.4f}); final model at most {result['worst_gap_below_best_part']:+.4f} "
        f"below its best part; {result['seconds_median']:.0f} s a fold (median; max "
        f"{result['seconds_max']:.0f})"
    )
    for key in sorted({k for r in rows for k in r["parts"]}):
        values = [r["parts"][key] for r in rows if key in r["parts"]]
        print(f"  {key} alone: mean {np.mean(values):.4f} over {len(values)} folds")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

"""The linear peer of issue 14: NB-LR on word n-grams, alone and averaged with our LSTMs.

NB-LR is Wang & Manning's (2012) NBSVM idea with a logistic regression: binary word 1-3-gram
features scaled by their naive-Bayes log-count ratios. For each exported model given, it is
trained on exactly that model's training part (the same seeded validation hold-out), its C is
picked on the validation split, and so is the weight of the average
`w * LSTM + (1 - w) * NB-LR`. The test split is read once per model, for the report:

    python -m benchmarks.ngram_peer saved_models/NAME/VERSION [...]  # one per seed

The models must be LSTM-only (`fit --ngrams 0`, or fitted before the n-gram branch became
part of `fit` on 2026-11-28): the package's own branch is this peer's idea on token ids.

Prints one line per model and the mean and range over the models, and writes a JSON file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy.sparse import diags
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from benchmarks.bench import machine_info
from keras_sentiment.config import UserError
from keras_sentiment.data.splits import load_splits
from keras_sentiment.serving.prediction import SavedModelPredictor

C_GRID = (0.03, 0.1, 0.3, 1.0)
WEIGHTS = np.round(np.arange(0, 1.01, 0.1), 1)


def texts(raw: np.ndarray) -> list[str]:
    """Raw review bytes as text, HTML tags dropped, lower case."""
    return [re.sub(r"<[^>]*>", " ", bytes(t).decode("utf-8", "replace").lower()) for t in raw]


def measure(path: str) -> dict:
    """Test accuracy of the LSTM, NB-LR and their averages, for one exported model."""
    start = time.perf_counter()
    predictor = SavedModelPredictor(path)
    # The export's own config gives the same data, seed and validation hold-out as its fit.
    if not predictor.metadata.config:
        raise UserError(f"{predictor.path}: no assets.extra/metadata.json with the fit's config")
    if predictor.metadata.ngrams or predictor.metadata.mix:
        raise UserError(
            f"{predictor.path}: this model already mixes in its own n-gram branch; "
            "give one trained with `fit --ngrams 0 --char-ngrams 0`"
        )
    cfg = predictor.metadata.settings()
    splits = load_splits(cfg)
    vectorizer = CountVectorizer(
        ngram_range=(1, 3), binary=True, token_pattern=r"[a-z0-9']+|[!?]", min_df=2
    )
    train = vectorizer.fit_transform(texts(splits.train.texts))
    labels = splits.train.labels
    positive, negative = 1 + train[labels == 1].sum(0), 1 + train[labels == 0].sum(0)
    log_ratio = np.log(positive / positive.sum() / (negative / negative.sum()))
    ratio = diags(np.asarray(log_ratio).ravel())
    val, test = (vectorizer.transform(texts(s.texts)) @ ratio for s in (splits.val, splits.test))
    scaled = train @ ratio
    fits = [
        LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=3000).fit(scaled, labels)
        for c in C_GRID
    ]
    nblr = max(fits, key=lambda m: np.mean(m.predict(val) == splits.val.labels))
    lstm_val = predictor(list(splits.val.texts))["probabilities"]
    lstm_test = predictor(list(splits.test.texts))["probabilities"]
    nblr_val, nblr_test = nblr.predict_proba(val), nblr.predict_proba(test)

    def accuracy(probs: np.ndarray, split) -> float:
        return float(np.mean(probs.argmax(1) == split.labels))

    scores = [accuracy(w * lstm_val + (1 - w) * nblr_val, splits.val) for w in WEIGHTS]
    w = float(WEIGHTS[int(np.argmax(scores))])
    return {
        "model": str(predictor.path),
        "seed": cfg.seed,
        "train": len(labels),
        "validation": len(splits.val),
        "test": len(splits.test),
        "ngrams": train.shape[1],
        "C": nblr.C,
        "weight": w,
        "lstm": accuracy(lstm_test, splits.test),
        "nblr": accuracy(nblr_test, splits.test),
        "average": accuracy((lstm_test + nblr_test) / 2, splits.test),
        "weighted": accuracy(w * lstm_test + (1 - w) * nblr_test, splits.test),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every model given, then print the mean and range of each column."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ngram_peer", description=__doc__)
    parser.add_argument("models", nargs="+", help="exported version folders, one per seed")
    parser.add_argument("--json", default="bench_results/ngram_peer.json", help="results file")
    args = parser.parse_args(argv)
    print(f"machine: {machine_info()}", flush=True)
    rows = []
    for path in args.models:
        try:
            rows.append(measure(path))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for key in ("lstm", "nblr", "average", "weighted"):
        values = [row[key] for row in rows]
        summary[key] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}
        print(f"{key:>8}: mean {np.mean(values):.4f}, range {min(values):.4f}-{max(values):.4f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(), "rows": rows, "summary": summary}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

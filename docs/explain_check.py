"""The `explain` signature with TensorFlow alone: completeness, the words it points at, its cost.

    python docs/explain_check.py saved_models/NAME/VERSION [TFDS_DATA_DIR] [--json]

keras_sentiment and NLTK are made unimportable first: the SavedModel alone must answer. It
reads the first 20 IMDB test reviews straight from TFDS' TFRecord files (no tensorflow_datasets
either) under the folder given, else `TFDS_DATA_DIR`, else TFDS' own default
`~/tensorflow_datasets` (where `fit` had TFDS download IMDB online), explains each through the
`explain` signature, and prints for each the completeness error (|sum of attributions -
(score - baseline_score)| against max(5% of the gap, 0.02)), then the top words of two
sentences, then the p50 of explaining one review and of predicting it (`serving_default`), in
one process, alternating, and their ratio.
"""

import glob
import json
import os
import sys
import time

sys.modules["keras_sentiment"] = None  # importing either now raises ImportError
sys.modules["nltk"] = None

USAGE = "saved_models/NAME/VERSION [TFDS_DATA_DIR] [--json]"


def imdb_test_files(data_dir: str) -> list[str]:
    """TFDS' imdb_reviews test files under `data_dir` (its newest prepared version), or []."""
    base = os.path.join(data_dir, "imdb_reviews", "plain_text")
    found = sorted(glob.glob(os.path.join(base, "*", "*-test.tfrecord*")))
    newest = max((os.path.dirname(f) for f in found), key=_version, default="")
    return [f for f in found if os.path.dirname(f) == newest]


def _version(folder: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in os.path.basename(folder).split("."))


def arguments() -> tuple[str, str]:
    """(the version folder, the TFDS data folder), or one line and exit: before TensorFlow
    starts, so nothing of its start-up buries the line."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args or not os.path.isfile(os.path.join(args[0], "saved_model.pb")):
        where = f"{args[0]}: no saved_model.pb; " if args else ""
        sys.exit(f"explain_check: {where}usage: python docs/explain_check.py {USAGE}")
    default = os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    data_dir = args[1] if len(args) > 1 else default
    if not imdb_test_files(data_dir):
        sys.exit(
            f"explain_check: no IMDB test files under {data_dir}/imdb_reviews/plain_text: "
            "python -m keras_sentiment fit has TFDS download them there; or give the folder "
            "that holds them (or set TFDS_DATA_DIR)"
        )
    return args[0], data_dir


if __name__ == "__main__":
    ARGUMENTS = arguments()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SENTENCES = [
    "The acting was wonderful and the story moving.",
    "A dull, boring waste of time.",
]


def first_test_reviews(data_dir: str, n: int = 20) -> list[bytes]:
    """The first n reviews of TFDS' imdb_reviews test split, in TFDS' order."""
    files = imdb_test_files(data_dir)
    features = {"text": tf.io.FixedLenFeature([], tf.string)}
    records = tf.data.TFRecordDataset(files).take(n)
    return [tf.io.parse_single_example(r, features)["text"].numpy() for r in records]


def top_words(out: dict, i: int = 0, k: int = 3) -> list[tuple[str, float]]:
    tokens = [t.decode() for t in out["tokens"][i].numpy()]
    values = out["attributions"][i].numpy()
    order = np.argsort(-values)[:k]
    return [(tokens[j], round(float(values[j]), 3)) for j in order if tokens[j]]


def p50(fn, texts: list[bytes]) -> float:
    seconds = []
    for text in texts:
        start = time.perf_counter()
        fn(text=tf.constant([text]))["label_id"].numpy()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main() -> None:
    version, data_dir = ARGUMENTS
    loaded = tf.saved_model.load(version)
    explain, predict = loaded.signatures["explain"], loaded.signatures["serving_default"]
    reviews = first_test_reviews(data_dir)
    worst, rows = 0.0, []
    for review in reviews:
        out = explain(text=tf.constant([review]))
        gap = float(out["score"][0] - out["baseline_score"][0])
        error = abs(float(tf.reduce_sum(out["attributions"][0])) - gap)
        worst = max(worst, error / max(0.05 * abs(gap), 0.02))
        rows.append({"gap": round(gap, 4), "error": round(error, 5)})
    sentences = {}
    for sentence in SENTENCES:
        out = explain(text=tf.constant([sentence]))
        sentences[sentence] = {"label": out["label"][0].numpy().decode(), "top": top_words(out)}
    p50(explain, reviews[:3]) + p50(predict, reviews[:3])  # warm-up: the first calls
    explain_p50, predict_p50 = [], []
    for _ in range(3):  # alternating rounds, so both see the same machine
        explain_p50.append(p50(explain, reviews))
        predict_p50.append(p50(predict, reviews))
    ratio = float(np.median(explain_p50)) / float(np.median(predict_p50))
    result = {
        "completeness_worst_error_over_bound": round(worst, 3),
        "reviews": rows,
        "sentences": sentences,
        "explain_p50_ms": round(1e3 * float(np.median(explain_p50)), 2),
        "predict_p50_ms": round(1e3 * float(np.median(predict_p50)), 2),
        "ratio": round(ratio, 2),
        "keras_sentiment_importable": False,
    }
    if "--json" in sys.argv:
        print(json.dumps(result))
        return
    print(f"completeness on {len(reviews)} test reviews: worst error / bound = {worst:.3f}")
    for sentence, said in sentences.items():
        print(f"{sentence!r}: {said['label']}, top words {said['top']}")
    print(
        f"p50 explain {result['explain_p50_ms']} ms, predict {result['predict_p50_ms']} ms: "
        f"{ratio:.1f}x"
    )


if __name__ == "__main__":
    main()

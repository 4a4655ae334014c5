"""Evaluation: the scikit-learn report (per class, macro, weighted), the confusion matrix, and
the errors the model was surest of."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from keras_sentiment.data.batching import eval_dataset
from keras_sentiment.network.mix import Mix, as_probabilities, log_odds
from keras_sentiment.reporting.model_card import shorten


def predict_rows(model: keras.Model, rows: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Class probabilities of token-id rows, in the rows' own order."""
    ds, order = eval_dataset(rows, None, batch_size)
    probs = np.zeros((len(rows), model.output_shape[-1]), np.float32)
    probs[order] = model.predict(ds, verbose=0)
    return probs


def mix_rows(
    mix: Mix,
    words: list[np.ndarray] | None,
    rows: list[np.ndarray],
    probabilities: np.ndarray,
    others: list | None = None,
    batch_size: int = 512,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The mix's probabilities of rows, from the LSTM's, and each part's log-odds alone.

    Args:
        mix: the mix.
        words: the words as read, aligned with `rows` (None: the mix reads ids only).
        rows: the texts' token ids, unpadded.
        probabilities: the LSTM's probabilities of the rows.
        others: members outside the mix to score alone too (those the stack dropped).
        batch_size: texts per batch of the members' scoring.

    Returns:
        The mixed probabilities [n, 2], and the log-odds of the second class [n] by part
        ("lstm" and each member's kind).
    """
    parts = {"lstm": log_odds(tf.constant(probabilities, tf.float32)).numpy()}
    members = list(mix.members) + [m for m in others or [] if m not in mix.members]
    logits = {member.kind: np.zeros(len(rows), np.float32) for member in members}
    order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths pad little
    for start in range(0, len(rows), batch_size):
        index = order[start : start + batch_size]
        width = max(1, *(len(rows[i]) for i in index))
        ids = np.zeros((len(index), width), np.int32)
        read = np.full((len(index), width), b"", dtype=object)
        for j, i in enumerate(index):
            ids[j, : len(rows[i])] = rows[i]
            if words is not None:
                read[j, : len(words[i])] = words[i]
        read, ids = tf.constant(read, tf.string), tf.constant(ids)
        for member in members:
            logits[member.kind][index] = member.logits(read, ids).numpy()
    parts.update(logits)
    lstm = tf.constant(parts["lstm"]) if mix.lstm_coefficient else None
    score = mix.combine(lstm, [tf.constant(logits[m.kind]) for m in mix.members])
    mixed = as_probabilities(tf.zeros([len(rows)]) + score).numpy()
    return mixed, parts


def report(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix."""
    predicted = probs.argmax(axis=1)
    ids = list(range(len(class_names)))
    table = classification_report(
        labels, predicted, labels=ids, target_names=class_names, output_dict=True, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=ids, average="macro", zero_division=0)
        ),
        "per_class": {name: table[name] for name in class_names},
        "macro_avg": table["macro avg"],
        "weighted_avg": table["weighted avg"],
        "confusion_matrix": confusion_matrix(labels, predicted, labels=ids).tolist(),
        "class_names": list(class_names),
        "support": int(len(labels)),
    }


def format_report(result: dict) -> str:
    """The report as the familiar text table, plus accuracy and the confusion matrix."""
    names = result["class_names"]
    width = max(12, *(len(n) for n in names))
    lines = [f"{'':>{width}} precision    recall  f1-score   support", ""]
    rows = [(n, result["per_class"][n]) for n in names]
    rows += [("macro avg", result["macro_avg"]), ("weighted avg", result["weighted_avg"])]
    for i, (name, row) in enumerate(rows):
        if i == len(names):
            lines.append("")
        lines.append(
            f"{name:>{width}} {row['precision']:>9.4f} {row['recall']:>9.4f} "
            f"{row['f1-score']:>9.4f} {int(row['support']):>9d}"
        )
    lines += ["", f"{'accuracy':>{width}} {result['accuracy']:.4f} on {result['support']} texts"]
    if "seconds" in result:
        rate = result["support"] / max(result["seconds"], 1e-9)
        lines[-1] += f", scored in {result['seconds']:.1f}s ({rate:,.0f} texts/s)"
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * (width + 1) + " ".join(f"{n:>10}" for n in names))
    for name, row in zip(names, result["confusion_matrix"]):
        lines.append(f"{name:>{width}} " + " ".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)


def most_confident_errors(
    texts: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    k: int = 5,
    width: int = 300,
) -> list[dict]:
    """The k misclassified texts the model was surest of, most confident first, shortened."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs)
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    # Stable sort: equally confident errors keep their order in the data.
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:k]
    return [
        {
            "text": shorten(texts[i], width),
            "true": class_names[labels[i]],
            "predicted": class_names[predicted[i]],
            "confidence": float(confidence[i]),
        }
        for i in order
    ]

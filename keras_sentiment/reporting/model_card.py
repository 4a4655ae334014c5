"""The run's summary and model card: what a version is, what it learned from, how it scores,
where it fails.

`run_summary` gathers everything a finished run is known by (summary.json, the version's
metadata.json); `model_card` writes MODEL_CARD.md from it.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from keras_sentiment.reporting.explanation_page import card_explained, card_ngrams

if TYPE_CHECKING:  # types only: the card is read and written without TensorFlow
    from keras_sentiment.config import Config
    from keras_sentiment.data.splits import Splits
    from keras_sentiment.training.train import Trained


def on_off(flag: bool) -> str:
    return "on" if flag else "off"


def duration(seconds: float) -> str:
    """Seconds as a short human duration: 42.0s, 9m 30s, 2h 05m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


METRIC_KEYS = ("accuracy", "macro_f1")  # the headline numbers of a run


def run_summary(cfg: Config, splits: Splits, trained: Trained, result: dict, facts: dict) -> dict:
    """Everything a run is known by: summary.json, the version's metadata, the model card.

    Args:
        cfg: the run's config (its name resolved).
        splits: the data it learned from and was tested on.
        trained: the training's model, history, best epoch and precision.
        result: the test report.
        facts: `embeddings`, `pretraining`, `ngrams` (what each did), `vocabulary_size`,
            `run_dir`, `resumed`, `tokens_per_epoch`, `errors` (the most confident ones) and
            `reviews_to_explain` (`reviews_to_explain`'s three test reviews).
    """
    history, names = trained.history, splits.class_names
    return {
        "name": cfg.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": facts["run_dir"],
        "class_names": names,
        "vocabulary_size": facts["vocabulary_size"],
        "sequence_length": cfg.sequence_length,
        "dataset": {
            "source": splits.source,
            "train": len(splits.train),
            "validation": len(splits.val),
            "test": len(splits.test),
        },
        "embeddings": facts["embeddings"],
        "pretraining": facts["pretraining"],
        "ngrams": facts["ngrams"],
        "parameters": trained.model.count_params(),
        "training": {
            "epochs_run": len(history),
            "best_epoch": trained.best_epoch,
            "history": history,
            "epoch_seconds": [row["seconds"] for row in history],
            "tokens_per_epoch": facts["tokens_per_epoch"],
            "precision": trained.precision,
            "resumed": facts["resumed"],
        },
        "metrics": {k: result[k] for k in METRIC_KEYS},
        "test_report": result,
        "most_confident_errors": facts["errors"],
        "reviews_to_explain": facts.get("reviews_to_explain", []),
        "config": cfg.to_dict(),
        "versions": library_versions(),
    }


def library_versions() -> dict[str, str]:
    """Versions of what produced the model, for reproducing it."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ["keras-sentiment", "tensorflow", "keras", "nltk", "scikit-learn", "numpy"]:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


# --- model card --------------------------------------------------------------------------


def model_card(summary: dict, errors: list[dict]) -> str:
    """The Markdown text of MODEL_CARD.md for one trained (and possibly exported) model."""
    sections = [
        _card_title(summary),
        _card_data(summary),
        _card_preprocessing(summary),
        _card_architecture(summary),
        _card_training(summary),
        _card_metrics(summary),
        _card_errors(errors),
        card_ngrams(summary),
        card_explained(summary),
        _card_limits(summary),
        _card_versions(summary),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def _card_title(summary: dict) -> str:
    name = summary.get("name", "model")
    version = summary.get("version")
    title = f"# Model card: {name}" + (f" (version {version})" if version is not None else "")
    names = summary.get("class_names") or summary.get("test_report", {}).get("class_names", [])
    classes = ", ".join(f"`{n}`" for n in names) or "unknown classes"
    lines = [title, "", f"An LSTM text classifier that labels texts as one of: {classes}."]
    lines.append(f"It learned from {describe_data(summary)}.")
    if summary.get("created"):
        lines.append(f"Trained {summary['created']}.")
    return "\n".join(lines)


def describe_data(summary: dict) -> str:
    """The data a model learned from, in words: "the IMDB movie reviews (...)", "the file ..."."""
    source = summary.get("dataset", {}).get("source") or summary.get("config", {}).get("dataset")
    source = str(source or "unknown data")
    train = summary.get("dataset", {}).get("train")
    size = f"{train:,} training texts" if isinstance(train, int) else ""
    if source.startswith("tfds:imdb_reviews"):
        return f"the IMDB movie reviews (Maas et al. 2011, TFDS `imdb_reviews`; {size})"
    kind, _, where = source.partition(":")
    what = {"tfds": "the TFDS data set", "file": "the file", "folder": "the folder"}
    if kind == "memory":
        return f"texts given in memory ({size or where.strip()})"
    where = where.split(" (")[0] or source
    return f"{what.get(kind, 'the data')} `{where}`" + (f" ({size})" if size else "")


def _card_data(summary: dict) -> str:
    data = summary.get("dataset", {})
    cfg = summary.get("config", {})
    lines = ["## Data", "", f"- Source: `{data.get('source', cfg.get('dataset', 'unknown'))}`"]
    for key, what in [("train", "training"), ("validation", "validation"), ("test", "test")]:
        if key in data:
            lines.append(f"- {what.capitalize()} texts: {data[key]:,}")
    if cfg.get("max_train"):
        lines.append(f"- Training texts capped at {cfg['max_train']:,} (`max_train`)")
    pre = summary.get("pretraining") or {}
    if pre:
        lines.append(
            f"- Unlabeled texts: {pre['unlabeled_texts']:,}, read with the training and "
            f"validation texts (labels unread, {pre['texts']:,} in all, {pre['tokens']:,} "
            f"tokens) by language models for {pre['epochs']} epoch(s) before fine-tuning "
            "(Dai & Le 2015); the vocabulary comes from the same texts"
        )
    else:
        lines.append("- Unlabeled texts: none (supervised only)")
    return "\n".join(lines)


def _card_preprocessing(summary: dict) -> str:
    cfg = summary.get("config", {})
    emb = summary.get("embeddings", {})
    length = summary.get("sequence_length", cfg.get("sequence_length"))
    lines = ["## Preprocessing", ""]
    if "lemmatize" in cfg:
        lines.append(f"- Lemmatization (NLTK WordNet): {on_off(cfg['lemmatize'])}")
    if "remove_stopwords" in cfg:
        lines.append(f"- Stopword removal (negations kept): {on_off(cfg['remove_stopwords'])}")
    if "vocabulary_size" in summary:
        lines.append(
            f"- Vocabulary: {summary['vocabulary_size']:,} tokens (incl. padding and unknown)"
        )
    if length:
        lines.append(f"- Sequence length: {length:,} tokens; {_truncation(cfg.get('truncate'))}")
    source = emb.get("source", cfg.get("embeddings"))
    if source == "none":
        lines.append(f"- Embeddings: learned from scratch, {emb.get('dim', '?')} dimensions")
    elif source:
        coverage = emb.get("coverage")
        found = (
            f" ({emb['found']:,} of {emb['vocabulary']:,} words)"
            if "found" in emb and "vocabulary" in emb
            else ""
        )
        covers = (
            f", covering {coverage:.1%} of the vocabulary{found}" if coverage is not None else ""
        )
        lines.append(f"- Embeddings: GloVe `{source}`, {emb.get('dim', '?')} dimensions{covers}")
        if "train_embeddings" in cfg:
            lines.append(f"- Embeddings fine-tuned: {_yes_no(cfg['train_embeddings'])}")
    return "\n".join(lines)


def _card_architecture(summary: dict) -> str:
    cfg = summary.get("config", {})
    emb = summary.get("embeddings", {})
    vocab = _count(summary.get("vocabulary_size", cfg.get("vocab_size")))
    dim = emb.get("dim", cfg.get("embedding_dim", "?"))
    layers = cfg.get("lstm_layers", "?")
    dropout = cfg.get("dropout")
    pooling = {"max": "max over time", "mean": "mean over time", "last": "last state"}
    chain = [
        f"Embedding ({vocab} x {dim}, padding masked)",
        f"SpatialDropout1D ({dropout / 2:g})" if dropout else "",
        f"{'Bidirectional LSTM' if cfg.get('bidirectional') else 'LSTM'} x {layers} "
        f"layer{'' if layers == 1 else 's'} of {cfg.get('lstm_units', '?')} units",
        f"pooling: {pooling.get(cfg.get('pooling'), '?')}",
        f"Dropout ({dropout:g})" if dropout else "",
        f"Dense ({len(summary.get('class_names', [])) or '?'}, softmax)",
    ]
    lines = ["## Architecture", "", " -> ".join(c for c in chain if c)]
    if "parameters" in summary:
        lines += ["", f"Parameters: {_count(summary['parameters'])}"]
    ngrams = summary.get("ngrams") or {}
    if ngrams:
        w = ngrams["lstm_weight"]
        lines += [
            "",
            f"Mixed with an n-gram branch: NB-LR (Wang & Manning 2012) on the token ids' "
            f"1-{ngrams['order']}-grams ({_count(ngrams['ngrams'])} seen in 2+ training texts, "
            f"C={ngrams['C']}). Probabilities: {w:g} x LSTM + {1 - w:g} x NB-LR, the weight "
            "picked on the validation split.",
        ]
        if w == 0:
            lines.append(
                "Validation gave the LSTM weight 0: this model answers with the n-gram branch "
                "alone (a model trained on little data often does)."
            )
        parts = ngrams.get("test_accuracy")
        if parts:
            lines.append(
                f"Test accuracy of the parts alone: LSTM {parts['lstm']:.4f}, "
                f"NB-LR {parts['ngrams']:.4f}."
            )
    return "\n".join(lines)


def _card_training(summary: dict) -> str:
    train = summary.get("training", {})
    cfg = summary.get("config", {})
    lines = ["## Training", ""]
    if "epochs_run" in train:
        limit = f" of at most {cfg['epochs']}" if "epochs" in cfg else ""
        lines.append(f"- Epochs run: {train['epochs_run']}{limit} (early stopping on validation)")
    if train.get("best_epoch"):
        lines.append(
            f"- Best epoch (by {cfg.get('monitor', 'val_accuracy')}, weights kept): "
            f"{train['best_epoch']}"
        )
    settings = [
        f"{label} {cfg[key]}"
        for key, label in [("batch_size", "batch"), ("learning_rate", "Adam lr")]
        if key in cfg
    ]
    if settings:
        lines.append(f"- Optimizer: {', '.join(settings)}")
    if train.get("precision"):
        lines.append(f"- Precision: {train['precision']} (the exported weights are float32)")
    if cfg.get("adversarial"):
        lines.append(
            f"- Adversarial training: each text's embeddings also pushed the worst way, "
            f"L2 norm {cfg['adversarial']:g} (Miyato et al. 2017)"
        )
    if cfg.get("weight_average"):
        lines.append(
            f"- Weight averaging: a moving average of the weights (momentum "
            f"{cfg['weight_average']:g}) replaced them at the end of every epoch"
        )
    if train.get("epoch_seconds"):
        seconds = train["epoch_seconds"]
        lines.append(
            f"- Training time: {duration(sum(seconds))} over {len(seconds)} epochs "
            f"({duration(sum(seconds) / len(seconds))} per epoch)"
        )
    if "wall_seconds" in train:
        lines.append(f"- Wall time of the whole run: {duration(train['wall_seconds'])}")
    if train.get("resumed"):
        lines.append("- Resumed from an interrupted run; times cover the last session only")
    return "\n".join(lines)


def _card_metrics(summary: dict) -> str:
    result = summary.get("test_report", {})
    metrics = {**summary.get("metrics", {}), **{k: result[k] for k in result if k in METRIC_KEYS}}
    if not metrics and not result:
        return ""
    lines = ["## Test metrics", ""]
    if "support" in result:
        lines.append(f"On {result['support']:,} test texts, touched once after training.")
        lines.append("")
    if "accuracy" in metrics:
        lines.append(f"- Accuracy: **{metrics['accuracy']:.4f}**")
    if "macro_f1" in metrics:
        lines.append(f"- Macro F1: **{metrics['macro_f1']:.4f}**")
    per_class = result.get("per_class", {})
    if per_class:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for name, row in per_class.items():
            lines.append(
                f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} "
                f"| {row['f1-score']:.4f} | {int(row['support']):,} |"
            )
    matrix, names = result.get("confusion_matrix"), result.get("class_names")
    if matrix and names:
        lines += ["", "Confusion matrix (rows: true, columns: predicted):", ""]
        lines += ["| true \\ predicted | " + " | ".join(names) + " |"]
        lines += ["|---|" + "---:|" * len(names)]
        for name, row in zip(names, matrix):
            lines.append(f"| {name} | " + " | ".join(f"{v:,}" for v in row) + " |")
    return "\n".join(lines)


def _card_errors(errors: list[dict]) -> str:
    if not errors:
        return ""
    lines = ["## Most confident errors", ""]
    lines.append("Test texts the model got wrong while most sure of itself (shortened):")
    for e in errors:
        lines += [
            "",
            f"- true **{e['true']}**, predicted **{e['predicted']}** "
            f"with probability {e['confidence']:.3f}:",
            "",
            # Escape "<" so a stray HTML tag in a review shows as text, not markup.
            f"  > {e['text'].replace('<', '&lt;')}",
        ]
    return "\n".join(lines)


def reviews_to_explain(texts, labels, probs, class_names: list[str]) -> list[dict]:
    """Three test reviews for the card's explanations: the one the model got right most
    confidently, the one it got wrong most confidently, and the one it was least sure of.

    Returns:
        Up to three `{"kind", "text", "true"}` (fewer when a kind has no review).
    """
    import numpy as np

    labels, probs = np.asarray(labels).astype(int), np.asarray(probs)
    if not len(labels):
        return []
    predicted, confidence = probs.argmax(1), probs.max(1)
    right = predicted == labels
    picks = []
    for kind, among, key in [
        ("right and confident", right, -confidence),
        ("wrong and confident", ~right, -confidence),
        ("unsure", np.ones_like(right), confidence),
    ]:
        if among.any():
            i = int(np.flatnonzero(among)[np.argmin(key[among])])
            text = texts[i].decode("utf-8", "replace") if isinstance(texts[i], bytes) else texts[i]
            picks.append({"kind": kind, "text": str(text), "true": class_names[labels[i]]})
    return picks


def _card_limits(summary: dict) -> str:
    cfg = summary.get("config", {})
    length = summary.get("sequence_length", cfg.get("sequence_length", "?"))
    source = summary.get("embeddings", {}).get("source", cfg.get("embeddings", ""))
    lines = [
        "## Known limits",
        "",
        "- English only: the tokenizer, lemmatizer and stopwords are English.",
        f"- Trained on {describe_data(summary)}; texts unlike those will score lower.",
        f"- Texts longer than {length} tokens are truncated: {_truncation(cfg.get('truncate'))}.",
        "- Words outside the vocabulary all map to one unknown token.",
    ]
    if source and source != "none":
        lines.append(
            "- GloVe vectors come from 2014 text (Wikipedia and Gigaword): newer words and "
            "senses start from noise and are learned from the training data only."
        )
    lines.append("- Sarcasm, mixed reviews and negation over long spans are likely error sources.")
    return "\n".join(lines)


def _card_versions(summary: dict) -> str:
    versions = summary.get("versions", {})
    if not versions:
        return ""
    return "\n".join(["## Library versions", ""] + [f"- {k}: {v}" for k, v in versions.items()])


def _truncation(side: str | None) -> str:
    return {
        "pre": "the end of a longer text is kept (its start is cut)",
        "post": "the start of a longer text is kept (its end is cut)",
    }.get(side or "", "truncation side unknown")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _count(value: int | None) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"

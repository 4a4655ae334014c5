"""The run's record and its model card: what a version is, what it learned from, how it
scores, where it fails, and what its explanations show.

`run_summary` gathers everything a finished run is known by (a `RunRecord`: summary.json, the
core of each version's metadata.json); `model_card` writes MODEL_CARD.md from it. The card's
explanations are computed by the exported `explain` signature (`serving/saved_model.py`); what
the card shows of them is chosen here (`strongest_ngrams`, `card_explanations`).

Only the standard library and NumPy: the card is read and written without TensorFlow.
"""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from keras_sentiment.records import (
    DataSizes,
    Embeddings,
    ExportRecord,
    Metrics,
    MixMember,
    MixRecord,
    Pretraining,
    RunRecord,
    Training,
)

if TYPE_CHECKING:  # types only
    import numpy as np

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


def shorten(text: str | bytes, width: int = 300) -> str:
    """One line of at most `width` characters: <br /> tags gone, whitespace collapsed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(re.sub(r"<br\s*/?>", " ", str(text), flags=re.IGNORECASE).split())
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)].rstrip() + "…"


def run_summary(
    cfg: Config, splits: Splits, trained: Trained, result: dict, facts: dict
) -> RunRecord:
    """Everything a run is known by: summary.json, the version's metadata, the model card.

    Args:
        cfg: the run's config (its name resolved).
        splits: the data it learned from and was tested on.
        trained: the training's model, history, best epoch and precision.
        result: the test report.
        facts: `embeddings`, `pretraining`, `mix` (what each did, as their stages report
            it; {} when off), `vocabulary_size`, `run_dir`, `resumed`, `tokens_per_epoch`,
            `wall_seconds`, `errors` (the most confident ones) and `reviews_to_explain`
            (`reviews_to_explain`'s three test reviews).
    """
    history = trained.history
    return RunRecord(
        name=cfg.name,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        run_dir=facts["run_dir"],
        class_names=list(splits.class_names),
        vocabulary_size=facts["vocabulary_size"],
        sequence_length=cfg.sequence_length,
        dataset=DataSizes(splits.source, len(splits.train), len(splits.val), len(splits.test)),
        embeddings=Embeddings(**facts["embeddings"]),
        pretraining=Pretraining(**facts["pretraining"]) if facts["pretraining"] else None,
        mix=_mix_record(facts["mix"]) if facts["mix"] else None,
        parameters=trained.model.count_params(),
        training=Training(
            epochs_run=len(history),
            best_epoch=trained.best_epoch,
            history=history,
            epoch_seconds=[row["seconds"] for row in history],
            tokens_per_epoch=facts["tokens_per_epoch"],
            precision=trained.precision,
            resumed=facts["resumed"],
            wall_seconds=facts.get("wall_seconds"),
        ),
        metrics=Metrics(result["accuracy"], result["macro_f1"]),
        test_report=result,
        most_confident_errors=facts["errors"],
        reviews_to_explain=facts.get("reviews_to_explain", []),
        config=cfg.to_dict(),
        versions=library_versions(),
    )


def _mix_record(facts: dict) -> MixRecord:
    """The mix's record from what `fit_mix` and the test report said of it."""
    return MixRecord(**{**facts, "members": [MixMember(**m) for m in facts["members"]]})


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


def model_card(record: RunRecord) -> str:
    """The Markdown text of MODEL_CARD.md for one trained (and possibly exported) model."""
    sections = [
        _card_title(record),
        _card_data(record),
        _card_preprocessing(record),
        _card_architecture(record),
        _card_training(record),
        _card_metrics(record),
        _card_errors(record.most_confident_errors),
        _card_ngrams(record),
        _card_explained(record),
        _card_limits(record),
        _card_versions(record),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def _version(record: RunRecord) -> int | None:
    return record.version if isinstance(record, ExportRecord) else None


def _card_title(record: RunRecord) -> str:
    version = _version(record)
    title = f"# Model card: {record.name or 'model'}"
    title += f" (version {version})" if version is not None else ""
    names = record.class_names or record.test_report.get("class_names", [])
    classes = ", ".join(f"`{n}`" for n in names) or "unknown classes"
    lines = [title, "", f"An LSTM text classifier that labels texts as one of: {classes}."]
    lines.append(f"It learned from {describe_data(record)}.")
    if record.created:
        lines.append(f"Trained {record.created}.")
    return "\n".join(lines)


def describe_data(record: RunRecord) -> str:
    """The data a model learned from, in words: "the IMDB movie reviews (...)", "the file ..."."""
    source = str(record.dataset.source or record.config.get("dataset") or "unknown data")
    train = record.dataset.train
    size = f"{train:,} training texts" if isinstance(train, int) else ""
    if source.startswith("tfds:imdb_reviews"):
        return f"the IMDB movie reviews (Maas et al. 2011, TFDS `imdb_reviews`; {size})"
    kind, _, where = source.partition(":")
    what = {"tfds": "the TFDS data set", "file": "the file", "folder": "the folder"}
    if kind == "memory":
        return f"texts given in memory ({size or where.strip()})"
    where = where.split(" (")[0] or source
    return f"{what.get(kind, 'the data')} `{where}`" + (f" ({size})" if size else "")


def _card_data(record: RunRecord) -> str:
    data, cfg = record.dataset, record.config
    source = data.source or cfg.get("dataset", "unknown")
    lines = ["## Data", "", f"- Source: `{source}`"]
    for size, what in [(data.train, "training"), (data.validation, "validation")]:
        if size is not None:
            lines.append(f"- {what.capitalize()} texts: {size:,}")
    if data.test is not None:
        lines.append(f"- Test texts: {data.test:,}")
    if cfg.get("max_train"):
        lines.append(f"- Training texts capped at {cfg['max_train']:,} (`max_train`)")
    pre = record.pretraining
    if pre:
        lines.append(
            f"- Unlabeled texts: {pre.unlabeled_texts:,}, read with the training and "
            f"validation texts (labels unread, {pre.texts:,} in all, {pre.tokens:,} "
            f"tokens) by language models for {pre.epochs} epoch(s) before fine-tuning "
            "(Dai & Le 2015); the vocabulary comes from the same texts"
        )
    else:
        lines.append("- Unlabeled texts: none (supervised only)")
    return "\n".join(lines)


def _card_preprocessing(record: RunRecord) -> str:
    cfg, emb = record.config, record.embeddings
    length = record.sequence_length or cfg.get("sequence_length")
    lines = ["## Preprocessing", ""]
    if "lemmatize" in cfg:
        lines.append(f"- Lemmatization (NLTK WordNet): {on_off(cfg['lemmatize'])}")
    if "remove_stopwords" in cfg:
        lines.append(f"- Stopword removal (negations kept): {on_off(cfg['remove_stopwords'])}")
    if record.vocabulary_size is not None:
        lines.append(f"- Vocabulary: {record.vocabulary_size:,} tokens (incl. padding and unknown)")
    if length:
        lines.append(f"- Sequence length: {length:,} tokens; {_truncation(cfg.get('truncate'))}")
    source = emb.source or cfg.get("embeddings")
    dim = emb.dim if emb.dim is not None else "?"
    if source == "none":
        lines.append(f"- Embeddings: learned from scratch, {dim} dimensions")
    elif source:
        found = (
            f" ({emb.found:,} of {emb.vocabulary:,} words)"
            if emb.found is not None and emb.vocabulary is not None
            else ""
        )
        covers = (
            f", covering {emb.coverage:.1%} of the vocabulary{found}"
            if emb.coverage is not None
            else ""
        )
        lines.append(f"- Embeddings: GloVe `{source}`, {dim} dimensions{covers}")
        if "train_embeddings" in cfg:
            lines.append(f"- Embeddings fine-tuned: {_yes_no(cfg['train_embeddings'])}")
    return "\n".join(lines)


def _card_architecture(record: RunRecord) -> str:
    cfg = record.config
    vocab = _count(record.vocabulary_size or cfg.get("vocab_size"))
    dim = record.embeddings.dim or cfg.get("embedding_dim", "?")
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
        f"Dense ({len(record.class_names) or '?'}, softmax)",
    ]
    lines = ["## Architecture", "", " -> ".join(c for c in chain if c)]
    if record.parameters is not None:
        lines += ["", f"Parameters: {_count(record.parameters)}"]
    ngrams = record.ngrams
    if ngrams:
        w = ngrams.lstm_weight
        lines += [
            "",
            f"Mixed with an n-gram branch: NB-LR (Wang & Manning 2012) on the token ids' "
            f"1-{ngrams.order}-grams ({_count(ngrams.ngrams)} seen in 2+ training texts, "
            f"C={ngrams.C}). Probabilities: {w:g} x LSTM + {1 - w:g} x NB-LR, the weight "
            "picked on the validation split.",
        ]
        if w == 0:
            lines.append(
                "Validation gave the LSTM weight 0: this model answers with the n-gram branch "
                "alone (a model trained on little data often does)."
            )
        parts = ngrams.test_accuracy
        if parts:
            lines.append(
                f"Test accuracy of the parts alone: LSTM {parts['lstm']:.4f}, "
                f"NB-LR {parts['ngrams']:.4f}."
            )
    if record.mix:
        lines += ["", _card_mix(record.mix, (record.class_names + ["", "the second class"])[1])]
    return "\n".join(lines)


PART_NAMES = {"lstm": "the LSTM", "words": "word n-grams", "chars": "char n-grams"}


def _card_mix(mix: MixRecord, positive: str) -> str:
    """How the mix was chosen, and what each part does alone."""
    lines = ["### The mix, and how it was chosen", ""]
    for member in mix.members:
        what = (
            f"1-{member.order}-grams of the words read"
            if member.kind == "words"
            else f"2-{member.order}-grams of characters inside each word read"
        )
        lines.append(
            f"- {PART_NAMES[member.kind].capitalize()}: NB-LR (Wang & Manning 2012) on "
            f"{what}: C={member.C} picked on validation, then refitted on the training and "
            f"validation texts, keeping the {_count(member.ngrams)} n-grams seen in 2+ of them"
        )
    c = mix.coefficients
    terms = " + ".join(f"{c[p]:.3g} x {PART_NAMES[p]}" for p in c if c[p])
    lines += [
        f"- The model's log-odds: {mix.bias:.3g} + {terms} (each part's log-odds of "
        f"`{positive}`): a logistic regression on the parts' log-odds over the "
        f"{_count(mix.validation_texts or 0)} validation texts, which none of the parts "
        "learned from (stacking). A part with a coefficient of 0 or below adds nothing the "
        "others do not and was dropped; where one part alone beat the stack on validation, "
        "it answers alone.",
    ]
    dropped = [PART_NAMES[p] for p in c if not c[p]]
    if dropped:
        lines.append(f"- Left out of the mix: {', '.join(dropped)}")
    for split, accuracy in (("Validation", mix.validation_accuracy), ("Test", mix.test_accuracy)):
        if accuracy:
            parts = ", ".join(
                f"{PART_NAMES.get(p, p)} {a:.4f}" for p, a in accuracy.items() if p != "mixed"
            )
            mixed = accuracy.get("mixed")
            tail = "" if mixed is None else f"; mixed {mixed:.4f}"
            tail += " (cross-validated)" if split == "Validation" and mixed is not None else ""
            lines.append(f"- {split} accuracy of each part alone: {parts}{tail}")
    return "\n".join(lines)


def _card_training(record: RunRecord) -> str:
    train, cfg = record.training, record.config
    lines = ["## Training", ""]
    if train.epochs_run is not None:
        limit = f" of at most {cfg['epochs']}" if "epochs" in cfg else ""
        lines.append(f"- Epochs run: {train.epochs_run}{limit} (early stopping on validation)")
    if train.best_epoch:
        lines.append(
            f"- Best epoch (by {cfg.get('monitor', 'val_accuracy')}, weights kept): "
            f"{train.best_epoch}"
        )
    settings = [
        f"{label} {cfg[key]}"
        for key, label in [("batch_size", "batch"), ("learning_rate", "Adam lr")]
        if key in cfg
    ]
    if settings:
        lines.append(f"- Optimizer: {', '.join(settings)}")
    if train.precision:
        lines.append(f"- Precision: {train.precision} (the exported weights are float32)")
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
    seconds = train.epoch_seconds
    if seconds:
        lines.append(
            f"- Training time: {duration(sum(seconds))} over {len(seconds)} epochs "
            f"({duration(sum(seconds) / len(seconds))} per epoch)"
        )
    if train.wall_seconds is not None:
        lines.append(f"- Wall time of the whole run: {duration(train.wall_seconds)}")
    if train.resumed:
        lines.append("- Resumed from an interrupted run; times cover the last session only")
    return "\n".join(lines)


def _card_metrics(record: RunRecord) -> str:
    result, metrics = record.test_report, record.metrics
    accuracy = result.get("accuracy", metrics.accuracy)
    macro_f1 = result.get("macro_f1", metrics.macro_f1)
    if accuracy is None and macro_f1 is None and not result:
        return ""
    lines = ["## Test metrics", ""]
    if "support" in result:
        lines.append(f"On {result['support']:,} test texts, touched once after training.")
        lines.append("")
    if accuracy is not None:
        lines.append(f"- Accuracy: **{accuracy:.4f}**")
    if macro_f1 is not None:
        lines.append(f"- Macro F1: **{macro_f1:.4f}**")
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


# --- what the card shows of explanations ----------------------------------------------------


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


def strongest_ngrams(
    keys: np.ndarray,
    coefficients: np.ndarray,
    vocabulary: list[str],
    count: int = 20,
) -> dict[str, list]:
    """The n-gram branch's `count` strongest n-grams each way, as words.

    Args:
        keys: the branch's n-gram keys (`NgramMix.keys`: token ids in base len(vocabulary)).
        coefficients: their coefficients in the branch's logit.
        vocabulary: the preprocessor's vocabulary, by token id.
        count: how many each way.

    Returns:
        `positive` and `negative`: [words, coefficient] pairs, strongest first; a positive
        coefficient pushes towards the second class.
    """
    import numpy as np

    keys, coefficients = np.asarray(keys), np.asarray(coefficients)
    order = np.argsort(coefficients, kind="stable")

    def words(key: int) -> str:
        ids = []
        while key:
            key, i = divmod(key, len(vocabulary))
            ids.append(vocabulary[i])
        return " ".join(reversed(ids))

    def pick(indices, sign: int) -> list:
        kept = [i for i in indices[:count] if sign * coefficients[i] > 0]
        return [[words(int(keys[i])), round(float(coefficients[i]), 4)] for i in kept]

    return {"positive": pick(order[::-1], 1), "negative": pick(order, -1)}


def card_explanations(reviews: list[dict], explained: dict[str, np.ndarray]) -> list[dict]:
    """What the card shows of the explained reviews: each review's kind, labels, probability,
    scores, the sum of its shares, its 8 strongest words for the label and 5 against it, and
    its text shortened.

    Args:
        reviews: `reviews_to_explain`'s picks.
        explained: the `explain` signature's outputs for their texts, as NumPy arrays
            (`tokens`, `attributions`, `label`, `probabilities`, `score`, `baseline_score`).
    """
    shown = []
    for i, review in enumerate(reviews):
        tokens = [t.decode("utf-8", "replace") for t in explained["tokens"][i]]
        words = sorted(
            ((t, float(a)) for t, a in zip(tokens, explained["attributions"][i]) if t),
            key=lambda word: -word[1],
        )
        shown.append(
            {
                **review,
                "text": shorten(review["text"]),
                "predicted": explained["label"][i].decode("utf-8", "replace"),
                "probability": float(explained["probabilities"][i].max()),
                "score": float(explained["score"][i]),
                "baseline_score": float(explained["baseline_score"][i]),
                "sum": float(explained["attributions"][i].sum()),
                "for": [[w, round(a, 3)] for w, a in words[:8] if a > 0],
                "against": [[w, round(a, 3)] for w, a in words[::-1][:5] if a < 0],
            }
        )
    return shown


def _explanations(record: RunRecord) -> dict:
    return record.explanations if isinstance(record, ExportRecord) else {}


def _card_ngrams(record: RunRecord) -> str:
    """The card's section on the n-gram branch's strongest n-grams ("" without)."""
    ngrams = _explanations(record).get("ngrams")
    if not ngrams:
        return ""
    names = record.class_names or ["negative", "positive"]
    if record.ngrams:  # a run before the stacked mix: its card as it was written
        lines = ["## What the n-gram branch learned", ""]
        lines.append(
            "Its strongest n-grams each way, as vocabulary words (lemmas where lemmatized), "
            "with their coefficient (times the NB ratio) in the branch's logit:"
        )
    else:
        lines = ["## What the word n-grams learned", ""]
        lines.append(
            "Their strongest n-grams each way, as vocabulary words (lemmas where lemmatized), "
            "with their coefficient (times the NB ratio) in the word n-grams' logit:"
        )
    for key, name in (("positive", names[-1]), ("negative", names[0])):
        shown = ", ".join(f"{words.replace('<', '&lt;')} ({c:+.2f})" for words, c in ngrams[key])
        lines += ["", f"- Towards **{name}**: {shown}"]
    return "\n".join(lines)


def _card_explained(record: RunRecord) -> str:
    """The card's section on three explained test reviews ("" without)."""
    reviews = _explanations(record).get("reviews")
    if not reviews:
        return ""
    lines = ["## Three test reviews explained", ""]
    lines.append(
        "Each word's share of the score (the predicted label's log-odds, n-gram mix "
        "included) by integrated gradients from a baseline of zero word vectors and no "
        "n-grams (the `explain` signature). The shares sum to score - baseline."
    )
    for r in reviews:
        pushes = ", ".join(f"{w.replace('<', '&lt;')} ({a:+.2f})" for w, a in r["for"])
        against = ", ".join(f"{w.replace('<', '&lt;')} ({a:+.2f})" for w, a in r["against"])
        lines += [
            "",
            f"- **{r['kind']}**: true **{r['true']}**, predicted **{r['predicted']}** with "
            f"probability {r['probability']:.3f}; log-odds {r['score']:+.2f} against "
            f"{r['baseline_score']:+.2f} for the baseline, shares summing to {r['sum']:+.2f}.",
            f"  For the label: {pushes or 'none'}. Against it: {against or 'none'}.",
            "",
            f"  > {r['text'].replace('<', '&lt;')}",
        ]
    return "\n".join(lines)


def _card_limits(record: RunRecord) -> str:
    cfg = record.config
    length = record.sequence_length or cfg.get("sequence_length", "?")
    source = record.embeddings.source or cfg.get("embeddings", "")
    lines = [
        "## Known limits",
        "",
        "- English only: the tokenizer, lemmatizer and stopwords are English.",
        f"- Trained on {describe_data(record)}; texts unlike those will score lower.",
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


def _card_versions(record: RunRecord) -> str:
    if not record.versions:
        return ""
    lines = ["## Library versions", ""] + [f"- {k}: {v}" for k, v in record.versions.items()]
    return "\n".join(lines)


def _truncation(side: str | None) -> str:
    return {
        "pre": "the end of a longer text is kept (its start is cut)",
        "post": "the start of a longer text is kept (its end is cut)",
    }.get(side or "", "truncation side unknown")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _count(value: int | None) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"

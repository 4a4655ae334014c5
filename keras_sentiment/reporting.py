"""Seeing the results: plots, the most confident errors, a model card and a table of runs."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .config import UserError, versions, write_atomic

DPI = 100
CURVES_SIZE = (10.0, 4.5)  # inches: 1000 x 450 px
SQUARE_SIZE = (6.0, 5.0)  # inches: 600 x 500 px, confusion matrix, ROC and precision-recall

# Config keys that name where things go, not how the model was made; never worth comparing.
_IDENTITY_KEYS = ("name", "output_dir", "runs_dir")
_METRIC_KEYS = ("accuracy", "macro_f1")
_MISSING = object()


# --- plots -------------------------------------------------------------------------------


def write_plots(
    run_dir: Path,
    history: list[dict[str, float]],
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    best_epoch: int | None,
) -> list[Path]:
    """Write curves.png (1000x450 px) and confusion_matrix/roc/precision_recall.png (600x500)."""
    run_dir = Path(run_dir)
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    figures = {
        "confusion_matrix.png": _confusion_figure(labels, probs, class_names),
        "roc.png": _roc_figure(labels, probs, class_names),
        "precision_recall.png": _pr_figure(labels, probs, class_names),
    }
    if history:  # an exported run from before history was kept has none to draw
        figures = {"curves.png": _curves_figure(history, best_epoch), **figures}
    written = []
    for name, fig in figures.items():
        _save_png(fig, run_dir / name)
        written.append(run_dir / name)
    return written


def _save_png(fig, path: Path) -> None:
    # No bbox_inches="tight": it would crop to content and the pixel size would vary.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())


def _figure(size: tuple[float, float]):
    # A bare Figure needs no pyplot and no backend, so it is safe on a headless server
    # and leaves no global figure state behind.
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _curves_figure(history: list[dict[str, float]], best_epoch: int | None):
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(history)]  # from 1
    fig = _figure(CURVES_SIZE)
    for ax, metric, title in zip(fig.subplots(1, 2), ["loss", "accuracy"], ["Loss", "Accuracy"]):
        for key, name, style in [(metric, "train", "o-"), (f"val_{metric}", "validation", "s-")]:
            points = [(e, row[key]) for e, row in zip(epochs, history) if key in row]
            if points:
                ax.plot(*zip(*points), style, label=name, markersize=4)
        if best_epoch:
            ax.axvline(
                best_epoch, color="tab:red", linestyle="--", label=f"best epoch {best_epoch}"
            )
        ax.set(title=title, xlabel="epoch", ylabel=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    return fig


def _confusion_figure(labels: np.ndarray, probs: np.ndarray, class_names: list[str]):
    from sklearn.metrics import confusion_matrix

    n = len(class_names)
    matrix = confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(n)))
    fig = _figure(SQUARE_SIZE)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, label="texts")
    totals = matrix.sum(axis=1)
    for i in range(n):
        for j in range(n):
            share = matrix[i, j] / totals[i] if totals[i] else 0.0
            # White on the dark cells, black on the light ones, so every count stays readable.
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            text = f"{matrix[i, j]}\n({share:.1%})"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=11)
    rotate = 30 if n > 4 or max(len(c) for c in class_names) > 8 else 0
    ax.set_xticks(range(n), class_names, rotation=rotate, ha="right" if rotate else "center")
    ax.set_yticks(range(n), class_names)
    ax.set(title="Confusion matrix (test split)", xlabel="predicted", ylabel="true")
    return fig


def _curve_title(kind: str, class_names: list[str]) -> str:
    if len(class_names) == 2:
        return f"{kind}, test split (positive class: {class_names[1]})"
    return f"{kind}s, test split (each class vs the rest)"


def _one_vs_rest(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    # Two classes: one curve, for the positive class. More: one curve per class against the rest,
    # leaving out a class the test labels hold all or none of (its curve is undefined).
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    curves = []
    for c in classes:
        truth = labels == c
        if 0 < truth.sum() < len(truth):
            curves.append((class_names[c], truth, probs[:, c]))
    return curves


def _roc_figure(labels: np.ndarray, probs: np.ndarray, class_names: list[str]):
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure(SQUARE_SIZE)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance (AUC = 0.500)")
    curves = _one_vs_rest(labels, probs, class_names)
    for name, truth, score in curves:
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC = {roc_auc_score(truth, score):.3f})")
    if not curves:
        ax.text(0.5, 0.5, "too few classes in the labels", ha="center", transform=ax.transAxes)
    ax.set(
        title=_curve_title("ROC curve", class_names),
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def _pr_figure(labels: np.ndarray, probs: np.ndarray, class_names: list[str]):
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure(SQUARE_SIZE)
    ax = fig.subplots()
    curves = _one_vs_rest(labels, probs, class_names)
    for name, truth, score in curves:
        precision, recall, _ = precision_recall_curve(truth, score)
        ap = average_precision_score(truth, score)
        (line,) = ax.plot(recall, precision, label=f"{name} (AP = {ap:.3f})")
        # A classifier that guesses scores the class's share of the texts: draw that floor.
        ax.axhline(truth.mean(), color=line.get_color(), linestyle=":", linewidth=1)
    if curves:
        ax.legend(loc="lower left", title="dotted: chance")
    else:
        ax.text(0.5, 0.5, "too few classes in the labels", ha="center", transform=ax.transAxes)
    ax.set(
        title=_curve_title("Precision-recall curve", class_names),
        xlabel="recall",
        ylabel="precision",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    ax.grid(alpha=0.3)
    return fig


# --- errors ------------------------------------------------------------------------------


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


def shorten(text: str | bytes, width: int = 300) -> str:
    """One line of at most `width` characters: <br /> tags gone, whitespace collapsed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(re.sub(r"<br\s*/?>", " ", str(text), flags=re.IGNORECASE).split())
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)].rstrip() + "…"


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
        _card_limits(summary),
        _card_versions(summary),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def _card_title(summary: dict) -> str:
    name = summary.get("name", "model")
    version = summary.get("version")
    title = f"# Model card: {name}" + (f" (version {version})" if version is not None else "")
    lines = [title, ""]
    names = summary.get("class_names") or summary.get("test_report", {}).get("class_names", [])
    lines.append(
        f"An LSTM text classifier that labels English movie reviews as one of: "
        f"{', '.join(f'`{n}`' for n in names) or 'unknown classes'}."
    )
    if summary.get("created"):
        lines.append(f"Trained {summary['created']}.")
    return "\n".join(lines)


def _card_data(summary: dict) -> str:
    data = summary.get("dataset", {})
    cfg = summary.get("config", {})
    lines = ["## Data", "", f"- Source: `{data.get('source', cfg.get('dataset', 'unknown'))}`"]
    for key, what in [("train", "training"), ("validation", "validation"), ("test", "test")]:
        if key in data:
            lines.append(f"- {what.capitalize()} texts: {data[key]:,}")
    if cfg.get("max_train"):
        lines.append(f"- Training texts capped at {cfg['max_train']:,} (`max_train`)")
    return "\n".join(lines)


def _card_preprocessing(summary: dict) -> str:
    cfg = summary.get("config", {})
    emb = summary.get("embeddings", {})
    length = summary.get("sequence_length", cfg.get("sequence_length"))
    lines = ["## Preprocessing", ""]
    if "lemmatize" in cfg:
        lines.append(f"- Lemmatization (NLTK WordNet): {_on_off(cfg['lemmatize'])}")
    if "remove_stopwords" in cfg:
        lines.append(f"- Stopword removal (negations kept): {_on_off(cfg['remove_stopwords'])}")
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
    metrics = {**summary.get("metrics", {}), **{k: result[k] for k in result if k in _METRIC_KEYS}}
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


def _card_limits(summary: dict) -> str:
    cfg = summary.get("config", {})
    length = summary.get("sequence_length", cfg.get("sequence_length", "?"))
    source = summary.get("embeddings", {}).get("source", cfg.get("embeddings", ""))
    lines = [
        "## Known limits",
        "",
        "- English only: the tokenizer, lemmatizer and stopwords are English.",
        "- Trained on movie reviews; other domains (products, tweets, news) will score lower.",
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


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _count(value: int | None) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def duration(seconds: float) -> str:
    """Seconds as a short human duration: 42.0s, 9m 30s, 2h 05m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


# --- runs --------------------------------------------------------------------------------


def list_runs(output_dir: Path) -> list[dict]:
    """One row per exported version with readable metadata, newest first."""
    rows = []
    for meta in _all_metadata(Path(output_dir)):
        rows.append(
            {
                "name": meta["name"],
                "version": meta["version"],
                "created": meta.get("created", ""),
                "accuracy": meta.get("metrics", {}).get("accuracy"),
                "macro_f1": meta.get("metrics", {}).get("macro_f1"),
                "duration": meta.get("training", {}).get("wall_seconds"),
                "settings": settings(meta),
                "path": meta["path"],
            }
        )
    return sorted(rows, key=lambda r: (_when(r["created"]), r["version"]), reverse=True)


def unfinished_runs(runs_dir: Path) -> list[str]:
    """One line per run folder that has not exported yet: interrupted, or running now."""
    lines = []
    for base in sorted(Path(runs_dir).glob("*/")):
        for version in versions(base):
            run = base / str(version)
            if (run / "summary.json").is_file():
                continue
            try:
                state = json.loads((run / "checkpoint" / "state.json").read_text())
                cfg = json.loads((run / "config.json").read_text())
                where = f"at epoch {state['epoch']} of at most {cfg['epochs']}"
                if state.get("finished"):
                    where = "trained, not yet reported and exported"
            except (OSError, ValueError, KeyError, TypeError):
                where = "not yet at its first backup"
            lines.append(f"{run}: {where} (stopped, or still running)")
    return lines


def _all_metadata(output_dir: Path) -> Iterator[dict]:
    if not output_dir.is_dir():
        return
    for base in sorted(output_dir.iterdir()):
        if base.is_dir() and not base.name.startswith("."):
            for version in versions(base):
                meta = read_metadata(base / str(version))
                if meta is not None:
                    yield meta


def read_metadata(version_dir: Path) -> dict | None:
    """A version's metadata.json, its name/version/path taken from where it lies; None if bad."""
    try:
        meta = json.loads((version_dir / "assets.extra" / "metadata.json").read_text("utf-8"))
    except (OSError, ValueError):  # ValueError covers bad JSON and bad UTF-8
        return None
    if not isinstance(meta, dict):
        return None
    # A copied or renamed folder is served under its folder name, so that is the truth.
    version_dir = Path(version_dir)
    return {
        **meta,
        "name": version_dir.parent.name,
        "version": int(version_dir.name),
        "path": str(version_dir),
    }


def _when(created: str) -> datetime:
    try:
        when = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def settings(meta: dict) -> str:
    """Key settings of a run in one short string, e.g. 'bilstm 64x1 max, len 400 pre, ...'."""
    cfg = meta.get("config", {})
    if not cfg:
        return "-"
    kind = "bilstm" if cfg.get("bidirectional") else "lstm"
    parts = [
        f"{kind} {cfg.get('lstm_units', '?')}x{cfg.get('lstm_layers', '?')} "
        f"{cfg.get('pooling', '?')}",
        f"len {cfg.get('sequence_length', '?')} {cfg.get('truncate', '?')}",
        # The vocabulary the run really has: a small data set fills less than vocab_size.
        f"vocab {meta.get('vocabulary_size', cfg.get('vocab_size', '?'))}",
        f"lemma {_on_off(cfg.get('lemmatize'))}",
    ]
    if cfg.get("remove_stopwords"):
        parts.append("no stopwords")
    source = str(cfg.get("embeddings", "?"))
    if source == "none":
        parts.append(f"learned {cfg.get('embedding_dim', '?')}d")
    else:
        parts.append(Path(source).name + ("" if cfg.get("train_embeddings", True) else " frozen"))
    if cfg.get("max_train"):
        parts.append(f"train {cfg['max_train']}")
    return ", ".join(parts)


def format_runs(rows: list[dict]) -> str:
    """The rows of list_runs as an aligned plain-text table with a header."""
    if not rows:
        return "no exported runs"
    header = ["NAME", "VERSION", "CREATED", "ACCURACY", "MACRO F1", "DURATION", "SETTINGS"]
    table = [header] + [
        [
            str(r["name"]),
            str(r["version"]),
            _short_time(r.get("created")),
            _number(r.get("accuracy")),
            _number(r.get("macro_f1")),
            duration(r["duration"]) if r.get("duration") is not None else "-",
            r.get("settings", "-"),
        ]
        for r in rows
    ]
    return _align(table, numeric=frozenset({1, 3, 4, 5}))


def _align(table: list[list[str]], numeric: frozenset[int] = frozenset()) -> str:
    # Numbers right-aligned so their digits line up; the last column is left ragged.
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _short_time(created: str | None) -> str:
    when = _when(created or "")
    return "-" if when.year == 1 else when.strftime("%Y-%m-%d %H:%M")


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def compare_runs(a: dict, b: dict) -> str:
    """Two runs' metadata side by side; config settings that differ are marked with '*'."""
    cfg_a, cfg_b = a.get("config", {}), b.get("config", {})
    keys = [k for k in cfg_a if k not in _IDENTITY_KEYS]
    keys += [k for k in cfg_b if k not in _IDENTITY_KEYS and k not in cfg_a]
    table = [["", "", _run_label(a), _run_label(b)]]
    table.append(["", "created", _short_time(a.get("created")), _short_time(b.get("created"))])
    for key in keys:
        differs = cfg_a.get(key, _MISSING) != cfg_b.get(key, _MISSING)
        table.append(["*" if differs else "", key, _setting(cfg_a, key), _setting(cfg_b, key)])
    rows = [
        ("parameters", lambda m: f"{m['parameters']:,}"),
        ("epochs run", lambda m: str(m["training"]["epochs_run"])),
        ("best epoch", lambda m: str(m["training"]["best_epoch"])),
        ("duration", lambda m: duration(m["training"]["wall_seconds"])),
        ("accuracy", lambda m: _number(m["metrics"]["accuracy"])),
        ("macro F1", lambda m: _number(m["metrics"]["macro_f1"])),
    ]
    names = list(a.get("class_names", []))
    names += [n for n in b.get("class_names", []) if n not in names]
    for name in names:
        rows.append(
            (f"F1 {name}", lambda m, n=name: _number(m["test_report"]["per_class"][n]["f1-score"]))
        )
    table.append(["", "", "", ""])
    for label, get in rows:
        table.append(["", label, _get(get, a), _get(get, b)])
    return _align(table)


def _run_label(meta: dict) -> str:
    return f"{meta.get('name', '?')}/{meta.get('version', '?')}"


def _setting(cfg: dict, key: str) -> str:
    if key not in cfg:
        return "-"
    return '""' if cfg[key] == "" else str(cfg[key])


def _get(get, meta: dict) -> str:
    # Older or partial metadata lacks some keys or holds None; show "-" rather than fail.
    try:
        return get(meta)
    except (KeyError, TypeError, ValueError):
        return "-"


def find_run(output_dir: Path, spec: str) -> dict:
    """The metadata of "NAME" (its latest readable version) or "NAME/VERSION"; UserError if none."""
    output_dir = Path(output_dir)
    name, _, version = spec.strip().strip("/").partition("/")
    base = output_dir / name
    if not name or name.startswith(".") or not base.is_dir():
        known = sorted({m["name"] for m in _all_metadata(output_dir)})
        hint = f"; runs there: {', '.join(known)}" if known else "; none there"
        raise UserError(f"no exported run {name!r} in {output_dir}{hint}")
    found = versions(base)
    if version:
        if not version.isdigit() or int(version) not in found:
            raise UserError(
                f"{name}: no version {version!r} in {base}; versions: "
                f"{', '.join(map(str, found)) or 'none'}"
            )
        meta = read_metadata(base / str(int(version)))
        if meta is None:
            raise UserError(f"{base / str(int(version))}: assets.extra/metadata.json is unreadable")
        return meta
    for v in reversed(found):
        meta = read_metadata(base / str(v))
        if meta is not None:
            return meta
    raise UserError(f"{name}: no version in {base} has a readable assets.extra/metadata.json")

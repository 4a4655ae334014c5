"""Plots: the training curves, confusion matrix, ROC and precision-recall curves of a run."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from keras_sentiment.files import write_atomic

DPI = 100
CURVES_SIZE = (10.0, 4.5)  # inches: 1000 x 450 px
SQUARE_SIZE = (6.0, 5.0)  # inches: 600 x 500 px, confusion matrix, ROC and precision-recall


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
        # Whole epochs only; a run of one epoch would otherwise get ticks at 0.95, 1.00, ...
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    return fig


def _confusion_figure(labels: np.ndarray, probs: np.ndarray, class_names: list[str]):
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(class_names)
    fig = _figure(SQUARE_SIZE)
    ax = fig.subplots()
    rotate = 30 if n > 4 or max(len(c) for c in class_names) > 8 else 0
    display = ConfusionMatrixDisplay.from_predictions(
        labels,
        probs.argmax(axis=1),
        labels=list(range(n)),
        display_labels=class_names,
        cmap="Blues",
        xticks_rotation=rotate,
        ax=ax,
    )
    # sklearn shows counts or shares; each cell here shows both: the count and its row's share.
    matrix = display.confusion_matrix
    totals = matrix.sum(axis=1)
    for (i, j), text in np.ndenumerate(display.text_):
        share = matrix[i, j] / totals[i] if totals[i] else 0.0
        text.set_text(f"{matrix[i, j]}\n({share:.1%})")
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
    from sklearn.metrics import RocCurveDisplay

    fig = _figure(SQUARE_SIZE)
    ax = fig.subplots()
    curves = _one_vs_rest(labels, probs, class_names)
    for k, (name, truth, score) in enumerate(curves):
        RocCurveDisplay.from_predictions(truth, score, name=name, ax=ax, plot_chance_level=k == 0)
    title = _curve_title("ROC curve", class_names)
    _finish_curve(
        ax, bool(curves), title, "false positive rate", "true positive rate", "lower right"
    )
    return fig


def _pr_figure(labels: np.ndarray, probs: np.ndarray, class_names: list[str]):
    from sklearn.metrics import PrecisionRecallDisplay

    fig = _figure(SQUARE_SIZE)
    ax = fig.subplots()
    curves = _one_vs_rest(labels, probs, class_names)
    for name, truth, score in curves:
        # The chance level: a classifier that guesses scores the class's share of the texts.
        PrecisionRecallDisplay.from_predictions(
            truth, score, name=name, ax=ax, plot_chance_level=True
        )
    title = _curve_title("Precision-recall curve", class_names)
    _finish_curve(ax, bool(curves), title, "recall", "precision", "lower left")
    return fig


def _finish_curve(ax, drawn: bool, title: str, xlabel: str, ylabel: str, legend: str) -> None:
    # Shared by the ROC and precision-recall plots: labels, unit square, legend or a note.
    if drawn:
        ax.legend(loc=legend)
    else:
        ax.text(0.5, 0.5, "too few classes in the labels", ha="center", transform=ax.transAxes)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.grid(alpha=0.3)

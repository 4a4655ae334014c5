"""The whole job as a Python API: `fit(Config) -> Run`, and `load(path)` -> a predictor.

The CLI is a thin layer over these two calls; a notebook uses them directly:

    import keras_sentiment as ks
    run = ks.fit(ks.Config(epochs=3))
    run.model.predict(tf.constant(["What a film!"]))
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from .config import Config, UserError, kill_point, save_json, write_atomic
from .training import is_chief, make_strategy, open_run

if TYPE_CHECKING:
    from .ngrams import NgramMix
    from .preprocessing import TextPreprocessor


@dataclass
class Run:
    """What `fit` made: the raw-text model, its history and report, and where its files are."""

    model: keras.Model | None  # raw strings in, probabilities out (None on a worker)
    history: list[dict[str, float]]
    report: dict
    run_dir: Path
    export_path: Path | None  # saved_models/NAME/VERSION (None on a worker)
    summary: dict = field(repr=False)


def load(path: str | Path):
    """A SavedModel folder (NAME or NAME/VERSION) -> SavedModelPredictor; a .keras file ->
    the raw-text keras.Model it holds."""
    from . import model  # noqa: F401  (registers the package's Keras layers)
    from .prediction import SavedModelPredictor

    path = Path(path)
    if path.suffix == ".keras":
        if not path.is_file():
            raise UserError(f"{path}: no such .keras file")
        return keras.saving.load_model(path)
    return SavedModelPredictor(path)


def fit(cfg: Config | None = None) -> Run:
    """Data -> preprocessing -> embeddings -> model -> training -> report -> SavedModel.

    The same work and files as `python -m keras_sentiment fit`, with the same printed lines.
    """
    cfg = (cfg or Config()).validate()
    started = time.perf_counter()
    strategy = make_strategy(cfg.strategy)  # first: multi-worker must precede other TF ops
    chief = is_chief(strategy)
    if chief:
        run_dir, resuming = open_run(cfg)
    else:  # workers keep their own backups; only the chief writes what users read
        run_dir = Path(cfg.runs_dir) / cfg.name / f".worker-{strategy.cluster_resolver.task_id}"
        resuming = (run_dir / "config.json").is_file()
    if resuming:
        print(f"resuming the interrupted run in {run_dir}", flush=True)
    save_json(run_dir / "config.json", cfg.to_dict())
    print(f"run folder: {run_dir}  (tensorboard --logdir {run_dir / 'logs'})", flush=True)
    try:
        return _fit_run(cfg, strategy, chief, run_dir, resuming, started)
    except UserError:
        if not (run_dir / "checkpoint").exists():  # nothing trained: leave no empty run behind
            _remove(run_dir)
            if run_dir.parent.is_dir() and not any(run_dir.parent.iterdir()):
                run_dir.parent.rmdir()
        raise


def _fit_run(cfg, strategy, chief: bool, run_dir: Path, resuming: bool, started: float) -> Run:
    from .data import load_splits, load_unlabeled
    from .embeddings import embedding_matrix
    from .evaluation import format_report, mix_rows, predict_rows, report
    from .export import export_saved_model, library_versions, served_before
    from .model import build_model, text_model
    from .model_card import most_confident_errors
    from .ngrams import fit_ngrams
    from .plots import write_plots
    from .preprocessing import TextPreprocessor, adapt_preprocessor, vectorize
    from .pretraining import corpus, load_pretrained, pretrain
    from .training import save_keras, train

    keras.utils.set_random_seed(cfg.seed)
    splits = load_splits(cfg)
    texts = splits.train.texts
    if cfg.pretrain_epochs:
        # The vocabulary and the language models see every training text (labels unread)
        # and the unlabeled ones; validation labels still only pick the best epoch.
        unlabeled = load_unlabeled(cfg)
        texts = corpus(splits.train.texts, splits.val.texts, unlabeled)
        print(f"data: {len(unlabeled)} unlabeled texts for pretraining", flush=True)
    if (run_dir / "preprocessor.json").is_file():
        pre = TextPreprocessor.from_config(json.loads((run_dir / "preprocessor.json").read_text()))
    else:
        pre = adapt_preprocessor(cfg, texts)
        save_json(run_dir / "preprocessor.json", pre.get_config())
    t = time.perf_counter()
    rows = {name: vectorize(pre, getattr(splits, name).texts) for name in ("train", "val", "test")}
    tokens = sum(len(r) for r in rows["train"])
    print(
        f"vectorized {sum(len(r) for r in rows.values())} texts "
        f"({tokens / len(rows['train']):.0f} tokens per training text; "
        f"{time.perf_counter() - t:.1f}s)",
        flush=True,
    )

    matrix, glove = embedding_matrix(cfg, pre.vocabulary)
    shape = (len(pre.vocabulary), len(splits.class_names))
    pretrained, pretraining = None, {}
    if cfg.pretrain_epochs:
        t = time.perf_counter()
        lm_rows = vectorize(pre, texts)
        pretrained = pretrain(cfg, lm_rows, matrix, len(pre.vocabulary))
        pretraining = {
            "texts": len(lm_rows),
            "unlabeled_texts": len(unlabeled),
            "tokens": sum(len(r) for r in lm_rows),
            "epochs": cfg.pretrain_epochs,
            "seconds": round(time.perf_counter() - t, 1),
        }
        # Fine-tuning starts from the same random state whether pretraining ran or was cached.
        keras.utils.set_random_seed(cfg.seed)

    def build() -> keras.Model:
        model = build_model(cfg, *shape, matrix)
        if pretrained is not None:
            load_pretrained(model, pretrained)
        return model

    trained = train(
        cfg,
        strategy,
        build,
        (rows["train"], splits.train.labels),
        (rows["val"], splits.val.labels),
        run_dir,
    )
    model, history = trained.model, trained.history
    if not chief:
        _remove(run_dir)
        print("worker done: the chief writes the report and the SavedModel", flush=True)
        return Run(None, history, {}, run_dir, None, {})
    mix, ngrams = None, {}
    if cfg.ngrams and len(splits.class_names) == 2:
        lstm_val = predict_rows(model, rows["val"])
        train_part = (rows["train"], splits.train.labels)
        val_part = (rows["val"], splits.val.labels)
        mix, ngrams = fit_ngrams(cfg, len(pre.vocabulary), train_part, val_part, lstm_val)
    elif cfg.ngrams:
        print(f"n-grams: off (NB-LR needs two classes, not {len(splits.class_names)})", flush=True)
    text = text_model(pre, model, mix)  # raw strings in: what users load and call
    save_keras(text, run_dir / "model.keras")

    # The test split is touched once, here, for the final report.
    probs = predict_rows(model, rows["test"])
    if mix is not None:
        lstm_probs = probs
        probs, ngram_probs = mix_rows(mix, rows["test"], lstm_probs)
        ngrams["test_accuracy"] = {
            "lstm": float(np.mean(lstm_probs.argmax(1) == splits.test.labels)),
            "ngrams": float(np.mean(ngram_probs.argmax(1) == splits.test.labels)),
        }
        print(
            "test accuracy of the parts: LSTM alone {lstm:.4f}, NB-LR alone {ngrams:.4f}".format(
                **ngrams["test_accuracy"]
            ),
            flush=True,
        )
    result = report(splits.test.labels, probs, splits.class_names)
    print("\ntest report\n" + format_report(result), flush=True)
    save_json(run_dir / "report.json", result)
    kill_point("reported")

    best_epoch = trained.best_epoch
    plots = write_plots(run_dir, history, splits.test.labels, probs, splits.class_names, best_epoch)
    kill_point("plotted")
    errors = most_confident_errors(splits.test.texts, splits.test.labels, probs, splits.class_names)
    summary = {
        "name": cfg.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(run_dir.resolve()),
        "class_names": splits.class_names,
        "vocabulary_size": len(pre.vocabulary),
        "sequence_length": cfg.sequence_length,
        "dataset": {
            "source": splits.source,
            "train": len(splits.train),
            "validation": len(splits.val),
            "test": len(splits.test),
        },
        "embeddings": glove,
        "pretraining": pretraining,
        "ngrams": ngrams,
        "parameters": model.count_params(),
        "training": {
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "history": history,
            "epoch_seconds": [row["seconds"] for row in history],
            "tokens_per_epoch": tokens,
            "precision": trained.precision,
            "resumed": resuming,
        },
        "metrics": {k: result[k] for k in ("accuracy", "macro_f1")},
        "test_report": result,
        "most_confident_errors": errors,
        "config": cfg.to_dict(),
        "versions": library_versions(),
    }
    summary["training"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    base = Path(cfg.output_dir) / cfg.name
    path = export_saved_model(
        pre,
        model,
        splits.class_names,
        base,
        summary,
        version_files(summary),
        version=int(run_dir.name),
        mix=mix,
    )
    kill_point("exported")
    write_atomic(run_dir / "MODEL_CARD.md", (path / "assets.extra" / "MODEL_CARD.md").read_text())
    summary["export"] = str(path)
    save_json(run_dir / "summary.json", summary)  # written last: the run is finished
    _remove(run_dir / "checkpoint")
    print(f"\nwrote: {path}  (SavedModel for TF Serving; metadata in {path / 'assets.extra'})")
    print(f"wrote: {run_dir}  (config, history.csv, report.json, MODEL_CARD.md, model.keras, logs)")
    print(f"wrote: {', '.join(p.name for p in plots)} in {run_dir}")
    print(
        f"test accuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}, "
        f"{summary['training']['wall_seconds']:.0f}s",
        flush=True,
    )
    for line in served_before(base, int(path.name), summary):
        print(line, flush=True)
    return Run(text, history, result, run_dir, path, summary)


def run_model(run_dir: Path) -> tuple[TextPreprocessor, keras.Model, NgramMix | None]:
    """The preprocessor, the token-id network and the n-gram mix a run trained, from its folder."""
    from .model import split_text_model
    from .preprocessing import TextPreprocessor

    model = load(run_dir / "model.keras")
    if any(isinstance(layer, TextPreprocessor) for layer in model.layers):
        return split_text_model(model)
    # Runs from before model.keras held the raw-text model: the network takes token ids and
    # the preprocessor lies beside it.
    config = json.loads((run_dir / "preprocessor.json").read_text())
    return TextPreprocessor.from_config(config), model, None


def version_files(summary: dict) -> dict:
    """What assets.extra/ holds beside metadata.json, the same for `fit` and `export`."""
    from .model_card import model_card

    return {
        "config.json": json.dumps(summary["config"], indent=2),
        "report.json": json.dumps(summary["test_report"], indent=2),
        # Called with the final metadata, so the card names its own version.
        "MODEL_CARD.md": lambda meta: model_card(meta, summary.get("most_confident_errors", [])),
    }


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()

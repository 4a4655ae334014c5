"""The command line: fit, evaluate, predict and export, each a straight walk through the stages."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .config import (
    FIELDS,
    Config,
    UserError,
    kill_point,
    make_config,
    save_json,
    versions,
    write_atomic,
)


def fit(cfg: Config) -> dict:
    """Data -> preprocessing -> embeddings -> model -> training -> report -> SavedModel."""
    from .training import is_chief, make_strategy, open_run

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


def _fit_run(cfg, strategy, chief: bool, run_dir: Path, resuming: bool, started: float) -> dict:
    import keras

    from .data import load_splits
    from .embeddings import embedding_matrix
    from .evaluation import format_report, predict_rows, report
    from .export import export_saved_model, library_versions, served_before
    from .model import build_model
    from .preprocessing import TextPreprocessor, adapt_preprocessor, vectorize
    from .reporting import most_confident_errors, write_plots
    from .training import (
        best_epoch_index,
        compile_model,
        save_keras,
        set_precision,
        strategy_name,
        train,
    )

    keras.utils.set_random_seed(cfg.seed)
    splits = load_splits(cfg)
    if (run_dir / "preprocessor.json").is_file():
        pre = TextPreprocessor.from_config(json.loads((run_dir / "preprocessor.json").read_text()))
    else:
        pre = adapt_preprocessor(cfg, splits.train.texts)
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
    precision = set_precision(cfg.mixed_precision)
    shape = (len(pre.vocabulary), len(splits.class_names))
    with strategy.scope():
        model = build_model(cfg, *shape, matrix)
        compile_model(model, cfg)
    model.summary(print_fn=lambda line, **_: print(line, flush=True))
    print(
        f"strategy: {strategy_name(strategy)} with {strategy.num_replicas_in_sync} replica(s), "
        f"global batch {cfg.batch_size}, {precision}",
        flush=True,
    )

    history = train(
        model, cfg, (rows["train"], splits.train.labels), (rows["val"], splits.val.labels), run_dir
    )
    if not chief:
        _remove(run_dir)
        print("worker done: the chief writes the report and the SavedModel", flush=True)
        return {}
    if strategy.num_replicas_in_sync > 1:
        # Report and export from a plain copy: no distributed variables in the served graph.
        plain = build_model(cfg, *shape, None)
        plain.set_weights(model.get_weights())
        model = plain
    save_keras(model, run_dir / "model.keras")

    # The test split is touched once, here, for the final report.
    probs = predict_rows(model, rows["test"])
    result = report(splits.test.labels, probs, splits.class_names)
    print("\ntest report\n" + format_report(result), flush=True)
    save_json(run_dir / "report.json", result)
    kill_point("reported")

    scores = [row[cfg.monitor] for row in history if cfg.monitor in row]
    best_epoch = best_epoch_index(scores, cfg.monitor) + 1 if scores else None
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
        "parameters": model.count_params(),
        "training": {
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "history": history,
            "epoch_seconds": [row["seconds"] for row in history],
            "tokens_per_epoch": tokens,
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
        _version_files(summary),
        version=int(run_dir.name),
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
    return summary


def _version_files(summary: dict) -> dict:
    """What assets.extra/ holds beside metadata.json, the same for `fit` and `export`."""
    from .reporting import model_card

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


def evaluate(model_dir: str, dataset: str, split: str, as_json: bool) -> dict:
    """The same report for an exported model, on raw texts of a data set's split."""
    from .data import load_test_split
    from .evaluation import format_report, report
    from .prediction import SavedModelPredictor

    predictor = SavedModelPredictor(model_dir)
    dataset = dataset or predictor.metadata.get("config", {}).get("dataset", "imdb_reviews")
    data, names = load_test_split(dataset, split)
    model_names = predictor.metadata.get("class_names", names)
    if list(model_names) != list(names):
        raise UserError(f"{dataset}: classes {names} differ from the model's {model_names}")
    outputs = predictor(list(data.texts))
    result = report(data.labels, outputs["probabilities"], names)
    result.update({"model": str(predictor.path), "dataset": dataset, "split": split})
    print(json.dumps(result) if as_json else format_report(result), flush=True)
    return result


def predict(
    model_dir: str, texts: list[str], server: str, model_name: str, timeout: float = 30.0
) -> None:
    """One JSON line per text: label, label id and the probability of each class."""
    from .prediction import SavedModelPredictor, rest_predict, to_records

    # Bytes end to end: invalid UTF-8 on stdin or in argv reaches the model, not a decoder.
    data = [t.encode("utf-8", "surrogateescape") for t in texts] or [
        line.rstrip(b"\r\n") for line in sys.stdin.buffer
    ]
    texts = [t.decode("utf-8", "replace") for t in data]
    if server:
        if not model_name:
            raise UserError("predict: --server needs --model-name (the name TF Serving serves)")
        records = rest_predict(server, model_name, texts, timeout)
    else:
        if not model_dir:
            raise UserError("predict: give MODEL_DIR, or --server URL with --model-name")
        records = to_records(SavedModelPredictor(model_dir)(data))
    for text, record in zip(texts, records):
        print(json.dumps({"text": text[:200], **record}, ensure_ascii=False), flush=True)


def export(
    cfg: Config, models_config: str, batching: bool = False, base_path_prefix: str = "/models"
) -> Path:
    """Export the last trained model of a run again, as the next version."""
    import keras

    from .export import batching_parameters, export_saved_model, served_before
    from .export import models_config as config_text
    from .preprocessing import TextPreprocessor

    runs_base = Path(cfg.runs_dir) / cfg.name
    needed = ["model.keras", "preprocessor.json", "summary.json"]
    finished = [
        runs_base / str(v)
        for v in versions(runs_base)
        if all((runs_base / str(v) / name).is_file() for name in needed)
    ]
    if not finished:
        raise UserError(f"export: no finished run of {cfg.name!r} in {runs_base}")
    run_dir = finished[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("export", None)  # the new version gets its own path
    pre = TextPreprocessor.from_config(json.loads((run_dir / "preprocessor.json").read_text()))
    model = keras.models.load_model(run_dir / "model.keras")
    base = Path(cfg.output_dir) / cfg.name
    path = export_saved_model(
        pre, model, summary["class_names"], base, summary, _version_files(summary)
    )
    print(f"wrote: {path}  (the model of {run_dir})")
    if batching:
        from .data import load_test_split

        data, _ = load_test_split(cfg.dataset)
        texts = [t if isinstance(t, bytes) else str(t).encode() for t in data.texts[:1024]]
        write_atomic(base / "batching_parameters.txt", batching_parameters(path, texts))
        print(f"wrote: {base / 'batching_parameters.txt'}  (measured on {len(texts)} test texts)")
    if models_config:
        # The paths the server sees: the README's Docker mount puts saved_models at /models.
        server_path = f"{base_path_prefix.rstrip('/')}/{cfg.name}" if base_path_prefix else ""
        write_atomic(models_config, config_text({cfg.name: server_path or str(base.resolve())}))
        print(f"wrote: {models_config}")
    for line in served_before(base, int(path.name), summary):
        print(line, flush=True)
    return path


# --- argument parsing ------------------------------------------------------------------


def runs(output_dir: str, compare: list[str] | None, runs_dir: str = "runs") -> None:
    """A table of exported runs, newest first, then unfinished runs; or two runs side by side."""
    from .reporting import compare_runs, find_run, format_runs, list_runs, unfinished_runs

    if compare:
        a, b = (find_run(Path(output_dir), spec) for spec in compare)
        print(compare_runs(a, b))
        return
    print(format_runs(list_runs(Path(output_dir))))
    unfinished = unfinished_runs(Path(runs_dir))
    if unfinished:
        print("\nnot exported (the same fit command resumes a stopped one):")
        print("\n".join(unfinished))


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="TOML", help="TOML file of config keys")
    for name, field in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = type(field.default)
        help_text = f"{field.metadata.get('help', '')} (default: {field.default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag, type=kind, default=None, metavar=kind.__name__.upper(), help=help_text
            )


def build_parser() -> argparse.ArgumentParser:
    """The `python -m keras_sentiment` parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_sentiment",
        description="Train, evaluate, export and serve an LSTM sentiment classifier.",
        allow_abbrev=False,  # `fit --epoch 1` must be an error, not a full-data fit
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "fit", allow_abbrev=False, help="train, report on the test split and export a SavedModel"
    )
    _add_config_flags(p)

    p = sub.add_parser(
        "evaluate", allow_abbrev=False, help="classification report of an exported model"
    )
    p.add_argument("model_dir", help="saved_models/NAME or saved_models/NAME/VERSION")
    p.add_argument("--dataset", default="", help="data set (default: the one it was trained on)")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser(
        "predict", allow_abbrev=False, help="label raw texts (arguments, or lines on stdin)"
    )
    p.add_argument("model_dir", nargs="?", default="", help="saved_models/NAME[/VERSION]")
    p.add_argument("texts", nargs="*", help="texts to label (default: read lines from stdin)")
    p.add_argument(
        "--server", default="", help="TF Serving REST address, e.g. http://localhost:8501"
    )
    p.add_argument("--model-name", default="", help="model name on the server")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")

    p = sub.add_parser(
        "runs", allow_abbrev=False, help="list exported runs, newest first, or compare two"
    )
    p.add_argument("--output-dir", default="saved_models", help="where the models are")
    p.add_argument("--runs-dir", default="runs", help="where the run folders are")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="NAME or NAME/VERSION twice")

    p = sub.add_parser(
        "export", allow_abbrev=False, help="export a finished run again as the next version"
    )
    _add_config_flags(p)
    p.add_argument("--models-config", default="", help="also write a TF Serving models.config here")
    p.add_argument(
        "--base-path-prefix",
        default="/models",
        help="where the server sees OUTPUT_DIR, for models.config (default: /models, the "
        "README's Docker mount; '' for this machine's absolute path)",
    )
    p.add_argument(
        "--batching-parameters",
        action="store_true",
        help="time the new version and write NAME/batching_parameters.txt for TF Serving",
    )
    return parser


def _quiet_tensorflow_start() -> None:
    # TensorFlow's native start-up lines (oneDNN, CUDA probing) bypass TF_CPP_MIN_LOG_LEVEL
    # and bury our one-line messages; import it and probe devices with stderr muted.
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2" or "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command; user errors are one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow_start()
    try:
        if args.command in ("fit", "export"):
            overrides = {k: getattr(args, k) for k in FIELDS}
            cfg = make_config(overrides, args.config)
            if args.command == "fit":
                fit(cfg)
            else:
                export(cfg, args.models_config, args.batching_parameters, args.base_path_prefix)
        elif args.command == "runs":
            runs(args.output_dir, args.compare, args.runs_dir)
        elif args.command == "evaluate":
            evaluate(args.model_dir, args.dataset, args.split, args.json)
        elif args.command == "predict":
            # With --server there is no MODEL_DIR: the first positional is a text.
            texts = [args.model_dir, *args.texts] if args.server and args.model_dir else args.texts
            predict(args.model_dir, texts, args.server, args.model_name, args.timeout)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: the last checkpoint is kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    return 0

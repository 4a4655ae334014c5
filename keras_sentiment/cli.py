"""The command line: fit, evaluate, predict and export, each a straight walk through the stages."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import (
    FIELDS,
    Config,
    UserError,
    make_config,
    versions,
    write_atomic,
)


def fit(cfg: Config) -> None:
    """Data -> preprocessing -> embeddings -> model -> training -> report -> SavedModel."""
    from .pipeline import fit as run_fit

    run_fit(cfg)


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
    start = time.perf_counter()
    outputs = predictor(list(data.texts))
    seconds = time.perf_counter() - start
    result = report(data.labels, outputs["probabilities"], names)
    result.update({"model": str(predictor.path), "dataset": dataset, "split": split})
    result["seconds"] = round(seconds, 2)  # scoring only: after the model and data are loaded
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
    from .export import batching_parameters, export_saved_model, served_before
    from .export import models_config as config_text
    from .pipeline import run_model, version_files

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
    pre, model, mix = run_model(run_dir)
    base = Path(cfg.output_dir) / cfg.name
    path = export_saved_model(
        pre, model, summary["class_names"], base, summary, version_files(summary), mix=mix
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
    from .listing import compare_runs, find_run, format_runs, list_runs, unfinished_runs

    if compare:
        a, b = (find_run(Path(output_dir), spec) for spec in compare)
        print(compare_runs(a, b))
        return
    print(format_runs(list_runs(Path(output_dir))))
    unfinished = unfinished_runs(Path(runs_dir))
    if unfinished:
        print("\nnot exported (the same fit command resumes a stopped one):")
        print("\n".join(unfinished))


def _add_config_flags(parser: argparse.ArgumentParser, keys=tuple(FIELDS)) -> None:
    parser.add_argument("--config", metavar="TOML", help="TOML file of config keys")
    for name in keys:
        field = FIELDS[name]
        flag = "--" + name.replace("_", "-")
        kind = type(field.default)
        help_text = field.metadata.get("help", "")
        if field.default != "":
            help_text += f" (default: {field.default})"
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
    _add_config_flags(p, ("name", "output_dir", "runs_dir", "dataset"))  # what export uses
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


def _start_tensorflow(run_an_op: bool, serving: bool) -> None:
    # TensorFlow's native start-up lines (oneDNN, CUDA probing) bypass TF_CPP_MIN_LOG_LEVEL
    # and bury our one-line messages; import it and probe devices with stderr muted. oneDNN
    # logs "supports DT_BOOL (or DT_INT32) only on platforms with AVX-512" at ERROR level,
    # once per process: spend that once here too, unless multi-worker training needs to be
    # the first to run a TensorFlow op. Serving's thread setting must come before any op; a
    # process that brought its own TensorFlow (a test, a notebook) keeps its settings.
    fresh = "tensorflow" not in sys.modules
    quiet = fresh and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") >= "2"
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            if quiet:
                os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
            if serving and fresh:
                from .prediction import serving_threads

                serving_threads()
            if run_an_op and quiet:
                tf.transpose(tf.zeros([2, 1], tf.bool))
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command; user errors are one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        cfg = None
        if args.command in ("fit", "export"):
            cfg = make_config({k: getattr(args, k, None) for k in FIELDS}, args.config)
        serving = args.command == "evaluate" or (args.command == "predict" and not args.server)
        multi_worker = cfg is not None and cfg.strategy == "multi-worker"
        _start_tensorflow(run_an_op=not multi_worker, serving=serving)
        if cfg is not None:
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

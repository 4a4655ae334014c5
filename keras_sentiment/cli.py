"""The command line: parse the flags, call the Python API, print the answers.

`fit` and `export` fill a `Config` from flags and a TOML file; every command is one call of
`keras_sentiment.api` (or `serving.listing` for `runs`, which starts no TensorFlow). A user error
is one line on stderr and exit code 2; Ctrl-C says what is kept, exit code 130; output piped
into a reader that stops early (`runs | head -1`) ends quietly.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import os
import sys
from pathlib import Path

from keras_sentiment import __version__
from keras_sentiment.config import (
    FIELDS,
    UserError,
    command_line,
    data_kind,
    field_help,
    make_config,
)
from keras_sentiment.data.readers import FORMATS
from keras_sentiment.startup import start_tensorflow

# --- paths, checked before TensorFlow starts (seconds) ------------------------------------


def _check_model(model_dir: str) -> None:
    path = Path(model_dir)
    if path.suffix == ".keras" and not path.is_file():
        raise UserError(f"{path}: no such .keras file")
    if not path.exists():
        raise UserError(f"{path}: no such model folder")


def _check_file(spec: str, what: str = "") -> None:
    # Only what names a file or folder: a TFDS name, or gs://..., is for later stages to judge.
    if spec and "://" not in spec and data_kind(spec) == "missing":
        raise UserError(f"{what}{spec}: no such file or folder")


def _check_fit_paths(cfg) -> None:
    if not cfg.dataset.startswith("memory:"):
        _check_file(cfg.dataset)
    _check_file(cfg.test_data)
    _check_file(cfg.unlabeled, "unlabeled: ")
    if cfg.embeddings not in ("none", FIELDS["embeddings"].default):
        if not Path(cfg.embeddings).exists():
            raise UserError(
                f"{cfg.embeddings}: embeddings file not found (or use --embeddings "
                f"{FIELDS['embeddings'].default} or --embeddings none)"  # as text/embeddings.py
            )


# --- commands ------------------------------------------------------------------------------


def fit(args: argparse.Namespace) -> None:
    """Data -> preprocessing -> embeddings -> model -> training -> report -> SavedModel."""
    cfg = make_config({k: getattr(args, k, None) for k in FIELDS}, args.config)
    _check_fit_paths(cfg)
    start_tensorflow(run_an_op=cfg.strategy != "multi-worker")  # multi-worker goes first
    from keras_sentiment.api import fit as run_fit

    run_fit(cfg)


def evaluate(args: argparse.Namespace) -> None:
    """The test report of an exported model: its own test split, or the data given."""
    _check_model(args.model_dir)
    _check_file(args.test_data)
    _check_file(args.dataset)

    from keras_sentiment.data.sources import parse_label_map

    label_map = parse_label_map(args.label_map)  # a typo is said before TensorFlow starts
    start_tensorflow(serving=True)
    from keras_sentiment.api import evaluate as run_evaluate
    from keras_sentiment.reporting.evaluation import format_report
    from keras_sentiment.serving.prediction import resolve_version

    keras_file = Path(args.model_dir).suffix == ".keras"
    model = Path(args.model_dir) if keras_file else resolve_version(args.model_dir)
    data = args.test_data or args.dataset or None
    result = run_evaluate(model, data, args.split, args.max_test, label_map)
    result["model"] = str(model)
    result["data"] = data or "the test split the model was reported on"
    print(json.dumps(result) if args.json else format_report(result), flush=True)


def predict(args: argparse.Namespace) -> None:
    """One JSON line per text: label, label id, each class's probability (and the words)."""
    # With --server there is no MODEL_DIR: the first positional is a text.
    texts = [args.model_dir, *args.texts] if args.server and args.model_dir else args.texts
    # Bytes end to end: invalid UTF-8 on stdin or in argv reaches the model, not a decoder.
    data = [t.encode("utf-8", "surrogateescape") for t in texts] or [
        line.rstrip(b"\r\n") for line in sys.stdin.buffer
    ]
    shown = [t.decode("utf-8", "replace") for t in data]
    explain = args.explain or bool(args.html) or args.signature == "explain"
    if args.server:
        if not args.model_name:
            raise UserError("predict: --server needs --model-name (the name TF Serving serves)")
        from keras_sentiment.serving.client import rest_predict

        signature = "explain" if explain else args.signature
        records = rest_predict(args.server, args.model_name, shown, args.timeout, signature)
    else:
        if not args.model_dir:
            raise UserError("predict: give MODEL_DIR, or --server URL with --model-name")
        if args.signature not in ("serving_default", "explain"):
            raise UserError("predict: --signature is serving_default or explain for a local model")
        _check_model(args.model_dir)
        start_tensorflow(serving=True)
        from keras_sentiment.api import load
        from keras_sentiment.serving.client import to_records

        predictor = load(args.model_dir)
        records = to_records(predictor.explain(data) if explain else predictor(data))
    records = [{"text": text[:200], **record} for text, record in zip(shown, records)]
    for record in records:
        print(json.dumps(record, ensure_ascii=False), flush=True)
    if args.html:
        from keras_sentiment.reporting.explanation_page import write_explanation_page

        print(f"wrote: {write_explanation_page(args.html, records)}", file=sys.stderr)


def export(args: argparse.Namespace) -> None:
    """Export the latest finished run of a name again, as the next version (or, with
    --files-only, only write the server's files)."""
    cfg = make_config({k: getattr(args, k, None) for k in EXPORT_KEYS}, args.config)
    start_tensorflow(serving=args.batching_parameters)
    from keras_sentiment.api import export as run_export

    run_export(
        name=cfg.run_name,
        runs_dir=cfg.runs_dir,
        output_dir=cfg.output_dir,
        models_config=args.models_config,
        batching=args.batching_parameters,
        base_path_prefix=args.base_path_prefix,
        files_only=args.files_only,
    )


def runs(args: argparse.Namespace) -> None:
    """A table of exported runs, newest first, then unfinished runs; or two runs side by side."""
    from keras_sentiment.serving.listing import (
        compare_runs,
        find_run,
        format_runs,
        list_runs,
        unfinished_runs,
    )

    if args.compare:
        a, b = (find_run(Path(args.output_dir), spec) for spec in args.compare)
        print(compare_runs(a, b))
        return
    print(format_runs(list_runs(Path(args.output_dir))))
    unfinished = unfinished_runs(Path(args.runs_dir))
    if unfinished:
        print("\nnot exported (the same fit command resumes a stopped one):")
        print("\n".join(unfinished))


def score(args: argparse.Namespace) -> None:
    """Score files of reviews with Apache Beam's RunInference: predictions and errors, sharded."""
    if "://" not in args.model_dir:
        _check_model(args.model_dir)
    if "://" not in args.input and not Path(args.input).is_dir() and not glob.glob(args.input):
        raise UserError(f"{args.input}: no file matches")
    start_tensorflow(serving=True)  # the local runner scores in this process
    from keras_sentiment.api import score as run_score

    options = ("explain", "output_format", "input_format", "text_field", "id_field", "num_shards")
    settings = {k: getattr(args, k) for k in options}
    run_score(args.model_dir, args.input, args.output, **settings, pipeline_args=args.beam_args)


# --- argument parsing ------------------------------------------------------------------

EXPORT_KEYS = ("name", "output_dir", "runs_dir", "dataset")


def _add_config_flags(parser: argparse.ArgumentParser, keys=tuple(FIELDS)) -> None:
    parser.add_argument("--config", metavar="TOML", help="TOML file of config keys")
    for name in keys:
        field = FIELDS[name]
        flag = "--" + name.replace("_", "-")
        kind = type(field.default)
        help_text = field_help(name)
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag, type=kind, default=None, metavar=kind.__name__.upper(), help=help_text
            )


def _command(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    # allow_abbrev=False: `fit --epoch 1` must be an error, not a full-data fit.
    return sub.add_parser(name, allow_abbrev=False, help=help_text, description=help_text)


def _add_explain_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--explain",
        action="store_true",
        help="add each word the model read with its share of the score (integrated gradients)",
    )
    p.add_argument("--html", metavar="FILE", help="also write the explanations as one HTML page")
    p.add_argument(
        "--signature",
        default="serving_default",
        help="the signature to ask (default: serving_default; explain = --explain)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `python -m keras_sentiment` parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_sentiment",
        description="Train, evaluate, export and serve an LSTM sentiment classifier.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"keras_sentiment {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # each command's own parser, for its usage in errors
    _add_config_flags(_command(sub, "fit", "train, report on the test split, export a SavedModel"))

    p = _command(sub, "evaluate", "classification report of an exported model")
    p.add_argument("model_dir", help="saved_models/NAME[/VERSION], or a .keras file")
    p.add_argument("--dataset", default="", help="TFDS name, folder or review file to score")
    p.add_argument(
        "--test-data", default="", help="CSV, JSONL or Parquet file of labeled texts to score"
    )
    p.add_argument("--split", default="test", help="split of --dataset (default: test)")
    p.add_argument("--max-test", type=int, default=0, help="score at most N texts (0: all)")
    p.add_argument(
        "--label-map",
        default="",
        metavar="DATA=MODEL,...",
        help="the data's labels as the model's classes, e.g. 0=neg,1=pos",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = _command(sub, "predict", "label raw texts (arguments, or lines on stdin)")
    p.add_argument("model_dir", nargs="?", default="", help="saved_models/NAME[/VERSION]")
    p.add_argument("texts", nargs="*", help="texts to label (default: read lines from stdin)")
    p.add_argument("--server", default="", help="TF Serving REST address, http://HOST:8501")
    p.add_argument("--model-name", default="", help="model name on the server")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    _add_explain_flags(p)

    p = _command(sub, "runs", "list exported runs, newest first, or compare two")
    p.add_argument("--output-dir", default="saved_models", help="where the models are")
    p.add_argument("--runs-dir", default="runs", help="where the run folders are")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="NAME or NAME/VERSION twice")

    p = _command(sub, "export", "export the latest finished run again, as the next version")
    _add_config_flags(p, EXPORT_KEYS)  # the keys that name a run
    p.add_argument(
        "--models-config",
        action="store_true",
        help="also write OUTPUT_DIR/models.config listing every model there, for "
        "tensorflow_model_server --model_config_file",
    )
    p.add_argument(
        "--base-path-prefix",
        default="/models",
        help="where the server sees OUTPUT_DIR, for models.config (default: /models, the "
        "README's Docker mount; '' for this machine's absolute path)",
    )
    p.add_argument(
        "--batching-parameters",
        action="store_true",
        help="time the new version and write OUTPUT_DIR/NAME/batching_parameters.txt",
    )
    p.add_argument(
        "--files-only",
        action="store_true",
        help="export no new version: only write what --models-config and "
        "--batching-parameters ask for, for the models already in OUTPUT_DIR (the batching "
        "parameters of NAME's latest version)",
    )
    _add_score_command(sub)
    return parser


def _add_score_command(sub) -> None:
    p = _command(sub, "score", "score files of reviews in bulk with Apache Beam (RunInference)")
    p.epilog = SCORE_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model_dir", metavar="MODEL", help="saved_models/NAME[/VERSION]")
    p.add_argument("input", metavar="INPUT", help="files: JSONL, CSV, Parquet or text (a pattern)")
    p.add_argument("output", metavar="OUTPUT", help="a new or empty folder (a used one is refused)")
    p.add_argument("--explain", action="store_true", help="add words and their attributions")
    p.add_argument("--output-format", choices=("jsonl", "parquet"), default="jsonl")
    p.add_argument("--input-format", choices=FORMATS, default="auto", help="(default: by name)")
    p.add_argument("--text-field", default="text", help="JSON key or column of the text")
    p.add_argument("--id-field", default="id", help="JSON key or column of the id")
    p.add_argument("--num-shards", type=int, default=0, help="output files (0: the runner's)")


SCORE_HELP = """\
Writes OUTPUT/predictions-SSSSS-of-NNNNN.jsonl (or .parquet): one row per good input record with
id (the record's own id field, else FILE:LINE), label, label_id and probabilities; with
--explain, words and attributions too (when the model has an `explain` signature). Records read
as fit reads them: a quoted CSV field may span lines (the summary counts such records). Bad
records (not UTF-8, not JSON, no text, a text that is not a string, a CSV record with the wrong
number of fields, a quote never closed) go to OUTPUT/errors-*.jsonl with their source
(FILE:LINE or FILE:FIRST-LAST), the reason and the row; they never stop the run.
OUTPUT must be new or empty: a rerun into a used OUTPUT is refused, never mixed with it; a run
that fails leaves it as it was. OUTPUT/_SUCCESS (the row counts) is written last.

Other options go to Apache Beam, as --flag=value after the three paths. Default: the local
runner (FnApiRunner) in this process, with a progress line; on several worker processes:
  --direct_num_workers=2 --direct_running_mode=multi_processing
Elsewhere (the workers need this package with the beam extra; see the README), for example:
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
  --runner=FlinkRunner --flink_master=HOST:8081
  --runner=SparkRunner --spark_master_url=spark://HOST:7077
Needs the beam extra: pip install -e ".[beam]"."""


COMMANDS = {
    "fit": fit, "evaluate": evaluate, "predict": predict, "export": export, "runs": runs,
    "score": score,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command; user errors are one line on stderr and exit code 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # score passes what it does not know to Beam
    if extra and args.command == "predict" and not any(e.startswith("-") for e in extra):
        args.texts, extra = args.texts + extra, []  # texts after an option: --explain "text"
    if extra and args.command != "score":
        command = parser.commands[args.command]
        command.error(f"unrecognized arguments: {' '.join(extra)}{_near_flags(command, extra)}")
    args.beam_args = extra
    try:
        with command_line():
            COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so a closed pipe is caught below rather than at exit
    except BrokenPipeError:
        return _reader_gone()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        said = str(e) or "interrupted"
        print(f"\n{said}", file=sys.stderr)
        return 130
    return 0


def _reader_gone() -> int:
    """The reader of stdout stopped (`| head`): no traceback, as a shell tool would end.

    Python's recipe (the `signal` module's docs, "Note on SIGPIPE"): stdout goes to devnull, so
    the interpreter's last flush at exit finds nothing to write to the closed pipe.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a tool the signal ended


def _near_flags(command: argparse.ArgumentParser, extra: list[str]) -> str:
    """ " (did you mean --epochs?)" for flags that look like one of the command's, else ""."""
    known = [flag for action in command._actions for flag in action.option_strings]
    near = []
    for arg in extra:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--"):
            started = [k for k in known if k.startswith(flag)]  # a prefix: argparse's old guess
            near += started[:1] or difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
    return f" (did you mean {' or '.join(dict.fromkeys(near))}?)" if near else ""

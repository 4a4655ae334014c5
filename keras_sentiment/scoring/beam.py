"""Scoring in bulk: files of reviews through an exported model with Apache Beam's RunInference.

`score_files` builds one Beam pipeline: match INPUT, read each file's records with
`data/readers.py` (JSONL, CSV, Parquet or plain text: the reader `fit` and `evaluate` use), key
them by id, batch them, score them with the SavedModel's `serving_default` through
`SavedModelHandler`, and write sharded predictions and an `errors` output. The same pipeline
runs on the local runner (Beam's FnApiRunner: in this process by default, or on several worker
processes with `--direct_num_workers N --direct_running_mode multi_processing`) or on Dataflow,
Flink or Spark through Beam's own flags (`--runner=DataflowRunner`, ...).

OUTPUT must be new or empty (a used one is refused: a rerun never duplicates or mixes rows); it
gets predictions-SSSSS-of-NNNNN.jsonl (or .parquet), errors-SSSSS-of-NNNNN.jsonl and, last,
_SUCCESS with the row counts. A run that fails leaves OUTPUT as it found it. Scoring keeps no
module state: what a worker needs travels in the pipeline. Needs the `beam` extra:
`pip install -e ".[beam]"`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

from keras_sentiment.config import UserError
from keras_sentiment.data.readers import (
    FORMATS,
    Bad,
    bad,
    input_format,
    read_records,
    scoring_row,
)
from keras_sentiment.serving.client import to_records


@contextlib.contextmanager
def _quiet_beam() -> Iterator[None]:
    """Beam's notices below ERROR muted, its report of a Ctrl-C too (the traceback of the
    interrupt it logs on the way out), and no logging set-up left behind by them."""
    root, beam_logger = logging.getLogger(), logging.getLogger("apache_beam")
    handlers, level = list(root.handlers), beam_logger.level

    def not_beam(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "apache_beam" not in record.pathname

    def not_interrupt(record: logging.LogRecord) -> bool:
        return not (record.exc_info and issubclass(record.exc_info[0], KeyboardInterrupt))

    # A logger's filters see only what is logged on it: each of Beam's loggers gets its own.
    beam_loggers = [beam_logger] + [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("apache_beam.") and isinstance(logger, logging.Logger)
    ]
    root.addFilter(not_beam)  # Beam logs some notices through the root logger itself
    for logger in beam_loggers:
        logger.addFilter(not_interrupt)
    beam_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeFilter(not_beam)
        for logger in beam_loggers:
            logger.removeFilter(not_interrupt)
        beam_logger.setLevel(level)
        if not handlers:  # `logging.warning` gave the root logger a handler: take it back
            root.handlers = []


try:
    with _quiet_beam():
        import apache_beam as beam
        from apache_beam.io import fileio
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.metrics.metric import Metrics, MetricsFilter
        from apache_beam.ml.inference import base as inference
        from apache_beam.options.pipeline_options import (
            DirectOptions,
            PipelineOptions,
        )
except ImportError as e:
    if not (e.name or "").startswith("apache_beam"):
        raise
    raise UserError('score needs Apache Beam: pip install -e ".[beam]"') from None

BATCH_ROWS = 32768  # rows per RunInference batch, sorted by length: padding as in one sort
SLICE_ROWS = 2048  # rows per call of the predictor (batches of 512, two in flight)
EXPLAIN_ROWS = 32  # rows per call of the `explain` signature (memory grows with its steps)
NAMESPACE = "keras_sentiment"
COUNTS = ("read", "scored", "failed", "multiline")  # multiline: records over several lines
SHOWN_SOURCES = 5  # sources of records over several lines that each tally keeps


class Tally:
    """Rows counted where the work happens, in a worker process or this one.

    Each count goes to Beam's counter of the same name (the final counts: the runner gathers
    them from every worker) and, on the local runner, into a small file of this tally's own in
    `folder`, rewritten at most every half second and at the end of each file and batch. The
    progress line sums those files: a worker process's counters reach the runner only as its
    bundles finish. Pickled, a tally keeps only its folder; its counts start again where it
    lands.

    Args:
        folder: where the local runner's progress files go; None on other runners.
    """

    def __init__(self, folder: str | None = None):
        self.folder = folder
        self._counts: dict | None = None
        self._sources: list[str] = []
        self._name: str | None = None
        self._written = 0.0

    def __getstate__(self) -> dict:
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def add(self, name: str, n: int = 1, source: str = "") -> None:
        """Count `n` rows under `name` (one of COUNTS); `source` names a multiline record."""
        if not n:
            return
        Metrics.counter(NAMESPACE, name).inc(n)
        if self.folder is None:
            return
        if self._counts is None:
            self._counts = dict.fromkeys(COUNTS, 0)
        self._counts[name] += n
        if source and len(self._sources) < SHOWN_SOURCES:
            self._sources.append(source)
        if time.monotonic() - self._written >= 0.5:
            self.flush()

    def flush(self) -> None:
        """Write this tally's counts to its file now (a no-op off the local runner)."""
        if self.folder is None or self._counts is None:
            return
        if self._name is None:  # named where it counts: a worker process, a thread's DoFn
            self._name = f"{os.getpid()}-{uuid.uuid4().hex}.json"
        path = os.path.join(self.folder, self._name)
        with open(path + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), **self._counts, "sources": self._sources}, f)
        os.replace(path + ".tmp", path)  # the progress line never reads half a file
        self._written = time.monotonic()


def tallied(folder: str) -> dict:
    """The counts of every tally's file in `folder`, summed; `processes`: how many processes
    counted, `sources`: some records over several lines."""
    total: dict = {**dict.fromkeys(COUNTS, 0), "sources": []}
    pids = set()
    for path in glob.glob(os.path.join(folder, "*.json")):
        try:
            with open(path) as f:
                found = json.load(f)
        except (OSError, ValueError):  # replaced while we read it: the next look sees it
            continue
        pids.add(found["pid"])
        for name in COUNTS:
            total[name] += found[name]
        total["sources"] += found["sources"]
    total["sources"] = sorted(total["sources"])[:SHOWN_SOURCES]
    return {**total, "processes": len(pids)}


class ReadFile(beam.DoFn):
    """A matched file's rows as ((id, source), text); bad records on the `errors` output.

    Args:
        fmt: the input format (`auto`: by each file's name).
        fields: the text and id fields.
        tally: counts rows read, failed and over several lines.
    """

    def __init__(self, fmt: str, fields: tuple[str, str], tally: Tally):
        self.fmt, self.fields, self.tally = fmt, fields, tally

    def process(self, readable: fileio.ReadableFile) -> Iterator:
        path = readable.metadata.path
        fmt = input_format(path) if self.fmt == "auto" else self.fmt
        compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else None
        with readable.open(compression_type=compression) as f:
            for record in read_records(f, path, fmt, self.fields[:1], self.fields[1:]):
                self.tally.add("read", 1 + getattr(record, "skipped", 0))
                if record.lines > 1:
                    self.tally.add("multiline", 1, record.source)
                row = record if isinstance(record, Bad) else scoring_row(record, *self.fields)
                if isinstance(row, Bad):
                    self.tally.add("failed", 1 + row.skipped)
                    yield beam.pvalue.TaggedOutput("errors", row.as_dict())
                else:
                    yield row
        self.tally.flush()


# --- the model --------------------------------------------------------------------------------


class SavedModelHandler(inference.ModelHandler):
    """RunInference's model handler for an exported model: `tf.saved_model.load` and its
    `serving_default` signature, through `SavedModelPredictor` (length-sorted batches, two in
    flight). Beam's own TensorFlow handlers call `tf.keras.models.load_model`, which Keras 3
    refuses for SavedModel folders (apache/beam#30613).

    Args:
        model_dir: a version folder; a remote one (gs://...) is copied to local disk first.
        explain: add `words` and `attributions` from the model's `explain` signature.
        batch_rows: rows per batch that Beam's BatchElements hands to `run_inference`.
        tally: counts rows scored and failed (default: Beam's counters alone).
    """

    def __init__(
        self,
        model_dir: str,
        explain: bool = False,
        batch_rows: int = BATCH_ROWS,
        tally: Tally | None = None,
    ):
        super().__init__(min_batch_size=batch_rows, max_batch_size=batch_rows)
        self.model_dir, self.explain, self.tally = model_dir, explain, tally or Tally()

    def load_model(self):
        """One model per worker process (RunInference shares it among the process' threads)."""
        return _load(self.model_dir)

    def run_inference(self, batch: Sequence[bytes], model, inference_args=None) -> list:
        """Each text's record (label, label_id, probabilities), or {"error": why} alone. The
        batch is sorted by length and scored a slice at a time: the progress line moves."""
        texts = list(batch)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        records: list = [None] * len(texts)
        for start in range(0, len(order), SLICE_ROWS):
            part = order[start : start + SLICE_ROWS]
            scored = _score(model, [texts[i] for i in part])
            failed = sum("error" in record for record in scored)
            self.tally.add("scored", len(scored) - failed)
            self.tally.add("failed", failed)
            for i, record in zip(part, scored):
                records[i] = record
        self.tally.flush()
        if self.explain:  # only where the model has the signature: see `_has_explain`
            for record, (words, weights) in zip(records, _explanations(model, texts)):
                record.update(words=words, attributions=weights)
        return [inference.PredictionResult(text, record) for text, record in zip(texts, records)]


def _load(model_dir: str):
    from keras_sentiment.startup import start_tensorflow

    start_tensorflow(serving=True)  # a no-op where TensorFlow already runs
    from keras_sentiment.serving.prediction import SavedModelPredictor

    return SavedModelPredictor(_local_copy(model_dir))


def _score(model, texts: list[bytes]) -> list[dict]:
    """Each text's record; a batch the model refuses is scored a row at a time."""
    try:
        return to_records(model(texts))
    except Exception as e:
        if len(texts) > 1:
            return [r for text in texts for r in _score(model, [text])]
        return [{"error": f"the model failed: {type(e).__name__}: {str(e)[:300]}"}]


def _explanations(model, texts: list[bytes]) -> list[tuple[list[str], list[float]]]:
    """Each text's words and attributions (padding dropped), from `Predictor.explain`."""
    records = to_records(model.explain(texts, batch_size=EXPLAIN_ROWS))
    return [([w for w, _ in r["words"]], [a for _, a in r["words"]]) for r in records]


def _local_copy(model_dir: str) -> str:
    """A model folder on a remote file system (gs://, s3://, ...) copied to local disk."""
    if "://" not in model_dir:
        return model_dir
    local, base = tempfile.mkdtemp(prefix="keras_sentiment_model_"), model_dir.rstrip("/") + "/"
    for found in FileSystems.match([base + "**"])[0].metadata_list:
        target = os.path.join(local, found.path[len(base) :])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(found.path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
            with open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return local


# --- results ----------------------------------------------------------------------------------


def _results(item: tuple) -> Iterator:
    """(key, PredictionResult) -> the output record, or an error record on `errors`."""
    (key, source), result = item
    if "error" in result.inference:
        error = bad(source, result.inference["error"], result.example)
        yield beam.pvalue.TaggedOutput("errors", error.as_dict())
    else:
        yield {"id": key, **result.inference}


def _json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)


def _parquet_schema(class_names: list[str], explain: bool, known_words: bool):
    """The JSONL rows' fields as Parquet columns (`known_words` where the model counts them)."""
    import pyarrow as pa

    probabilities = pa.struct([(c, pa.float64()) for c in class_names])
    fields = [("id", pa.string()), ("label", pa.string()), ("label_id", pa.int32())]
    fields.append(("probabilities", probabilities))
    if known_words:
        fields.append(("known_words", pa.int32()))
    if explain:
        fields += [("words", pa.list_(pa.string())), ("attributions", pa.list_(pa.float64()))]
    return pa.schema(fields)


def _build(pipeline, inputs: str, output: str, handler: SavedModelHandler, settings: dict):
    """The pipeline: match, read, (spread,) score, write predictions and errors."""
    read = beam.ParDo(ReadFile(settings["input_format"], settings["fields"], handler.tally))
    files = pipeline | "Match" >> fileio.MatchFiles(inputs) | "Open" >> fileio.ReadMatches()
    rows = files | "Read" >> read.with_outputs("errors", main="rows")
    keyed = rows.rows
    if settings["spread"]:  # a file's rows over every worker, not only the one that read it
        keyed = keyed | "Spread" >> beam.Reshuffle()
    scored = keyed | "Score" >> inference.RunInference(inference.KeyedModelHandler(handler))
    results = scored | "Records" >> beam.FlatMap(_results).with_outputs("errors", main="records")
    prefix, shards = FileSystems.join(output, "predictions"), settings["num_shards"]
    if settings["output_format"] == "parquet":
        schema = _parquet_schema(settings["class_names"], handler.explain, settings["known_words"])
        lines = results.records | "ParquetRows" >> beam.Map(lambda r: {**r, "id": str(r["id"])})
        sink = beam.io.WriteToParquet(
            prefix, schema, file_name_suffix=".parquet", num_shards=shards
        )
    else:
        lines = results.records | "JsonLines" >> beam.Map(_json_line)
        sink = beam.io.WriteToText(prefix, ".jsonl", num_shards=shards)
    _ = lines | "Predictions" >> sink
    _ = (
        (rows.errors, results.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorLines" >> beam.Map(_json_line)
        | "Errors" >> beam.io.WriteToText(FileSystems.join(output, "errors"), ".jsonl")
    )


# --- running it -------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(folder: str | None) -> Iterator[None]:
    """While the local runner works, rows read, scored and failed so far, summed over the
    tallies of every process (`tallied`), on stderr: one line rewritten every second on a
    terminal, else a line every 10 seconds. Nothing without a folder (another runner)."""
    if folder is None:
        yield
        return
    stop, start, tty = threading.Event(), time.monotonic(), sys.stderr.isatty()

    def line() -> str:
        counts = tallied(folder)
        text = "score: {read:,} rows read, {scored:,} scored, {failed:,} failed".format(**counts)
        if counts["multiline"]:
            text += f", {counts['multiline']:,} over several lines"
        if counts["processes"] > 1:
            text += f", {counts['processes']} worker processes"
        return text + f" ({time.monotonic() - start:.0f} s)"

    def show() -> None:
        while not stop.wait(1.0 if tty else 10.0):
            print("\r" + line() if tty else line(), end="" if tty else "\n", file=sys.stderr)
            sys.stderr.flush()

    thread = threading.Thread(target=show, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if tty:  # the line's last state: every tally has written its final counts
            print("\r" + line(), file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stops_as_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM (`kill`, a scheduler stopping the job) raise KeyboardInterrupt with a
    message, so a stopped run restores OUTPUT, and Beam, which re-raises an exception from a
    step with the step's name added to its first argument, keeps it a KeyboardInterrupt (a bare
    one becomes a RuntimeError). Only in the main thread, and only over Python's own handlers;
    the old ones come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    said = {signal.SIGINT: "interrupted", signal.SIGTERM: "score: terminated"}

    def stop(signum, frame):
        raise KeyboardInterrupt(said[signum])

    own = (signal.default_int_handler, signal.SIG_DFL)
    previous = {n: signal.getsignal(n) for n in said}
    for number, handler in previous.items():
        if handler in own:
            signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _options(pipeline_args: Sequence[str]) -> tuple[PipelineOptions, int]:
    """Beam's options, and how many workers of the local runner score at once (0: another
    runner is named; 1: the FnApiRunner in this process)."""
    options = PipelineOptions(list(pipeline_args))
    known = options.get_all_options()
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(known)
    if unknown:
        raise UserError(f"unknown option --{sorted(unknown)[0]} (neither score's nor Beam's)")
    if known["runner"] not in (None, "DirectRunner", "FnApiRunner"):
        return options, 0  # Beam makes the runner the options name
    direct, workers = options.view_as(DirectOptions), 1
    if direct.direct_running_mode in ("multi_processing", "multi_threading"):
        n = direct.direct_num_workers
        workers = (os.cpu_count() or 1) if n == 0 else (n or 1)  # 0: a worker a core, as Beam
    return options, workers


def _local_runner(options: PipelineOptions, folder: str):
    """Beam's FnApiRunner, pinned: since 2.68 the DirectRunner tries Prism, a Go binary it
    downloads at run time. It reads --direct_num_workers itself. For multi_processing it would
    start each worker as `python -m apache_beam.runners.worker.sdk_worker_main`, whose log lines
    (INFO and up) land on our stderr: the same command is given here with its stderr in
    `folder/workers.log`, and the mode switched off so Beam keeps that command (the
    mode only picks the command: the workers are still separate processes)."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return FnApiRunner()
    direct.direct_running_mode = "in_memory"
    log = shlex.quote(os.path.join(folder, "workers.log"))
    command = f"{shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main"
    environment = SubprocessSDKEnvironment.from_command_string(f"{command} 2>>{log}")
    return FnApiRunner(default_environment=environment)


def _workers_said(folder: str | None) -> str:
    """The last lines the worker processes logged above WARNING (a traceback, say), for a run
    that failed."""
    path = os.path.join(folder or "", "workers.log")
    if not folder or not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        lines = [x.rstrip() for x in f if x.strip() and not x.startswith(("INFO:", "WARNING:"))]
    return "\n".join(lines[-15:])


def _match(pattern: str) -> list[str]:
    try:
        return [found.path for found in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # Beam's BeamIOError, or the file system's own, for no match
        return []


def _model_dir(model: str) -> str:
    """The version folder to score with: the one given, or the highest under a model's folder."""
    if "://" not in model:
        from keras_sentiment.serving.prediction import resolve_version

        return str(resolve_version(model))
    numbers = [p.split("/")[-2] for p in _match(FileSystems.join(model, "*", "saved_model.pb"))]
    versions = sorted(int(n) for n in numbers if n.isdigit())
    return FileSystems.join(model, str(versions[-1])) if versions else model


def _model_file(model_dir: str, *name: str) -> bytes:
    path = FileSystems.join(model_dir, *name)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def _has_explain(model_dir: str) -> bool:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(_model_file(model_dir, "saved_model.pb"))
    if any("explain" in graph.signature_def for graph in proto.meta_graphs):
        return True
    print(f"score: {model_dir} has no explain signature: no explanations", file=sys.stderr)
    return False


def _counts_words(model_dir: str) -> bool:
    """Whether `serving_default` answers `known_words` (not in exports made before the count)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(_model_file(model_dir, "saved_model.pb"))
    graphs = [graph.signature_def for graph in proto.meta_graphs]
    return any(
        "known_words" in g["serving_default"].outputs for g in graphs if "serving_default" in g
    )


def _class_names(model_dir: str) -> list[str]:
    try:
        return json.loads(_model_file(model_dir, "assets.extra", "metadata.json"))["class_names"]
    except Exception:  # no metadata, or not this package's
        raise UserError(f"{model_dir}: no class names in assets.extra/metadata.json") from None


def _check_paths(inputs: str, output: str) -> tuple[str, bool]:
    """The input pattern (a folder: all its files) once it matches, and whether OUTPUT exists
    already (it must be new or empty)."""
    if "://" not in inputs and os.path.isdir(inputs):
        inputs = os.path.join(inputs, "*")
    elif "://" not in inputs and not os.path.dirname(inputs):
        inputs = os.path.join(".", inputs)  # Beam's local glob matches nothing for `*.csv`
    if not _match(inputs):
        raise UserError(f"{inputs}: no file matches")
    if "://" in output:
        existed = FileSystems.exists(output)
        taken = _match(FileSystems.join(output, "*"))
    else:
        existed = os.path.exists(output)
        taken = os.path.isfile(output) or (os.path.isdir(output) and os.listdir(output))
    if taken:
        raise UserError(
            f"{output}: already exists and is not empty; score never writes into an earlier "
            "output (no duplicate rows, no mixed shards): remove it or give a new folder"
        )
    return inputs, existed


def _restore(output: str, existed: bool) -> None:
    """OUTPUT as a failed run found it: gone if it was new, else empty (no `beam-temp-*`, no
    half shards), so the same command can run again."""
    if "://" in output:
        found = _match(FileSystems.join(output, "**"))
        if found:
            FileSystems.delete(found)
    elif not existed:
        shutil.rmtree(output, ignore_errors=True)
    elif os.path.isdir(output):
        for entry in os.scandir(output):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.remove(entry.path)


def _counts(result) -> dict:
    """The rows counted, from the runner's metrics: every worker's counters, summed."""
    counts = dict.fromkeys(COUNTS, 0)
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        if counter.key.metric.name in counts:
            counts[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return counts


def score_files(
    model: str,
    inputs: str,
    output: str,
    *,
    explain: bool = False,
    output_format: str = "jsonl",
    input_format: str = "auto",
    text_field: str = "text",
    id_field: str = "id",
    num_shards: int = 0,
    pipeline_args: Sequence[str] = (),
) -> dict:
    """Score every row of the files matching `inputs` with RunInference: see `ks.score`."""
    start = time.perf_counter()
    if output_format not in ("jsonl", "parquet") or input_format not in FORMATS:
        raise UserError(f"score: output as jsonl or parquet, input as one of {', '.join(FORMATS)}")
    with _quiet_beam():
        options, workers = _options(pipeline_args)
        model_dir, (inputs, existed) = _model_dir(model), _check_paths(inputs, output)
        settings = dict(input_format=input_format, fields=(text_field, id_field))
        settings.update(spread=workers != 1, num_shards=num_shards, output_format=output_format)
        if output_format == "parquet":
            settings["class_names"] = _class_names(model_dir)
            settings["known_words"] = _counts_words(model_dir)
        explain = explain and _has_explain(model_dir)
        folder = tempfile.mkdtemp(prefix="keras_sentiment_score_") if workers else None
        runner = _local_runner(options, folder) if folder else None
        try:
            handler = SavedModelHandler(model_dir, explain, tally=Tally(folder))
            pipeline = beam.Pipeline(runner=runner, options=options)
            _build(pipeline, inputs, output, handler, settings)
            with _progress(folder), _stops_as_interrupts():
                result = pipeline.run()
                result.wait_until_finish()
            counts = {**_counts(result), "output": output}
            counts["seconds"] = round(time.perf_counter() - start, 1)
            sources = tallied(folder)["sources"] if folder else []
            done = {**counts, "model": model_dir, "input": inputs}
            if sources:
                done["multiline_sources"] = sources
            with FileSystems.create(FileSystems.join(output, "_SUCCESS")) as f:
                f.write(json.dumps(done).encode())  # last: the run is complete
        except BaseException as e:
            _restore(output, existed)
            said = "" if isinstance(e, KeyboardInterrupt) else _workers_said(folder)
            if said:
                print(f"score: the worker processes' last lines:\n{said}", file=sys.stderr)
            was = "an empty folder" if existed else "not there"
            print(
                f"score: stopped; {output} is left as it was ({was}): the same command runs again",
                file=sys.stderr,
                flush=True,
            )
            raise
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    line = "score: {read:,} rows read, {scored:,} scored, {failed:,} failed in {seconds} s"
    line = line.format(**counts)
    if counts["multiline"]:
        line += f" ({counts['multiline']:,} over several lines: a quoted field with line breaks"
        line += f", e.g. {sources[0]})" if sources else ")"
    print(line, "->", FileSystems.join(output, "*"), flush=True)
    return counts

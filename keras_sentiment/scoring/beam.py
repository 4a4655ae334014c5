"""Scoring in bulk: files of reviews through an exported model with Apache Beam's RunInference.

`score_files` builds one Beam pipeline: match INPUT, read each file's rows (JSONL, CSV, Parquet
or plain text), key them by id, batch them, score them with the SavedModel's `serving_default`
through `SavedModelHandler`, and write sharded predictions and an `errors` output. The same
pipeline runs on the local runner (Beam's FnApiRunner, in this process: the default) or on
Dataflow, Flink or Spark through Beam's own flags (`--runner=DataflowRunner`, ...).

OUTPUT must be new or empty (a used one is refused: a rerun never duplicates or mixes rows); it
gets predictions-SSSSS-of-NNNNN.jsonl (or .parquet), errors-SSSSS-of-NNNNN.jsonl and, last,
_SUCCESS with the row counts. Needs the `beam` extra: `pip install -e ".[beam]"`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from keras_sentiment.config import UserError
from keras_sentiment.data import readers as review_files
from keras_sentiment.data.readers import FORMATS, bad_row, read_rows
from keras_sentiment.serving.client import to_records


@contextlib.contextmanager
def _quiet_beam() -> Iterator[None]:
    """Beam's notices below ERROR muted, and no logging set-up left behind by them."""
    root, beam_logger = logging.getLogger(), logging.getLogger("apache_beam")
    handlers, level = list(root.handlers), beam_logger.level

    def not_beam(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "apache_beam" not in record.pathname

    root.addFilter(not_beam)  # Beam logs some notices through the root logger itself
    beam_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeFilter(not_beam)
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
        from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as e:
    if not (e.name or "").startswith("apache_beam"):
        raise
    raise UserError('score needs Apache Beam: pip install -e ".[beam]"') from None

BATCH_ROWS = 32768  # rows per RunInference batch, sorted by length: padding as in one sort
SLICE_ROWS = 2048  # rows per call of the predictor (batches of 512, two in flight)
EXPLAIN_ROWS = 32  # rows per call of the `explain` signature (memory grows with its steps)
NAMESPACE = "keras_sentiment"
_COUNTERS = {k: Metrics.counter(NAMESPACE, k) for k in ("read", "scored", "failed")}
_SEEN = dict.fromkeys(_COUNTERS, 0)  # this process's rows so far, for the progress line
_LOADING: dict[str, Future] = {}  # models loading in this process for the local runner


def _count(name: str, n: int = 1) -> None:
    _COUNTERS[name].inc(n)
    _SEEN[name] += n


def _read_file(readable: fileio.ReadableFile, fmt: str, fields: tuple[str, str]) -> Iterator:
    """A matched file's rows as ((id, source), text); bad rows on the `errors` output."""
    path = readable.metadata.path
    fmt = review_files.input_format(path) if fmt == "auto" else fmt
    compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else None
    with readable.open(compression_type=compression) as f:
        for row in read_rows(f, path, fmt, fields):
            _count("read")
            if isinstance(row, dict):
                _count("failed")
                yield beam.pvalue.TaggedOutput("errors", row)
            else:
                yield row


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
    """

    def __init__(self, model_dir: str, explain: bool = False, batch_rows: int = BATCH_ROWS):
        super().__init__(min_batch_size=batch_rows, max_batch_size=batch_rows)
        self.model_dir, self.explain = model_dir, explain

    def load_model(self):
        """One model per worker process (RunInference shares it among the process' threads);
        on the local runner, the one `score_files` began to load while Beam started."""
        loading = _LOADING.pop(self.model_dir, None)
        return loading.result() if loading else _load(self.model_dir)

    def run_inference(self, batch: Sequence[bytes], model, inference_args=None) -> list:
        """Each text's record (label, label_id, probabilities), or {"error": why} alone. The
        batch is sorted by length and scored a slice at a time: the progress line moves."""
        texts = list(batch)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        records: list = [None] * len(texts)
        for start in range(0, len(order), SLICE_ROWS):
            part = order[start : start + SLICE_ROWS]
            for i, record in zip(part, _score(model, [texts[i] for i in part])):
                records[i] = record
        if self.explain:  # only where the model has the signature: see `_has_explain`
            for record, (words, weights) in zip(records, _explanations(model, texts)):
                record.update(words=words, attributions=weights)
        return [inference.PredictionResult(text, record) for text, record in zip(texts, records)]


def _load(model_dir: str):
    from keras_sentiment.startup import start_tensorflow

    start_tensorflow(serving=True)  # a no-op where TensorFlow already runs
    from keras_sentiment.serving.prediction import SavedModelPredictor

    return SavedModelPredictor(_local_copy(model_dir))


def _score(model, texts: list[bytes], counted: bool = True) -> list[dict]:
    """Each text's record; a batch the model refuses is scored a row at a time."""
    try:
        records = to_records(model(texts))
    except Exception as e:
        records = [{"error": f"the model failed: {type(e).__name__}: {str(e)[:300]}"}]
        if len(texts) > 1:
            records = [r for text in texts for r in _score(model, [text], counted=False)]
    failed = sum("error" in record for record in records)
    if counted:
        _count("scored", len(records) - failed)
        _count("failed", failed)
    return records


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
        yield beam.pvalue.TaggedOutput(
            "errors", bad_row(result.example, source, result.inference["error"])
        )
    else:
        yield {"id": key, **result.inference}


def _json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)


def _parquet_schema(class_names: list[str], explain: bool):
    import pyarrow as pa

    probabilities = pa.struct([(c, pa.float64()) for c in class_names])
    fields = [("id", pa.string()), ("label", pa.string()), ("label_id", pa.int32())]
    fields.append(("probabilities", probabilities))
    if explain:
        fields += [("words", pa.list_(pa.string())), ("attributions", pa.list_(pa.float64()))]
    return pa.schema(fields)


def _build(pipeline, inputs: str, output: str, handler: SavedModelHandler, settings: dict):
    """The pipeline: match, read, (spread,) score, write predictions and errors."""
    read = beam.FlatMap(_read_file, settings["input_format"], settings["fields"])
    files = pipeline | "Match" >> fileio.MatchFiles(inputs) | "Open" >> fileio.ReadMatches()
    rows = files | "Read" >> read.with_outputs("errors", main="rows")
    keyed = rows.rows
    if settings["spread"]:  # a big file's rows over every worker, not the one that read it
        keyed = keyed | "Spread" >> beam.Reshuffle()
    scored = keyed | "Score" >> inference.RunInference(inference.KeyedModelHandler(handler))
    results = scored | "Records" >> beam.FlatMap(_results).with_outputs("errors", main="records")
    prefix, shards = FileSystems.join(output, "predictions"), settings["num_shards"]
    if settings["output_format"] == "parquet":
        schema = _parquet_schema(settings["class_names"], handler.explain)
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
def _progress(shown: bool) -> Iterator[None]:
    """Rows read, scored and failed on stderr while the local runner works in this process:
    one line rewritten every second on a terminal, else a line every 10 seconds."""
    _SEEN.update(dict.fromkeys(_SEEN, 0))
    stop, start, tty = threading.Event(), time.monotonic(), sys.stderr.isatty()

    def show() -> None:
        while not stop.wait(1.0 if tty else 10.0):
            line = "score: {read:,} rows read, {scored:,} scored, {failed:,} failed".format(**_SEEN)
            line += f" ({time.monotonic() - start:.0f} s)"
            print(
                "\r" + line if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True
            )

    thread = threading.Thread(target=show, daemon=True)
    if shown:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if shown:
            thread.join()
            print("", end="\n" if tty else "", file=sys.stderr)


def _options(pipeline_args: Sequence[str]) -> tuple[PipelineOptions, Any, bool]:
    """Beam's options, the runner (FnApiRunner unless one is named) and whether it is local."""
    options = PipelineOptions(list(pipeline_args))
    known = options.get_all_options()
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(known)
    if unknown:
        raise UserError(f"unknown option --{sorted(unknown)[0]} (neither score's nor Beam's)")
    if known["runner"] not in (None, "DirectRunner", "FnApiRunner"):
        return options, None, False  # Beam makes the runner the options name
    # Pinned: since 2.68 the DirectRunner tries Prism, a Go binary it downloads at run time.
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return options, FnApiRunner(), True


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


def _class_names(model_dir: str) -> list[str]:
    try:
        return json.loads(_model_file(model_dir, "assets.extra", "metadata.json"))["class_names"]
    except Exception:  # no metadata, or not this package's
        raise UserError(f"{model_dir}: no class names in assets.extra/metadata.json") from None


def _check_paths(inputs: str, output: str) -> str:
    """The input pattern (a folder: all its files) once it matches; OUTPUT must be new or empty."""
    if "://" not in inputs and os.path.isdir(inputs):
        inputs = os.path.join(inputs, "*")
    if not _match(inputs):
        raise UserError(f"{inputs}: no file matches")
    if "://" in output:
        taken = _match(FileSystems.join(output, "*"))
    else:
        taken = os.path.isfile(output) or (os.path.isdir(output) and os.listdir(output))
    if taken:
        raise UserError(
            f"{output}: already exists and is not empty; score never writes into an earlier "
            "output (no duplicate rows, no mixed shards): remove it or give a new folder"
        )
    return inputs


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
        options, runner, local = _options(pipeline_args)
        model_dir, inputs = _model_dir(model), _check_paths(inputs, output)
        settings = dict(input_format=input_format, fields=(text_field, id_field))
        settings.update(spread=not local, num_shards=num_shards, output_format=output_format)
        if output_format == "parquet":
            settings["class_names"] = _class_names(model_dir)
        if local:  # the model loads while Beam starts
            _LOADING[model_dir] = ThreadPoolExecutor(1).submit(_load, model_dir)
        handler = SavedModelHandler(model_dir, explain and _has_explain(model_dir))
        pipeline = beam.Pipeline(runner=runner, options=options)
        _build(pipeline, inputs, output, handler, settings)
        with _progress(local):
            result = pipeline.run()
            result.wait_until_finish()
    counts = {"read": 0, "scored": 0, "failed": 0}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        if counter.key.metric.name in counts:
            counts[counter.key.metric.name] += counter.committed or counter.attempted or 0
    counts.update(output=output, seconds=round(time.perf_counter() - start, 1))
    with FileSystems.create(FileSystems.join(output, "_SUCCESS")) as f:
        f.write(json.dumps({**counts, "model": model_dir, "input": inputs}).encode())
    line = "score: {read:,} rows read, {scored:,} scored, {failed:,} failed in {seconds} s"
    print(line.format(**counts), "->", FileSystems.join(output, "*"), flush=True)
    return counts

"""SavedModel: a raw-text SavedModel in TF Serving's layout, versioned and written atomically.

`export_saved_model` writes `saved_models/NAME/VERSION/` through a temporary folder and a
rename, with `assets.extra/` (the version's record, model card, warm-up requests) beside the
graph that `graph.py` builds. `served_before` says how a new version compares with the one TF
Serving served until then.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from keras_sentiment.config import UserError, spelled
from keras_sentiment.data.splits import load_test
from keras_sentiment.files import kill_point, write_atomic
from keras_sentiment.network.mix import Mix
from keras_sentiment.network.model import load_run_model
from keras_sentiment.network.ngrams import WORDS, NgramMix
from keras_sentiment.network.serving_network import ServingNetwork
from keras_sentiment.records import (
    ExportRecord,
    RunRecord,
    config_json,
    read_metadata,
    read_summary,
    versions,
    write_metadata,
)
from keras_sentiment.reporting.model_card import card_explanations, model_card, strongest_ngrams
from keras_sentiment.serving.explanation import explain_function
from keras_sentiment.serving.graph import (
    WARMUP_TEXTS,
    ServingMix,
    batching_parameters,
    serving_function,
    write_warmup,
)
from keras_sentiment.text.preprocessing import TextPreprocessor


def export_saved_model(
    pre: TextPreprocessor,
    model: keras.Model,
    class_names: list[str],
    base_dir: str | Path,
    record: RunRecord,
    version: int | None = None,
    mix: Mix | None = None,
) -> Path:
    """Write `base_dir/VERSION/` (default: the next free); a server never sees it half-written.

    `assets.extra/` holds the version's record (metadata.json, an `ExportRecord` of `record`),
    its model card, the run's config and test report (see `version_files`) and the warm-up
    requests. A run exports under its own version. If that folder already holds this run's
    export (a kill came after the rename), it is kept as it is; if another exporter took the
    number, the next free one is used.
    """
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    if version is not None and _exported_by(base / str(version), record.run_dir):
        return base / str(version)
    _remove_stale_temporaries(base)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".tmp-{_host()}-{os.getpid()}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server's user
        explain = _write_graph(tmp, pre, model, class_names, mix)
        shown = explanations(explain, record.reviews_to_explain, mix, pre.vocabulary)
        extra = tmp / "assets.extra"
        extra.mkdir()
        write_warmup(extra / "tf_serving_warmup_requests", WARMUP_TEXTS)
        candidate = version or next_version(base)
        while True:  # another exporter may take a number between our look and our rename
            path = str(base / str(candidate))
            metadata = ExportRecord.of_run(record, version=candidate, path=path, explanations=shown)
            write_metadata(tmp, metadata)
            for name, text in version_files(metadata).items():
                write_atomic(extra / name, text)
            kill_point("export-written")
            try:
                # Atomic on one file system; refused when the target exists and is not
                # empty, which every version folder is.
                os.rename(tmp, base / str(candidate))
                return base / str(candidate)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                candidate = next_version(base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_graph(
    folder: Path,
    pre: TextPreprocessor,
    model: keras.Model,
    class_names: list[str],
    mix: Mix | None,
):
    """The SavedModel itself: the served network and mix, and their signatures.

    Returns the `explain` function it exported, for the model card's explanations.
    """
    if isinstance(mix, NgramMix):
        raise UserError(
            "this run's model mixes its parts the way models did before the stacked mix, "
            "which the served graph no longer runs: its existing SavedModels still serve; fit "
            "it again to export it with this version"
        )
    network = ServingNetwork(model)  # the served graph: no cuDNN, no XLA, no Keras loop
    archive = keras.export.ExportArchive()
    archive.track(pre)
    archive.track(network)
    ngrams = ServingMix(mix) if mix is not None else None
    if ngrams is not None:
        archive.track(ngrams)
    # Each endpoint from its Python function and input signature: a tf.function endpoint is
    # traced twice, in and out of the save context, and both traces are written, a larger
    # graph that loads slower (benchmarks/README.md, "Choices in the code").
    spec = [tf.TensorSpec([None], tf.string, name="text")]
    serve = serving_function(pre, network, class_names, ngrams).python_function
    archive.add_endpoint("serving_default", serve, input_signature=spec)
    explain = explain_function(pre, network, class_names, ngrams).python_function
    explain = archive.add_endpoint("explain", explain, input_signature=spec)
    archive.write_out(str(folder), verbose=False)
    return explain


def explanations(explain, reviews: list[dict], mix: Mix | None, vocabulary: list[str]):
    """What the model card shows of explanations, computed by the exported `explain` signature:
    the n-gram branch's strongest n-grams and the three test reviews `reviews_to_explain`
    picked, explained (see `model_card.strongest_ngrams` and `model_card.card_explanations`).

    Returns:
        `ngrams` (absent without the branch) and `reviews` (absent without reviews).
    """
    found: dict = {}
    member = next((m for m in mix.members if m.kind == WORDS), None) if mix else None
    if member is not None:  # a char n-gram is kept as its fingerprint only: not shown
        found["ngrams"] = strongest_ngrams(
            member.keys.numpy(), member.coefficients.numpy(), vocabulary
        )
    if reviews:
        texts = [r["text"].encode("utf-8", "surrogatepass") for r in reviews]
        out = {k: v.numpy() for k, v in explain(tf.constant(texts)).items()}
        found["reviews"] = card_explanations(reviews, out)
    return found


def _exported_by(version_dir: Path, run_dir: str) -> bool:
    if not run_dir or not (version_dir / "saved_model.pb").is_file():
        return False
    meta = read_metadata(version_dir)
    return meta is not None and meta.run_dir == run_dir


def next_version(base: Path) -> int:
    """One more than the highest integer version folder (1 for the first)."""
    return max(versions(base), default=0) + 1


def served_before(base: Path, version: int, record: RunRecord) -> list[str]:
    """Lines saying how `version` (made by the run `record`) compares with the version TF
    Serving served until now.

    Scores are only compared on the same test split; a lower score is said loudly, with the
    way back, since TF Serving serves the highest version as soon as it appears.
    """
    older = [v for v in versions(base) if v < version]
    if not older or version != max(versions(base)):
        return []
    previous = older[-1]
    before = read_metadata(base / str(previous))
    if before is None or before.metrics.accuracy is None or record.metrics.accuracy is None:
        return []  # no readable record, or no score in it
    old, new = before.metrics.accuracy, record.metrics.accuracy
    way_back = (
        f"to serve version {previous} again, remove {base / str(version)} (its run stays in "
        f"{record.run_dir or 'runs/'}); runs that should not replace it need a name "
        f"of their own ({spelled('name')})"
    )
    differs = _test_split_differences(before, record)
    if differs:
        return [
            f"note: TF Serving now serves version {version} instead of {previous}, which was "
            f"scored on another test split ({differs}): the two accuracies are not comparable",
            way_back,
        ]
    if new < old:
        return [
            f"warning: version {version} scores {new:.4f} on the test split, below version "
            f"{previous}'s {old:.4f}, and TF Serving now serves it",
            way_back,
        ]
    return [f"version {version}: {new:.4f} on the test split; version {previous} had {old:.4f}"]


def _test_split_differences(before: RunRecord, after: RunRecord) -> str:
    """What differs between two versions' test splits, e.g. "max_test 2000 vs 0", or ""."""
    keys = ("dataset", "test_data", "max_test", "text_column", "label_column")
    old, new = before.config, after.config
    found = [f"{k} {old.get(k)!r} vs {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    # The seed picks the test texts only where the test split is cut or held out of the data.
    held_out = "held out" in after.dataset.source
    if (held_out or new.get("max_test")) and old.get("seed") != new.get("seed"):
        found.append(f"seed {old.get('seed')} vs {new.get('seed')}")
    sizes = before.dataset.test, after.dataset.test
    if sizes[0] != sizes[1]:
        found.append(f"{sizes[0]} vs {sizes[1]} test texts")
    return ", ".join(found)


def _host() -> str:
    # Temporary names carry host and PID: on storage shared by hosts a PID alone means nothing.
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _remove_stale_temporaries(base: Path) -> None:
    # Left by an exporter that was killed: only this host's, and only if its process is gone.
    for tmp in base.glob(".tmp-*"):
        _, host, pid, _ = (tmp.name.split("-") + ["", "", ""])[:4]
        if host == _host() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def export_run(run_dir: Path, output_dir: str | Path) -> Path:
    """Export a finished run's model again, as the next version of its name.

    Args:
        run_dir: a finished run folder, `runs/NAME/VERSION`.
        output_dir: the folder of served models; the version goes to `output_dir/NAME/`.

    Returns:
        The new version folder.
    """
    record = read_summary(run_dir)
    if record is None:
        raise UserError(f"export: {run_dir} is not a finished run (no readable summary.json)")
    pre, model, mix = load_run_model(run_dir)
    base = Path(output_dir) / run_dir.parent.name
    return export_saved_model(pre, model, record.class_names, base, record, mix=mix)


def export_again(
    run_dir: Path,
    output_dir: str | Path,
    models_config: bool = False,
    batching: bool = False,
    base_path_prefix: str = "/models",
) -> Path:
    """`ks.export` and `export`: the run's model as the next version, and the server's files."""
    if not (run_dir / "summary.json").is_file():
        raise UserError(f"export: {run_dir} is not a finished run (no summary.json)")
    path = export_run(run_dir, output_dir)
    print(f"wrote: {path}  (the model of {run_dir})")
    server_files(path, output_dir, models_config, batching, base_path_prefix)
    for line in served_before(path.parent, int(path.name), read_summary(run_dir)):
        print(line, flush=True)
    return path


def server_files(
    version_dir: Path | None,
    output_dir: str | Path,
    models_config: bool = False,
    batching: bool = False,
    base_path_prefix: str = "/models",
) -> Path | None:
    """The files TF Serving reads beside the models, for versions already exported:
    `NAME/batching_parameters.txt` from timing `version_dir`, and `models.config`.

    Args:
        version_dir: the version to time (`saved_models/NAME/VERSION`, the latest of its
            name); None without `batching`.
        output_dir: the folder of served models.
        models_config: write `output_dir/models.config` listing every model there.
        batching: time `version_dir` and write `output_dir/NAME/batching_parameters.txt`.
        base_path_prefix: where the server sees `output_dir`, for `models.config`.

    Returns:
        The file written last (`models.config` when asked), or None.
    """
    written = None
    if batching:
        record = read_metadata(version_dir) or ExportRecord()
        try:
            cfg = record.settings()
            texts = list(load_test(cfg)[0].texts[:1024])
        except UserError:  # trained in memory: time it on the warm-up reviews
            texts = [t.encode() for t in WARMUP_TEXTS] * 342
        written = version_dir.parent / "batching_parameters.txt"
        write_atomic(written, batching_parameters(version_dir, texts))
        print(f"wrote: {written}  (version {version_dir.name}, measured on {len(texts)} texts)")
    if models_config:
        written = write_models_config(output_dir, base_path_prefix)
        print(f"wrote: {written}")
    return written


def version_files(record: ExportRecord) -> dict[str, str]:
    """What assets.extra/ holds beside metadata.json, the same for `fit` and `export`: the
    run's config, its test report and the version's model card."""
    return {
        "config.json": config_json(record.config),
        "report.json": json.dumps(record.test_report, indent=2),
        "MODEL_CARD.md": model_card(record),
    }


def write_models_config(output_dir: str | Path, base_path_prefix: str = "/models") -> Path:
    """`output_dir/models.config`: every model under `output_dir`, as TF Serving sees them.

    Args:
        output_dir: the folder of served models, mounted into the server.
        base_path_prefix: where the server sees `output_dir` ("/models" in the README's
            Docker command); "" for this machine's absolute paths.

    Returns:
        The file written.
    """
    output_dir = Path(output_dir)
    names = sorted(p.name for p in output_dir.iterdir() if p.is_dir() and versions(p))
    where = base_path_prefix.rstrip("/") if base_path_prefix else str(output_dir.resolve())
    path = output_dir / "models.config"
    write_atomic(path, models_config({name: f"{where}/{name}" for name in names}))
    return path


def models_config(models: dict[str, str]) -> str:
    """ModelServerConfig text for TF Serving's --model_config_file: name -> base path."""
    entries = "".join(
        f"  config {{\n    name: '{name}'\n    base_path: '{path}'\n"
        f"    model_platform: 'tensorflow'\n  }}\n"
        for name, path in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"

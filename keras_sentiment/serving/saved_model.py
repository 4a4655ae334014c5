"""SavedModel: a raw-text SavedModel in TF Serving's layout, versioned and written atomically.

`export_saved_model` writes `saved_models/NAME/VERSION/` through a temporary folder and a
rename, with `assets.extra/` (metadata, model card, warm-up requests) beside the graph that
`graph.py` builds. `served_before` says how a new version compares with the one TF Serving
served until then.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.config import FIELDS, Config, UserError, spelled
from keras_sentiment.data.splits import load_test
from keras_sentiment.files import kill_point, save_json, write_atomic
from keras_sentiment.network.mix import Mix
from keras_sentiment.network.ngrams import WORDS, NgramMix
from keras_sentiment.network.serving_network import ServingNetwork
from keras_sentiment.records import read_metadata, versions
from keras_sentiment.reporting.evaluation import shorten
from keras_sentiment.reporting.model_card import model_card
from keras_sentiment.serving.explanation import explain_function
from keras_sentiment.serving.graph import (
    WARMUP_TEXTS,
    ServingMix,
    batching_parameters,
    serving_function,
    write_warmup,
)
from keras_sentiment.text.preprocessing import TextPreprocessor
from keras_sentiment.training.runs import load_run_model


def export_saved_model(
    pre: TextPreprocessor,
    model: keras.Model,
    class_names: list[str],
    base_dir: str | Path,
    metadata: dict,
    extra_files: dict[str, str | Callable[[dict], str]] | None = None,
    version: int | None = None,
    mix: Mix | None = None,
) -> Path:
    """Write `base_dir/VERSION/` (default: the next free); a server never sees it half-written.

    A run exports under its own version. If that folder already holds this run's export
    (a kill came after the rename), it is kept as it is; if another exporter took the
    number, the next free one is used.
    """
    base = Path(base_dir)
    base.mkdir(parents=True, exist_ok=True)
    if version is not None and _exported_by(base / str(version), metadata.get("run_dir")):
        return base / str(version)
    _remove_stale_temporaries(base)
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".tmp-{_host()}-{os.getpid()}-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server's user
        explain = _write_graph(tmp, pre, model, class_names, mix)
        reviews = metadata.get("reviews_to_explain", [])
        metadata = {
            **metadata,
            "explanations": card_explanations(explain, reviews, mix, pre.vocabulary),
        }
        extra = tmp / "assets.extra"
        extra.mkdir()
        write_warmup(extra / "tf_serving_warmup_requests", WARMUP_TEXTS)
        candidate = version or next_version(base)
        while True:  # another exporter may take a number between our look and our rename
            metadata = {**metadata, "version": candidate, "path": str(base / str(candidate))}
            save_json(extra / "metadata.json", metadata)
            # A callable gets the final metadata: the model card names its version.
            for name, text in (extra_files or {}).items():
                write_atomic(extra / name, text(metadata) if callable(text) else text)
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
    # traced twice, in and out of the save context, and both traces are written (about 1.9x
    # the graph, and the time to load it).
    spec = [tf.TensorSpec([None], tf.string, name="text")]
    serve = serving_function(pre, network, class_names, ngrams).python_function
    archive.add_endpoint("serving_default", serve, input_signature=spec)
    explain = explain_function(pre, network, class_names, ngrams).python_function
    explain = archive.add_endpoint("explain", explain, input_signature=spec)
    archive.write_out(str(folder), verbose=False)
    return explain


def strongest_ngrams(mix: Mix, vocabulary: list[str], count: int = 20) -> dict[str, list]:
    """The word n-gram member's `count` strongest n-grams each way, as words.

    Returns:
        `positive` and `negative`: [words, coefficient] pairs, strongest first; a positive
        coefficient pushes towards the second class. Empty without the member (a char
        n-gram is kept as its fingerprint only).
    """
    member = next((m for m in mix.members if m.kind == WORDS), None)
    if member is None:
        return {"positive": [], "negative": []}
    keys, coefficients = np.asarray(member.keys), np.asarray(member.coefficients)
    order = np.argsort(coefficients, kind="stable")

    def words(key: int) -> str:
        ids = []
        while key:
            key, i = divmod(key, member.vocabulary_size)
            ids.append(vocabulary[i])
        return " ".join(reversed(ids))

    def pick(indices, sign: int) -> list:
        kept = [i for i in indices[:count] if sign * coefficients[i] > 0]
        return [[words(int(keys[i])), round(float(coefficients[i]), 4)] for i in kept]

    return {"positive": pick(order[::-1], 1), "negative": pick(order, -1)}


def card_explanations(
    explain, reviews: list[dict], mix: Mix | None, vocabulary: list[str]
) -> dict:
    """What the model card shows of explanations: the n-gram branch's strongest n-grams and
    the three test reviews `model_card.reviews_to_explain` picked, explained by `explain`.

    Returns:
        `ngrams` (see `strongest_ngrams`; absent without the branch) and `reviews`: each
        review's kind, labels, probability, scores, the sum of its shares, its 8 strongest
        words for the label and 5 against it, and its text shortened.
    """
    found: dict = {"ngrams": strongest_ngrams(mix, vocabulary)} if mix is not None else {}
    if not reviews:
        return found
    texts = [r["text"].encode("utf-8", "surrogatepass") for r in reviews]
    out = {k: v.numpy() for k, v in explain(tf.constant(texts)).items()}
    found["reviews"] = []
    for i, review in enumerate(reviews):
        tokens = [t.decode("utf-8", "replace") for t in out["tokens"][i]]
        words = sorted(
            ((t, float(a)) for t, a in zip(tokens, out["attributions"][i]) if t),
            key=lambda word: -word[1],
        )
        found["reviews"].append(
            {
                **review,
                "text": shorten(review["text"]),
                "predicted": out["label"][i].decode("utf-8", "replace"),
                "probability": float(out["probabilities"][i].max()),
                "score": float(out["score"][i]),
                "baseline_score": float(out["baseline_score"][i]),
                "sum": float(out["attributions"][i].sum()),
                "for": [[w, round(a, 3)] for w, a in words[:8] if a > 0],
                "against": [[w, round(a, 3)] for w, a in words[::-1][:5] if a < 0],
            }
        )
    return found


def _exported_by(version_dir: Path, run_dir: str | None) -> bool:
    if not run_dir or not (version_dir / "saved_model.pb").is_file():
        return False
    meta = read_metadata(version_dir)
    return meta is not None and meta.get("run_dir") == run_dir


def next_version(base: Path) -> int:
    """One more than the highest integer version folder (1 for the first)."""
    return max(versions(base), default=0) + 1


def served_before(base: Path, version: int, metadata: dict) -> list[str]:
    """Lines saying how `version` compares with the version TF Serving served until now.

    Scores are only compared on the same test split; a lower score is said loudly, with the
    way back, since TF Serving serves the highest version as soon as it appears.
    """
    older = [v for v in versions(base) if v < version]
    if not older or version != max(versions(base)):
        return []
    previous = older[-1]
    before = read_metadata(base / str(previous))
    try:
        old, new = before["metrics"]["accuracy"], metadata["metrics"]["accuracy"]
    except (KeyError, TypeError):  # no readable metadata, or no score in it
        return []
    way_back = (
        f"to serve version {previous} again, remove {base / str(version)} (its run stays in "
        f"{metadata.get('run_dir', 'runs/')}); runs that should not replace it need a name "
        f"of their own ({spelled('name')})"
    )
    differs = _test_split_differences(before, metadata)
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


def _test_split_differences(before: dict, after: dict) -> str:
    """What differs between two versions' test splits, e.g. "max_test 2000 vs 0", or ""."""
    keys = ("dataset", "test_data", "max_test", "text_column", "label_column")
    old, new = before.get("config", {}), after.get("config", {})
    found = [f"{k} {old.get(k)!r} vs {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    # The seed picks the test texts only where the test split is cut or held out of the data.
    held_out = "held out" in str(after.get("dataset", {}).get("source", ""))
    if (held_out or new.get("max_test")) and old.get("seed") != new.get("seed"):
        found.append(f"seed {old.get('seed')} vs {new.get('seed')}")
    sizes = [meta.get("dataset", {}).get("test") for meta in (before, after)]
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
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("export", None)  # the new version gets its own path
    pre, model, mix = load_run_model(run_dir)
    base = Path(output_dir) / run_dir.parent.name
    files = version_files(summary)
    return export_saved_model(pre, model, summary["class_names"], base, summary, files, mix=mix)


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
    summary = json.loads((run_dir / "summary.json").read_text())
    for line in served_before(path.parent, int(path.name), summary):
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
        config = (read_metadata(version_dir) or {}).get("config", {})
        try:
            cfg = Config(**{k: v for k, v in config.items() if k in FIELDS})
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


def version_files(summary: dict) -> dict[str, str | Callable[[dict], str]]:
    """What assets.extra/ holds beside metadata.json, the same for `fit` and `export`."""
    return {
        "config.json": json.dumps(summary["config"], indent=2),
        "report.json": json.dumps(summary["test_report"], indent=2),
        # Called with the final metadata, so the card names its own version.
        "MODEL_CARD.md": lambda meta: model_card(meta, summary.get("most_confident_errors", [])),
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

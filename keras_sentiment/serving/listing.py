"""Listing: the versions and runs on disk, as a table, and two versions compared.

Only the standard library: `python -m keras_sentiment runs` reads the records
(`keras_sentiment.records`) and starts no TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from keras_sentiment.config import UserError
from keras_sentiment.records import (
    WHERE_NOT_WHAT,
    ExportRecord,
    read_metadata,
    read_run_config,
    versions,
)
from keras_sentiment.reporting.model_card import duration, on_off

_MISSING = object()


# --- runs --------------------------------------------------------------------------------


def list_runs(output_dir: Path) -> list[dict]:
    """One row per exported version with readable metadata, newest first.

    `settings` shows the key settings and every other one that differs between the versions
    of the same name; a version that exports a run an earlier version exported already says
    so instead (`re-export of version N`), and `same_run_as` is N (else None).
    """
    metas = list(_all_metadata(Path(output_dir)))
    rows = []
    for meta in metas:
        kin = [m for m in metas if m.name == meta.name]
        first = _first_export(meta, kin)
        rows.append(
            {
                "name": meta.name,
                "version": meta.version,
                "created": meta.created,
                "accuracy": meta.metrics.accuracy,
                "macro_f1": meta.metrics.macro_f1,
                "duration": meta.training.wall_seconds,
                "settings": (
                    f"re-export of version {first} (the same run)"
                    if first is not None
                    else settings(meta, differing_keys(kin))
                ),
                "same_run_as": first,
                "path": meta.path,
            }
        )
    return sorted(rows, key=lambda r: (_when(r["created"]), r["version"]), reverse=True)


def _first_export(meta: ExportRecord, kin: list[ExportRecord]) -> int | None:
    """The lowest other version of the name exported from the same run folder, if any."""
    earlier = [m.version for m in kin if meta.run_dir and m.run_dir == meta.run_dir]
    first = min(earlier, default=meta.version)
    return first if first < meta.version else None


def differing_keys(metas: list[ExportRecord]) -> list[str]:
    """The config keys whose values differ between these versions (config order)."""
    configs = [m.config for m in metas]
    keys = list(dict.fromkeys(k for cfg in configs for k in cfg if k not in WHERE_NOT_WHAT))
    return [k for k in keys if len({json.dumps(c.get(k, None)) for c in configs}) > 1]


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
                where = f"at epoch {state['epoch']} of at most {read_run_config(run)['epochs']}"
                if state.get("finished"):
                    where = "trained, not yet reported and exported"
            except (OSError, ValueError, KeyError, TypeError):
                where = "not yet at its first backup"
            lines.append(f"{run}: {where} (stopped, or still running)")
    return lines


def _all_metadata(output_dir: Path) -> Iterator[ExportRecord]:
    if not output_dir.is_dir():
        return
    for base in sorted(output_dir.iterdir()):
        if base.is_dir() and not base.name.startswith("."):
            for version in versions(base):
                meta = read_metadata(base / str(version))
                if meta is not None:
                    yield meta


def _when(created: str) -> datetime:
    try:
        when = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# The keys the short settings show as they are; any other key that differs is added.
_SHOWN = frozenset(
    ("bidirectional", "lstm_units", "lstm_layers", "pooling", "sequence_length", "truncate")
    + ("lemmatize", "remove_stopwords", "train_embeddings", "max_train")
)


def settings(meta: ExportRecord, differing: list[str] = ()) -> str:
    """Key settings of a run in one short string, e.g. 'bilstm 64x1 max, len 400 pre, ...',
    then `key value` for each key of `differing` the short form does not show."""
    cfg = meta.config
    if not cfg:
        return "-"
    kind = "bilstm" if cfg.get("bidirectional") else "lstm"
    parts = [
        f"{kind} {cfg.get('lstm_units', '?')}x{cfg.get('lstm_layers', '?')} "
        f"{cfg.get('pooling', '?')}",
        f"len {cfg.get('sequence_length', '?')} {cfg.get('truncate', '?')}",
        # The vocabulary the run really has: a small data set fills less than vocab_size.
        f"vocab {_first_known(meta.vocabulary_size, cfg.get('vocab_size'))}",
        f"lemma {on_off(cfg.get('lemmatize'))}",
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
    for key in differing:
        if key not in _SHOWN:
            parts.append(f"{key} {_short(cfg.get(key, '-'))}")
    return ", ".join(parts)


def _short(value, width: int = 28) -> str:
    text = '""' if value == "" else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


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


def compare_runs(a: ExportRecord, b: ExportRecord) -> str:
    """Two runs' records side by side; config settings that differ are marked with '*'."""
    cfg_a, cfg_b = a.config, b.config
    keys = [k for k in cfg_a if k not in WHERE_NOT_WHAT]
    keys += [k for k in cfg_b if k not in WHERE_NOT_WHAT and k not in cfg_a]
    table = [["", "", _run_label(a), _run_label(b)]]
    table.append(["", "created", _short_time(a.created), _short_time(b.created)])
    for key in keys:
        differs = cfg_a.get(key, _MISSING) != cfg_b.get(key, _MISSING)
        table.append(["*" if differs else "", key, _setting(cfg_a, key), _setting(cfg_b, key)])
    rows = [
        ("parameters", lambda m: f"{m.parameters:,}"),
        ("epochs run", lambda m: _plain(m.training.epochs_run)),
        ("best epoch", lambda m: _plain(m.training.best_epoch)),
        ("duration", lambda m: duration(m.training.wall_seconds)),
        ("accuracy", lambda m: _number(m.metrics.accuracy)),
        ("macro F1", lambda m: _number(m.metrics.macro_f1)),
    ]
    names = list(a.class_names) + [n for n in b.class_names if n not in a.class_names]
    for name in names:
        rows.append(
            (f"F1 {name}", lambda m, n=name: _number(m.test_report["per_class"][n]["f1-score"]))
        )
    table.append(["", "", "", ""])
    for label, get in rows:
        table.append(["", label, _get(get, a), _get(get, b)])
    return _align(table)


def _run_label(meta: ExportRecord) -> str:
    return f"{meta.name or '?'}/{'?' if meta.version is None else meta.version}"


def _setting(cfg: dict, key: str) -> str:
    if key not in cfg:
        return "-"
    return '""' if cfg[key] == "" else str(cfg[key])


def _get(get, meta: ExportRecord) -> str:
    # Older or partial records lack some numbers (None) or report keys; show "-" rather than fail.
    try:
        return get(meta)
    except (KeyError, TypeError, ValueError):
        return "-"


def _plain(value) -> str:
    return "-" if value is None else str(value)


def _first_known(*values) -> str:
    return str(next((v for v in values if v is not None), "?"))


def find_run(output_dir: Path, spec: str) -> ExportRecord:
    """The metadata of "NAME" (its latest readable version) or "NAME/VERSION"; UserError if none."""
    output_dir = Path(output_dir)
    name, _, version = spec.strip().strip("/").partition("/")
    base = output_dir / name
    if not name or name.startswith(".") or not base.is_dir():
        known = sorted({m.name for m in _all_metadata(output_dir)})
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

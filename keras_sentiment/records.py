"""Where runs and exports live, and the records they keep: one module writes and reads them.

`runs/NAME/VERSION/` holds a run, `saved_models/NAME/VERSION/` its export: integer version
folders, TF Serving's rule, shared by both so a run and its export have one number.

Three JSON records, each with a `schema` number (`SCHEMA` for what this package writes):

- the run's `config.json` (and the export's `assets.extra/config.json`): its settings, the keys
  of `Config` as they were when it ran;
- the run's `summary.json`: a `RunRecord`, everything a finished run is known by;
- the export's `assets.extra/metadata.json`: an `ExportRecord`, the run's record with the
  version, its path and what the model card shows of explanations.

Records without a `schema` (schema 0) were written before the number existed; they hold the same
keys and are read the same way. Reading is lenient, since a record outlives the code that wrote
it: a key it lacks takes its field's default (None, "" or empty: "not recorded"), a key this
package does not know is left out. Writing leaves out what is None.

Only the standard library: `runs` lists records without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_sentiment.config import FIELDS, Config
from keras_sentiment.files import save_json

# 1: the first numbered schema; the keys are those of schema 0 (unnumbered), plus it and `mix`
# (the stacked mix; {} in records of runs before it, which have `ngrams` instead).
SCHEMA = 1


def versions(base: str | Path) -> list[int]:
    """The integer folders under `base`, ascending: TF Serving's versions, or a name's runs."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


# --- the records --------------------------------------------------------------------------


@dataclass
class DataSizes:
    """The data a run learned from (`dataset` in the record)."""

    source: str = ""  # e.g. "tfds:imdb_reviews", "file:reviews.csv (20% held out)", "memory:..."
    train: int | None = None
    validation: int | None = None
    test: int | None = None


@dataclass
class Embeddings:
    """The embeddings a run started from (`embedding_matrix`'s facts)."""

    source: str = ""  # "glove-6b-50d", a GloVe file, or "none" (learned from scratch)
    dim: int | None = None
    coverage: float | None = None  # share of the vocabulary GloVe has a vector for
    found: int | None = None
    vocabulary: int | None = None


@dataclass
class Pretraining:
    """What language-model pretraining read (absent without pretraining)."""

    texts: int = 0
    unlabeled_texts: int = 0
    tokens: int = 0
    epochs: int = 0
    seconds: float | None = None


@dataclass
class NgramBranch:
    """The n-gram branch of runs before the stacked mix (`MixRecord`): one NB-LR on word
    n-grams, its probabilities mixed with the LSTM's at a weight picked on validation."""

    order: int = 0
    ngrams: int = 0  # the n-grams kept (seen in 2+ training texts)
    C: float | None = None
    lstm_weight: float = 1.0
    validation_accuracy: dict[str, float] = field(default_factory=dict)
    test_accuracy: dict[str, float] = field(default_factory=dict)  # "lstm", "ngrams" alone
    seconds: float | None = None


@dataclass
class MixMember:
    """One n-gram model of the mix, as `network.ngrams.fit_member` fitted it."""

    kind: str = ""  # "words" or "chars"
    order: int = 0  # the longest n-gram
    ngrams: int = 0  # kept: seen in 2+ of the texts it was refitted on
    C: float | None = None  # picked on validation
    validation_accuracy: float | None = None  # alone, fitted on train
    seconds: float | None = None


@dataclass
class MixRecord:
    """How the mix was chosen: the LSTM and the n-gram members stacked on their log-odds
    (`network/mix.py`; absent when the mix is off)."""

    members: list[MixMember] = field(default_factory=list)
    coefficients: dict[str, float] = field(default_factory=dict)  # by part; 0: dropped
    bias: float | None = None
    validation_texts: int | None = None  # the texts the stack was fitted on
    # Each part alone ("lstm", "words", "chars") and "mixed" (the stack, cross-validated).
    validation_accuracy: dict[str, float] = field(default_factory=dict)
    test_accuracy: dict[str, float] = field(default_factory=dict)  # the same parts, on test
    seconds: float | None = None


@dataclass
class Training:
    """How training went."""

    epochs_run: int | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    tokens_per_epoch: int | None = None
    precision: str = ""
    resumed: bool = False
    wall_seconds: float | None = None


@dataclass
class Metrics:
    """The headline numbers of the test report."""

    accuracy: float | None = None
    macro_f1: float | None = None


@dataclass
class RunRecord:
    """Everything a finished run is known by: its summary.json, and the core of its exports'
    metadata and model card."""

    name: str = ""
    created: str = ""  # ISO 8601, UTC
    run_dir: str = ""  # the run folder, absolute
    class_names: list[str] = field(default_factory=list)
    vocabulary_size: int | None = None
    sequence_length: int | None = None
    dataset: DataSizes = field(default_factory=DataSizes)
    embeddings: Embeddings = field(default_factory=Embeddings)
    pretraining: Pretraining | None = None
    ngrams: NgramBranch | None = None  # the mix of runs before the stacked one
    mix: MixRecord | None = None
    parameters: int | None = None
    training: Training = field(default_factory=Training)
    metrics: Metrics = field(default_factory=Metrics)
    test_report: dict[str, Any] = field(default_factory=dict)  # reporting.evaluation.report
    most_confident_errors: list[dict] = field(default_factory=list)
    reviews_to_explain: list[dict] = field(default_factory=list)
    # The settings as recorded: Config's keys when it ran (see `settings` for a Config).
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # library versions
    export: str = ""  # the version folder fit exported (summary.json only)
    schema: int = SCHEMA  # the schema it was read from (0: unnumbered); written as SCHEMA

    @classmethod
    def from_dict(cls, data: dict) -> typing.Self:
        """A record from its JSON form, of any schema (see the module's docstring)."""
        record = _from_dict(cls, data)
        if not isinstance(data, dict) or "schema" not in data:
            record.schema = 0
        return record

    def to_dict(self) -> dict[str, Any]:
        """The JSON form in today's schema: the keys in order, sections that are off as {}
        (as schema 0 wrote them)."""
        return {**_to_dict(self), "schema": SCHEMA}

    def settings(self) -> Config:
        """The recorded settings as a Config: keys it lacks at today's defaults, keys Config no
        longer has left out."""
        return config_from(self.config)


@dataclass
class ExportRecord(RunRecord):
    """An exported version's metadata.json: its run's record, where it lies, and what the
    model card shows of explanations (`model_card.card_explanations`)."""

    version: int | None = None
    path: str = ""
    explanations: dict[str, Any] = field(default_factory=dict)  # "ngrams", "reviews"

    @classmethod
    def of_run(cls, run: RunRecord, **fields: Any) -> ExportRecord:
        """The run's record as an export's, with the export's own fields."""
        values = {f.name: getattr(run, f.name) for f in dataclasses.fields(RunRecord)}
        return cls(**{**values, "export": "", **fields})

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        del data["export"]  # the run's own export; a version is where it lies (`path`)
        return data


def _from_dict(cls: type, data: Any):
    data = data if isinstance(data, dict) else {}
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], _record_type(hints[f.name])
        item = _list_item_type(hints[f.name])
        if kind is not None:
            # A section recorded as {} or null is off (pretraining, n-grams) or empty.
            optional = _allows_none(hints[f.name])
            value = None if optional and not value else _from_dict(kind, value)
        elif item is not None:
            value = [_from_dict(item, v) for v in value] if isinstance(value, list) else []
        values[f.name] = value
    return cls(**values)


def _to_dict(record) -> dict[str, Any]:
    # None is "not recorded": left out, as the stage that knew nothing wrote nothing; a
    # section that is off (pretraining, n-grams) is {}, as schema 0 wrote it.
    out = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _to_dict(value)
        elif _list_item_type(typing.get_type_hints(type(record))[f.name]):
            out[f.name] = [_to_dict(v) for v in value]
        elif value is not None:
            out[f.name] = value
        elif _record_type(typing.get_type_hints(type(record))[f.name]):
            out[f.name] = {}
    return out


def _record_type(hint) -> type | None:
    # The record class inside `X` or `X | None`, else None.
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next((k for k in kinds if dataclasses.is_dataclass(k)), None)


def _list_item_type(hint) -> type | None:
    # The record class X of `list[X]`, else None.
    args = typing.get_args(hint) if typing.get_origin(hint) is list else ()
    return args[0] if args and dataclasses.is_dataclass(args[0]) else None


def _allows_none(hint) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


# --- reading and writing ------------------------------------------------------------------


# Settings that say where a run's files go or how often it backs up, not what it computes: an
# interrupted run resumes under other values of these (`training.runs.same_result`), and
# listings never show them as a difference. The name is the run folder's own; a backup resumes
# exactly wherever it was written, so its interval changes no number.
WHERE_NOT_WHAT = frozenset({"name", "output_dir", "runs_dir", "checkpoint_steps"})


def config_from(recorded: dict[str, Any]) -> Config:
    """A Config from recorded settings: keys they lack at today's defaults, keys Config no
    longer has (and `schema`) left out."""
    return Config(**{k: v for k, v in recorded.items() if k in FIELDS})


def config_json(config: Config | dict[str, Any]) -> str:
    """The text of a config.json: `schema`, then the settings."""
    settings = config.to_dict() if isinstance(config, Config) else dict(config)
    return json.dumps({"schema": SCHEMA, **settings}, indent=2) + "\n"


def write_run_config(run_dir: Path, cfg: Config) -> None:
    """The run's config.json (atomic)."""
    save_json(Path(run_dir) / "config.json", json.loads(config_json(cfg)))


def read_run_config(run_dir: Path) -> dict[str, Any] | None:
    """The settings a run's config.json records (without `schema`); None if it is unreadable."""
    data = _read_json(Path(run_dir) / "config.json")
    if data is None:
        return None
    data.pop("schema", None)
    return data


def write_summary(run_dir: Path, record: RunRecord) -> None:
    """The run's summary.json (atomic): written last, it marks the run finished."""
    save_json(Path(run_dir) / "summary.json", record.to_dict())


def read_summary(run_dir: Path) -> RunRecord | None:
    """A run's summary.json; None if it is missing or unreadable."""
    data = _read_json(Path(run_dir) / "summary.json")
    return None if data is None else RunRecord.from_dict(data)


def metadata_path(version_dir: Path) -> Path:
    """Where a version's metadata.json lies."""
    return Path(version_dir) / "assets.extra" / "metadata.json"


def read_metadata(version_dir: Path) -> ExportRecord | None:
    """A version's metadata.json, its name/version/path taken from where it lies; None if bad."""
    data = _read_json(metadata_path(version_dir))
    if data is None:
        return None
    # A copied or renamed folder is served under its folder name, so that is the truth.
    version_dir = Path(version_dir)
    record = ExportRecord.from_dict(data)
    record.name, record.path = version_dir.parent.name, str(version_dir)
    record.version = int(version_dir.name) if version_dir.name.isdigit() else None
    return record


def write_metadata(version_dir: Path, record: ExportRecord) -> None:
    """A version's metadata.json (atomic)."""
    save_json(metadata_path(version_dir), record.to_dict())


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):  # ValueError covers bad JSON and bad UTF-8
        return None
    return data if isinstance(data, dict) else None


def recorded_classes(output_dir: str | Path, runs_dir: str | Path, name: str) -> dict[str, list]:
    """The classes each earlier model of `name` was trained on, by where it lies: exported
    versions (their metadata) and finished runs (their summary). Unreadable ones, and records
    without classes, are left out.
    """
    found = {}
    for base, read in ((Path(output_dir) / name, read_metadata),
                       (Path(runs_dir) / name, read_summary)):  # fmt: skip
        for version in versions(base):
            record = read(base / str(version))
            if record is not None and record.class_names:
                found[str(base / str(version))] = [str(n) for n in record.class_names]
    return found

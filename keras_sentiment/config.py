"""One config object for every stage; the CLI and a TOML file only fill it.

`Config` is read top to bottom like the pipeline: run identity, data, preprocessing,
embeddings, model, pretraining, training, hardware. Every field is a `fit` flag
(`--lstm-units`) and a TOML key (`lstm_units`); `make_config` merges defaults, a TOML file and
flags, and validates the result before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Review files by name (`data/readers.py` reads them); a compression suffix is looked through.
FILE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
FILE_FORMATS |= {".parquet": "parquet", ".pq": "parquet", ".txt": "text"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".lzma", ".zst", ".zstd", ".deflate")


class UserError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with code 2."""


_ON_THE_COMMAND_LINE = [False]


def on_command_line() -> bool:
    """Whether the call came from the command line (inside `command_line()`), not Python."""
    return _ON_THE_COMMAND_LINE[0]


def spelled(key: str, value: str | None = None) -> str:
    """A config key, and a value if given, as the user sets it where they are, for messages:
    `--lstm-units` on the command line, `Config(lstm_units=...)` from Python.

    Example:
        >>> spelled("embeddings", "none"), spelled("text_column"), spelled("lemmatize", False)
        ("Config(embeddings='none')", 'Config(text_column=...)', 'Config(lemmatize=False)')
        >>> with command_line():
        ...     spelled("embeddings", "none"), spelled("lemmatize", False)
        ('--embeddings none', '--no-lemmatize')
    """
    if on_command_line():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            return flag if value else "--no-" + flag[2:]
        return flag + ("" if value is None else f" {value}")
    return f"Config({key}={'...' if value is None else repr(value)})"


@contextmanager
def command_line() -> Iterator[None]:
    """Messages raised inside name flags (`--name`) rather than Python (`Config(name=...)`)."""
    before, _ON_THE_COMMAND_LINE[0] = _ON_THE_COMMAND_LINE[0], True
    try:
        yield
    finally:
        _ON_THE_COMMAND_LINE[0] = before


def file_format(path: str) -> str:
    """A review file's format from its name: csv, jsonl, parquet, else text (`.gz`, `.bz2` and
    the other compressions Beam reads are looked through).

    Example:
        >>> file_format("reviews.csv.gz"), file_format("a.ndjson"), file_format("notes")
        ('csv', 'jsonl', 'text')
    """
    return FILE_FORMATS.get(Path(_uncompressed(str(path).lower())).suffix, "text")


def _uncompressed(name: str) -> str:
    for suffix in COMPRESSIONS:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def data_kind(spec: str) -> str:
    """What a data argument (`dataset`, `test_data`, `unlabeled`, `evaluate`'s data) names.

    The one place that decides it, for every command; it reads only the file system, so the
    command line can check paths before TensorFlow starts.

    Returns:
        `memory` (a run's record of in-memory data, "memory:KEY"), `file` (its format:
        `file_format`), `folder`, `missing` (a path that does not exist: it has a `/` or a
        review file's suffix), or `tfds` (a TFDS data set's name).

    Example:
        >>> data_kind("imdb_reviews"), data_kind("no/such/reviews.csv"), data_kind("memory:ab")
        ('tfds', 'missing', 'memory')
    """
    if spec.startswith("memory:"):
        return "memory"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    named = Path(_uncompressed(spec.lower())).suffix in FILE_FORMATS
    return "missing" if named or "/" in spec or _uncompressed(spec) != spec else "tfds"


def default_name(dataset: str, quick: bool) -> str:
    """The model name a fit takes without `--name`: it follows the data, so data sets never
    share a served name.

    The file or folder stem, or the TFDS name without "_reviews", then "_lstm"; "_quick" is
    added for a run on a slice. In-memory data ("memory:..." in a run's config) is "memory".

    Example:
        >>> default_name("imdb_reviews", quick=False), default_name("data/reviews.csv", True)
        ('imdb_lstm', 'reviews_lstm_quick')
    """
    if dataset.startswith("memory:"):
        stem = "memory"
    elif data_kind(dataset) != "tfds":
        stem = Path(_uncompressed(dataset.rstrip("/"))).stem
    else:
        stem = dataset.removesuffix("_reviews")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-") or "data"
    return f"{slug}_lstm" + ("_quick" if quick else "")


@dataclass
class Config:
    """Everything a run depends on, read top to bottom like the pipeline.

        Every field is a `fit` flag (`lstm_units` is `--lstm-units`) and a TOML key. `fit`
        validates the config before any work starts.

        Args:
    {args}

        Example:
            >>> cfg = Config(max_train=2000, max_test=2000, epochs=1)
            >>> cfg.run_name, cfg.lstm_units
            ('imdb_lstm_quick', 128)
    """

    # Run identity and outputs.
    name: str = field(
        default="",
        metadata={
            "help": "model name: saved_models/NAME/VERSION (default: from the data, e.g. "
            "imdb_lstm, reviews_lstm for reviews.csv; _quick added when --max-train or "
            "--max-test cut the data)"
        },
    )
    output_dir: str = field(
        default="saved_models", metadata={"help": "where versioned SavedModels go"}
    )
    runs_dir: str = field(
        default="runs", metadata={"help": "checkpoints, logs and reports per run"}
    )
    seed: int = field(default=1337, metadata={"help": "seed for splits, weights and shuffling"})

    # Data.
    dataset: str = field(
        default="imdb_reviews",
        metadata={"help": "TFDS name, an aclImdb-style folder, or a .csv/.jsonl/.parquet file"},
    )
    test_data: str = field(
        default="", metadata={"help": "CSV/JSONL/Parquet test file (else held out)"}
    )
    max_train: int = field(default=0, metadata={"help": "use at most N training texts (0: all)"})
    max_test: int = field(default=0, metadata={"help": "use at most N test texts (0: all)"})
    validation_fraction: float = field(default=0.1, metadata={"help": "share of train held out"})
    text_column: str = field(default="text", metadata={"help": "column of the texts"})
    label_column: str = field(default="label", metadata={"help": "column of the labels"})

    # Preprocessing.
    lemmatize: bool = field(
        default=True,
        metadata={"help": "NLTK WordNet lemmatization, folded into the vocabulary table"},
    )
    remove_stopwords: bool = field(
        default=False, metadata={"help": "drop stopwords (not negations)"}
    )
    vocab_size: int = field(default=50000, metadata={"help": "vocabulary incl. padding and OOV"})
    sequence_length: int = field(default=800, metadata={"help": "tokens kept per text"})
    truncate: str = field(
        default="pre", metadata={"help": "pre: keep the end; post: keep the start"}
    )

    # Embeddings.
    embeddings: str = field(
        default="glove-6b-50d",
        metadata={"help": "glove-6b-50d, a GloVe text file (.txt/.zip/.gz), or none"},
    )
    train_embeddings: bool = field(default=True, metadata={"help": "fine-tune the embeddings"})
    embedding_dim: int = field(default=50, metadata={"help": "dimension when --embeddings none"})

    # Model.
    lstm_units: int = field(default=128, metadata={"help": "units per LSTM (per direction)"})
    lstm_layers: int = field(default=1, metadata={"help": "stacked LSTM layers"})
    bidirectional: bool = field(default=True, metadata={"help": "bidirectional LSTMs"})
    pooling: str = field(default="max", metadata={"help": "max, mean or last (over time)"})
    dropout: float = field(default=0.5, metadata={"help": "dropout on embeddings and features"})
    ngrams: int = field(
        default=3,
        metadata={
            "help": "word n-grams of the mix: NB-LR on the words' 1..N-grams, stacked with the "
            "LSTM by a logistic regression on validation; two classes only (0: off)"
        },
    )
    char_ngrams: int = field(
        default=-1,
        metadata={
            "help": "char n-grams of the mix: NB-LR on the 2..N-character n-grams inside each "
            "word, for short texts (0: off; -1: 5 where the median training text is under "
            "100 words, else off)"
        },
    )

    # Pretraining (Dai & Le 2015): language models on the training and unlabeled texts.
    pretrain_epochs: int = field(
        default=0,
        metadata={
            "help": "epochs of language-model pretraining on the training texts and the data "
            "set's unlabeled ones (IMDB: 50,000; cut to max_train when set; 0: off)"
        },
    )
    unlabeled: str = field(
        default="",
        metadata={
            "help": "unlabeled texts for pretraining: a folder of .txt files or a .txt file "
            "with one text per line (default: the data set's own, if any)"
        },
    )

    # Training.
    batch_size: int = field(default=64, metadata={"help": "batch size"})
    epochs: int = field(default=8, metadata={"help": "maximum epochs"})
    learning_rate: float = field(default=2e-3, metadata={"help": "Adam learning rate"})
    clipnorm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    adversarial: float = field(
        default=0.0,
        metadata={
            "help": "adversarial training: L2 norm of each text's worst-case embedding "
            "perturbation (Miyato et al. 2017; 0: off)"
        },
    )
    weight_average: float = field(
        default=0.0,
        metadata={
            "help": "weight averaging: momentum of a moving average of the weights that "
            "replaces them at each epoch's end, before validation (0: off; e.g. 0.99)"
        },
    )
    lr_decay: float = field(
        default=0.5,
        metadata={"help": "multiply the learning rate by this when val. stalls (1: off)"},
    )
    monitor: str = field(
        default="val_loss",
        metadata={"help": "val_loss or val_accuracy: picks the best epoch, drives LR decay"},
    )
    patience: int = field(default=2, metadata={"help": "early-stopping patience (epochs)"})
    checkpoint_steps: int = field(
        default=0, metadata={"help": "also back up every N steps for resume (0: each epoch)"}
    )

    # Hardware.
    strategy: str = field(
        default="auto", metadata={"help": "auto, default, mirrored or multi-worker (TF_CONFIG)"}
    )
    mixed_precision: bool = field(default=False, metadata={"help": "float16 compute on GPU"})
    precision: str = field(
        default="float32",
        metadata={
            "help": "float32; bfloat16: the LSTMs' weight-gradient matmuls in bfloat16 on a CPU "
            "with bfloat16 instructions (AVX512_BF16 or AMX), else float32 and a warning; auto: "
            "the same without the warning. Weights, states and export stay float32"
        },
    )

    @property
    def run_name(self) -> str:
        """`name`, or the name that follows the data when `name` is empty (see `default_name`).

        Resolved each time it is read, so `dataclasses.replace(cfg, max_train=2000)` of a
        config without a name gets the quick name too.
        """
        return self.name or default_name(self.dataset, bool(self.max_train or self.max_test))

    def validate(self) -> Config:
        """Refuse impossible values before any work starts, naming the key.

        Returns:
            The config itself, so that `Config(...).validate()` reads as one expression.

        Raises:
            UserError: a value out of its range or not among its choices.
        """
        for key in POSITIVE:
            _check(self, key, getattr(self, key) > 0, "must be > 0")
        for key in NONNEGATIVE:
            _check(self, key, getattr(self, key) >= 0, "must be >= 0")
        _check(self, "validation_fraction", 0 < self.validation_fraction < 1, "must be in (0, 1)")
        _check(self, "lr_decay", 0 < self.lr_decay <= 1, "must be in (0, 1] (1: off)")
        for key in ("dropout", "weight_average"):
            _check(self, key, 0 <= getattr(self, key) < 1, "must be in [0, 1)")
        for key, allowed in CHOICES.items():
            _check(self, key, getattr(self, key) in allowed, f"must be one of {allowed}")
        _check(
            self,
            "char_ngrams",
            self.char_ngrams in (-1, 0) or self.char_ngrams >= 2,
            "must be -1 (auto), 0 (off) or >= 2",
        )
        _check(self, "vocab_size", self.vocab_size >= 3, "must be >= 3 (padding, OOV, one token)")
        if self.vocab_size**self.ngrams >= 2**63:  # an n-gram is one int64 (see network/ngrams.py)
            raise UserError(
                f"config: ngrams {self.ngrams} with vocab_size {self.vocab_size} overflows "
                "int64 n-gram keys; lower one of them"
            )
        name = self.run_name
        if "/" in name or name.startswith(".") or not name.strip():
            raise UserError(f"config: name must be a plain folder name, got {name!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, for JSON files and metadata."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def field_help(key: str) -> str:
    """What a config key does, with its default: the text of `fit --help` and of
    `help(Config)` alike."""
    field_ = FIELDS[key]
    text = field_.metadata.get("help", "")
    return text if field_.default == "" else f"{text} (default: {field_.default})"


def _args_section() -> str:
    # The docstring's Args, one entry per field, from the same text `fit --help` shows.
    lines = []
    for key in FIELDS:
        entry = f"{key} ({type(FIELDS[key].default).__name__}): {field_help(key)}"
        lines += textwrap.wrap(
            entry, 92, initial_indent=" " * 8, subsequent_indent=" " * 12, break_on_hyphens=False
        )
    return "\n".join(lines)


if Config.__doc__:  # None under python -OO
    Config.__doc__ = Config.__doc__.replace("{args}", _args_section())
POSITIVE = ("vocab_size", "sequence_length", "lstm_units", "lstm_layers", "batch_size", "epochs")
POSITIVE += ("learning_rate", "clipnorm", "embedding_dim")
NONNEGATIVE = ("max_train", "max_test", "patience", "checkpoint_steps", "adversarial")
NONNEGATIVE += ("pretrain_epochs", "ngrams")
CHOICES = {
    "truncate": ("pre", "post"),
    "pooling": ("max", "mean", "last"),
    "monitor": ("val_loss", "val_accuracy"),
    "strategy": ("auto", "default", "mirrored", "multi-worker"),
    "precision": ("auto", "float32", "bfloat16"),
}


def _check(cfg: Config, key: str, ok: bool, rule: str) -> None:
    if not ok:
        raise UserError(f"config: {key} {rule}, got {getattr(cfg, key)!r}")


KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def coerce(key: str, value: Any) -> Any:
    """Check one value against the type of its field, naming the key when it does not fit."""
    if key not in FIELDS:
        raise UserError(f"config: unknown key {key!r}")
    kind = type(FIELDS[key].default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise UserError(f"config: {key} must be {KINDS[kind]}, got {value!r}")
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of config keys (flat, or under a [keras_sentiment] table)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    data = data.get("keras_sentiment", data)
    return {key.replace("-", "_"): coerce(key.replace("-", "_"), v) for key, v in data.items()}


def make_config(overrides: dict[str, Any], toml_path: str | None = None) -> Config:
    """Defaults, then the TOML file, then explicit overrides; validated."""
    values = load_toml(toml_path) if toml_path else {}
    values.update({k: coerce(k, v) for k, v in overrides.items() if v is not None})
    return Config(**values).validate()

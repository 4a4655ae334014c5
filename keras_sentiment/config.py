"""One config object for every stage; the CLI and a TOML file only fill it."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class UserError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with code 2."""


@dataclass
class Config:
    """Everything a run depends on, read top to bottom like the pipeline."""

    # Run identity and outputs.
    name: str = field(
        default="",
        metadata={
            "help": "model name: saved_models/NAME/VERSION (imdb_lstm; imdb_lstm_quick when "
            "--max-train or --max-test cut the data)"
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
        metadata={"help": "TFDS name, an aclImdb-style folder, or a .csv/.jsonl file"},
    )
    test_data: str = field(default="", metadata={"help": "CSV/JSONL test file (else held out)"})
    max_train: int = field(default=0, metadata={"help": "use at most N training texts (0: all)"})
    max_test: int = field(default=0, metadata={"help": "use at most N test texts (0: all)"})
    validation_fraction: float = field(default=0.1, metadata={"help": "share of train held out"})

    # Preprocessing.
    lemmatize: bool = field(
        default=True,
        metadata={"help": "NLTK WordNet lemmatization (3 seeds: within the seed spread)"},
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
            "help": "order of the n-gram branch: NB-LR on the ids' 1..N-grams, mixed with the "
            "LSTM at a weight picked on validation; two classes only (0: off)"
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

    def __post_init__(self):
        # A quick run on a slice never replaces the full model TF Serving serves by default.
        if not self.name:
            self.name = "imdb_lstm_quick" if self.max_train or self.max_test else "imdb_lstm"

    def validate(self) -> Config:
        """Refuse impossible values before any work starts, naming the key."""
        positive = [
            "vocab_size",
            "sequence_length",
            "lstm_units",
            "lstm_layers",
            "batch_size",
            "epochs",
        ]
        for key in positive:
            if getattr(self, key) <= 0:
                raise UserError(f"config: {key} must be > 0, got {getattr(self, key)}")
        nonnegative = [
            "max_train",
            "max_test",
            "patience",
            "checkpoint_steps",
            "embedding_dim",
            "adversarial",
            "pretrain_epochs",
            "ngrams",
        ]
        for key in nonnegative:
            if getattr(self, key) < 0:
                raise UserError(f"config: {key} must be >= 0, got {getattr(self, key)}")
        if not 0 < self.validation_fraction < 1:
            raise UserError(
                f"config: validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        if not 0 <= self.dropout < 1:
            raise UserError(f"config: dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.weight_average < 1:
            raise UserError(f"config: weight_average must be in [0, 1), got {self.weight_average}")
        if self.vocab_size**self.ngrams >= 2**63:  # an n-gram is one int64 (see ngrams.py)
            raise UserError(
                f"config: ngrams {self.ngrams} with vocab_size {self.vocab_size} overflows "
                "int64 n-gram keys; lower one of them"
            )
        if not 0 < self.lr_decay <= 1:
            raise UserError(f"config: lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.monitor not in ("val_loss", "val_accuracy"):
            raise UserError(
                f"config: monitor must be val_loss or val_accuracy, got {self.monitor!r}"
            )
        if self.learning_rate <= 0 or self.clipnorm <= 0:
            raise UserError("config: learning_rate and clipnorm must be > 0")
        if self.vocab_size < 3:
            raise UserError("config: vocab_size must be >= 3 (padding, OOV and one token)")
        choices = {
            "truncate": ("pre", "post"),
            "pooling": ("max", "mean", "last"),
            "strategy": ("auto", "default", "mirrored", "multi-worker"),
            "precision": ("auto", "float32", "bfloat16"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UserError(
                    f"config: {key} must be one of {allowed}, got {getattr(self, key)!r}"
                )
        if self.embeddings == "none" and self.embedding_dim <= 0:
            raise UserError("config: embedding_dim must be > 0 with embeddings = none")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UserError(f"config: name must be a plain folder name, got {self.name!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, for JSON files and metadata."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def coerce(key: str, value: Any) -> Any:
    """Check one value against the type of its field, naming the key when it does not fit."""
    if key not in FIELDS:
        raise UserError(f"config: unknown key {key!r}")
    kind = type(FIELDS[key].default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise UserError(f"config: {key} must be a {kind.__name__}, got {value!r}")
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


def save_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, so a crash never leaves a truncated file that reads as valid."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a server run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions(base: str | Path) -> list[int]:
    """The integer folders under `base`, ascending: TF Serving's versions, or a name's runs."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


_KILL_HITS: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process here when KERAS_SENTIMENT_KILL_AT is `name[@N]`."""
    point, _, nth = os.environ.get("KERAS_SENTIMENT_KILL_AT", "").partition("@")
    if point == name:
        _KILL_HITS[name] = _KILL_HITS.get(name, 0) + 1
        if _KILL_HITS[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)

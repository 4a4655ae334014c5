"""Runs: run folders, their backups and files, written so that a kill never loses a run.

A run is `runs/NAME/VERSION/`: its config, vocabulary, backups (`checkpoint/`), history, best
model so far (`best.keras`: raw text in, the LSTM alone at its best epoch), report and plots.
Every file is written whole to a temporary sibling and renamed; `RunState` keeps early
stopping, learning-rate decay and backups in one JSON file written last, so the same `fit`
command resumes an interrupted run exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from keras_sentiment.config import FIELDS, Config, UserError, on_command_line, spelled
from keras_sentiment.files import kill_point, save_json, write_atomic
from keras_sentiment.records import WHERE_NOT_WHAT, read_run_config, versions


def open_run(cfg: Config) -> tuple[Path, bool]:
    """The run's folder `runs/NAME/VERSION/` and whether it resumes an interrupted run.

    An unfinished run whose settings give the same result (`same_result`) is resumed;
    otherwise a new folder takes the next version that neither runs/NAME nor
    saved_models/NAME holds, so the run and the SavedModel it exports share a number. Nothing
    of another run is ever touched.
    """
    base = Path(cfg.runs_dir) / cfg.run_name
    for version in reversed(versions(base)):
        run_dir = base / str(version)
        recorded = read_run_config(run_dir)
        if not (run_dir / "summary.json").is_file() and recorded is not None:
            if same_result(recorded, cfg):
                return run_dir, True
    taken = versions(base) + versions(Path(cfg.output_dir) / cfg.run_name)
    version = max(taken, default=0) + 1
    while True:  # mkdir is the reservation: two fits started at once get two numbers
        try:
            (base / str(version)).mkdir(parents=True)
            return base / str(version), False
        except FileExistsError:
            version += 1


def same_result(recorded: dict, cfg: Config) -> bool:
    """Whether a run recorded with the settings `recorded` computes what `cfg` would.

    Every setting but `WHERE_NOT_WHAT` counts. A setting the record lacks (added to Config
    after the run started) counts at its default, so an interrupted run still resumes after
    the package gains a setting; a recorded key Config no longer has is not compared.
    """
    settings = cfg.to_dict()
    return all(
        recorded.get(key, field.default) == settings[key]
        for key, field in FIELDS.items()
        if key not in WHERE_NOT_WHAT
    )


def read_history(path: Path) -> list[dict[str, float]]:
    """The epochs a run logged, from its history.csv (epochs count from 1)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


class RunState(keras.callbacks.Callback):
    """Early stopping, learning-rate decay, best model and backups, all surviving SIGKILL.

    Keras' BackupAndRestore, EarlyStopping, ReduceLROnPlateau and ModelCheckpoint keep their
    state in memory and write their files in place: a kill loses the state or leaves a cut
    file that breaks the resume. Here every file is written whole and renamed, and one JSON
    file, written last, names the files that belong together. The backup holds every model
    variable (dropout seeds included) and the optimizer's, so a resumed run continues with
    exactly the numbers an uninterrupted one would have.

    At each new best epoch it also writes `best.keras`, the model a user can take from an
    interrupted run: `as_text(network)` (raw strings in, like `model.keras`, but the LSTM
    alone: the n-gram branch is fitted after training), or the network itself without it.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: Config,
        steps_per_epoch: int,
        as_text: Callable[[keras.Model], keras.Model] | None = None,
    ):
        super().__init__()
        self.run_dir, self.cfg, self.steps = run_dir, cfg, steps_per_epoch
        self.as_text, self._text_model = as_text, None
        self.dir = run_dir / "checkpoint"
        path = self.dir / "state.json"
        self.state = (
            json.loads(path.read_text())
            if path.is_file()
            else {
                "epoch": 0,  # epochs finished
                "step": 0,  # steps finished in the next epoch
                "history": [],
                "best": None,
                "best_epoch": None,
                "wait": 0,
                "stopped": False,
                "finished": False,
                "weights": None,
                "best_weights": None,
            }
        )
        self.step_offset = 0

    # -- what _fit() asks --------------------------------------------------------------
    @property
    def position(self) -> tuple[int, int]:
        """(epochs finished, steps finished in the next epoch)."""
        return self.state["epoch"], self.state["step"]

    @property
    def done(self) -> bool:
        """Training is over: every epoch run, or early stopping said stop."""
        return self.state["stopped"] or self.state["epoch"] >= self.cfg.epochs

    def restore(self, model: keras.Model) -> None:
        """Put the backed-up variables (weights, seeds, optimizer) back into the model."""
        if self.state["weights"]:
            _assign(_variables(model), self._load(self.state["weights"]))

    def finish(self, model: keras.Model) -> None:
        """End of training: the best epoch's weights in the model, and the state says so."""
        if self.state["best_weights"]:
            _assign(model.weights, self._load(self.state["best_weights"]))
        self.state["finished"] = True
        self._commit()
        kill_point("trained")

    # -- Keras hooks ---------------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = self.step_offset + batch + 1
        every = self.cfg.checkpoint_steps
        if every and step % every == 0 and step < self.steps:
            self.state["step"] = step
            self._backup()

    def on_epoch_end(self, epoch, logs=None):
        state, monitor = self.state, self.cfg.monitor
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row.update(learning_rate=lr, seconds=round(time.perf_counter() - self._started, 2))
        state["history"].append(row)
        score, best, best_file = row[monitor], state["best"], None
        if best is None or (score < best if monitor.endswith("loss") else score > best):
            state.update(best=score, best_epoch=epoch + 1, wait=0)
            best_file = f"best-e{epoch + 1}.npz"
            self._save(best_file, self.model.weights)
        else:
            state["wait"] += 1
            if self.cfg.lr_decay < 1:  # smaller steps once the validation score stalls
                lower = max(lr * self.cfg.lr_decay, self.cfg.learning_rate / 16)
                self.model.optimizer.learning_rate.assign(lower)
                print(f"epoch {epoch + 1}: learning rate {lr:.2e} -> {lower:.2e}", flush=True)
            if state["wait"] >= self.cfg.patience:
                state["stopped"] = True
                self.model.stop_training = True
                print(f"epoch {epoch + 1}: early stopping, best epoch {state['best_epoch']}")
        state.update(epoch=epoch + 1, step=0)
        self.step_offset = 0
        self._backup(best_file)

    # -- files ---------------------------------------------------------------------------
    def _backup(self, best_file: str | None = None) -> None:
        name = f"e{self.state['epoch']}-s{self.state['step']}.npz"
        self._save(name, _variables(self.model))
        kill_point("backup-written")
        self.state["weights"] = name
        if best_file:
            self.state["best_weights"] = best_file
        self._commit()
        if best_file:  # the user's copy of the best model, for Ctrl-C and inspection
            save_keras(self._best_model(), self.run_dir / "best.keras")
        kill_point("step-backup" if self.state["step"] else "epoch-end")

    def _best_model(self) -> keras.Model:
        # Built once around the network being trained: it shares its layers, so each save
        # writes the current weights without building a model again.
        if self.as_text is None:
            return self.model
        if self._text_model is None or self._text_model[0] is not self.model:
            self._text_model = (self.model, self.as_text(self.model))
        return self._text_model[1]

    def _commit(self) -> None:
        # The state names its files, so it is written after them and before old ones go.
        save_json(self.dir / "state.json", self.state)
        keep = {"state.json", self.state["weights"], self.state["best_weights"]}
        for path in self.dir.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)
        write_history(self.run_dir / "history.csv", self.state["history"])

    def _save(self, name: str, variables: list) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, *[keras.ops.convert_to_numpy(v) for v in variables])
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.dir / name)

    def _load(self, name: str) -> list[np.ndarray]:
        with np.load(self.dir / name) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]


def _variables(model: keras.Model) -> list:
    # Built before the first step, so a resumed run can restore into them.
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return list(model.variables) + list(model.optimizer.variables)


def _assign(variables: list, values: list[np.ndarray]) -> None:
    if len(variables) != len(values):
        raise UserError(f"the run's backup does not fit this model; pass another {spelled('name')}")
    for variable, value in zip(variables, values):
        variable.assign(value)


def save_keras(model: keras.Model, path: Path) -> None:
    """Save a .keras file whole or not at all."""
    # Keras wants the .keras suffix; write a sibling, then rename over the old one.
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """history.csv, rewritten whole from the run's state (never a half or repeated row)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, out.getvalue())


def interrupted(run_dir: Path) -> str:
    """What an interrupted fit keeps in `run_dir`, and how to go on, in one line."""
    try:
        state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    except (OSError, ValueError):
        return (
            f"interrupted before the first backup: {run_dir} keeps the config and vocabulary "
            f"only; {_again()} to start its training over"
        )
    epoch, step = state["epoch"], state["step"]
    where = f"epoch {epoch + 1} step {step}" if step else f"the end of epoch {epoch}"
    best = ""
    if state["best_weights"] and (run_dir / "best.keras").is_file():
        best = (
            f" and the best model so far ({run_dir / 'best.keras'}), the LSTM of epoch "
            f"{state['best_epoch']} alone (raw text in, no mix yet; predict and load "
            "take it)"
        )
    if state.get("finished"):
        where = "the end of training"
    return f"interrupted: {run_dir} keeps the backup of {where}{best}; {_again()} to resume"


def _again() -> str:
    return "run the same command again" if on_command_line() else "call ks.fit with the same config"


def finished_runs(runs_dir: str | Path, name: str) -> list[Path]:
    """The finished run folders of a name, oldest first (those with a summary and a model)."""
    base = Path(runs_dir) / name
    needed = ("model.keras", "preprocessor.json", "summary.json")
    return [
        base / str(v)
        for v in versions(base)
        if all((base / str(v) / file).is_file() for file in needed)
    ]

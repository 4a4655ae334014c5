"""The whole job as a Python API: `fit`, `load`, `evaluate` and `export`.

The command line parses its flags into a `Config` and calls these; a notebook calls them
directly and gets the same work, files and printed lines. `fit` reads top to bottom as the
job does: load the data, open the run, preprocess, train, stack the mix, report,
export.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_sentiment.config import Config, UserError, on_command_line, spelled
from keras_sentiment.data.splits import Splits, load_splits, load_unlabeled, memory_key
from keras_sentiment.files import kill_point, remove, save_json, write_atomic
from keras_sentiment.network.mix import Mix, char_order, fit_mix
from keras_sentiment.network.model import build_model, text_model
from keras_sentiment.records import (
    RunRecord,
    recorded_classes,
    versions,
    write_run_config,
    write_summary,
)
from keras_sentiment.reporting.evaluation import (
    format_report,
    mix_rows,
    most_confident_errors,
    predict_rows,
    report,
)
from keras_sentiment.reporting.model_card import reviews_to_explain, run_summary
from keras_sentiment.reporting.plots import write_plots
from keras_sentiment.serving.prediction import (
    Predictor,
    SavedModelPredictor,
    evaluate_predictor,
    load_predictor,
    recorded_fit,
)
from keras_sentiment.serving.saved_model import (
    export_again,
    export_saved_model,
    served_before,
    server_files,
)
from keras_sentiment.text.embeddings import embedding_matrix
from keras_sentiment.text.preprocessing import TextPreprocessor, adapt_preprocessor, vectorize
from keras_sentiment.training.pretraining import corpus, load_pretrained, pretrain
from keras_sentiment.training.runs import finished_runs, interrupted, open_run, save_keras
from keras_sentiment.training.train import is_chief, make_strategy, train


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`; its message says what the run folder keeps and how to resume."""


@dataclass
class Run:
    """What `fit` made: the raw-text model, its history and report, and where its files are."""

    model: keras.Model | None  # raw strings in, probabilities out (None on a worker)
    history: list[dict[str, float]]
    report: dict
    run_dir: Path
    export_path: Path | None  # saved_models/NAME/VERSION (None on a worker)
    summary: RunRecord = field(repr=False)  # what summary.json records

    def predictor(self) -> Predictor:
        """The exported SavedModel as a predictor (labels as `str`)."""
        return SavedModelPredictor(self.export_path)

    def __repr__(self) -> str:
        # Short: the history, report and summary are attributes to look at, not a repr.
        version = self.run_dir.name
        accuracy = self.report.get("accuracy")
        export = None if self.export_path is None else str(self.export_path)
        return (
            f"Run(name={self.run_dir.parent.name!r}, "
            f"version={int(version) if version.isdigit() else version!r}, "
            f"accuracy={None if accuracy is None else round(accuracy, 4)}, "
            f"run_dir={str(self.run_dir)!r}, export_path={export!r})"
        )


def fit(config: Config | None = None, data: Any = None, test_data: Any = None) -> Run:
    """Train, report on the test split once, and export a SavedModel for TF Serving.

    The same work, files and printed lines as `python -m keras_sentiment fit`. It seeds
    Python, NumPy and TensorFlow with `config.seed` (`keras.utils.set_random_seed`) and leaves
    them so; Keras' dtype policy is restored when it returns.

    Args:
        config: every setting (default: `Config()`, the full IMDB run).
        data: in-memory training data instead of `config.dataset`: a pandas DataFrame with
            `text` and `label` columns, a `(texts, labels)` pair, or a `tf.data.Dataset` of
            `(text, label)`.
        test_data: in-memory test data, in the same forms (default: a stratified 20% of
            `data` is held out).

    Returns:
        The run: `model` (raw strings in, probabilities out), `history`, `report` (the test
        report), `run_dir` and `export_path`.

    Raises:
        UserError: bad settings or data, missing resources (one line, no traceback needed).
        Interrupted: Ctrl-C; the same call again resumes the run.

    Example:
        >>> import keras_sentiment as ks
        >>> texts, labels = ["a great film", "a dull film"] * 50, ["pos", "neg"] * 50
        >>> cfg = ks.Config(epochs=1, lstm_units=8, embeddings="none", embedding_dim=8,
        ...     lemmatize=False)  # a quick one: runs/ and saved_models/ in this folder
        >>> run = ks.fit(cfg, data=(texts, labels))  # doctest: +ELLIPSIS
        data: memory: 100 texts (test: stratified 20% held out): train 72, validation 8, ...
        >>> run.report["accuracy"], run.export_path
        (1.0, PosixPath('saved_models/memory_lstm/1'))
    """
    cfg = (config or Config()).validate()
    policy = keras.mixed_precision.global_policy()
    try:
        return _fit(cfg, data, test_data)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _fit(cfg: Config, data: Any, test_data: Any) -> Run:
    started = time.perf_counter()
    strategy = make_strategy(cfg.strategy)  # first: multi-worker must precede other TF ops
    keras.utils.set_random_seed(cfg.seed)
    splits = load_splits(cfg, data, test_data)
    if data is not None:  # the run's config names its data, so a resume never mixes data
        cfg = dataclasses.replace(cfg, dataset=f"memory:{memory_key(splits.train, splits.test)}")
    cfg = dataclasses.replace(cfg, name=cfg.run_name)
    _check_classes(cfg, splits.class_names)
    chief = is_chief(strategy)
    run_dir, resuming = _open(cfg, strategy, chief)
    try:
        return _fit_run(cfg, splits, strategy, chief, run_dir, resuming, started)
    except UserError:
        if not (run_dir / "checkpoint").exists():  # nothing trained: leave no empty run
            remove(run_dir)
            if run_dir.parent.is_dir() and not any(run_dir.parent.iterdir()):
                run_dir.parent.rmdir()
            print(f"run folder {run_dir} removed: nothing was trained", flush=True)
        raise
    except KeyboardInterrupt:
        raise Interrupted(interrupted(run_dir)) from None


def _check_classes(cfg: Config, class_names: list[str]) -> None:
    """A name serves one set of classes: data with others never become its next version."""
    for where, names in recorded_classes(cfg.output_dir, cfg.runs_dir, cfg.name).items():
        if names != list(class_names):
            raise UserError(
                f"{where} was trained on the classes {names}, these data have "
                f"{list(class_names)}: one name serves one set of classes; give this model a "
                f"name of its own with {spelled('name')}"
            )


def _open(cfg: Config, strategy, chief: bool) -> tuple[Path, bool]:
    """The run folder (a new one, or the interrupted run with this exact config)."""
    if chief:
        run_dir, resuming = open_run(cfg)
    else:  # workers keep their own backups; only the chief writes what users read
        run_dir = Path(cfg.runs_dir) / cfg.name / f".worker-{strategy.cluster_resolver.task_id}"
        resuming = (run_dir / "config.json").is_file()
    if resuming:
        print(f"resuming the interrupted run in {run_dir}", flush=True)
    write_run_config(run_dir, cfg)
    print(f"run folder: {run_dir}  (tensorboard --logdir {run_dir / 'logs'})", flush=True)
    return run_dir, resuming


def _fit_run(cfg, splits: Splits, strategy, chief, run_dir, resuming, started) -> Run:
    texts, unlabeled = splits.train.texts, None
    if cfg.pretrain_epochs:
        # The vocabulary and the language models see every training text (labels unread)
        # and the unlabeled ones; validation labels still only pick the best epoch.
        unlabeled = load_unlabeled(cfg)
        texts = corpus(splits.train.texts, splits.val.texts, unlabeled)
        print(f"data: {len(unlabeled)} unlabeled texts for pretraining", flush=True)
    pre = _preprocessor(cfg, texts, run_dir)
    rows = _vectorize(pre, splits)
    matrix, glove = embedding_matrix(cfg, pre.vocabulary)
    pretrained, pretraining = _pretrain(cfg, pre, texts, unlabeled, matrix)
    shape = (len(pre.vocabulary), len(splits.class_names))

    def build() -> keras.Model:
        model = build_model(cfg, *shape, matrix)
        if pretrained is not None:
            load_pretrained(model, pretrained)
        return model

    def as_text(network: keras.Model) -> keras.Model:  # best.keras: the LSTM alone, raw text in
        return text_model(pre, network, None, splits.class_names)

    train_rows, val_rows = (rows["train"], splits.train.labels), (rows["val"], splits.val.labels)
    trained = train(cfg, strategy, build, train_rows, val_rows, run_dir, as_text)
    if not chief:
        remove(run_dir)
        print("worker done: the chief writes the report and the SavedModel", flush=True)
        return Run(None, trained.history, {}, run_dir, None, RunRecord())
    mix, mixing, members, words = _mix(cfg, pre, splits, rows, trained.model)
    text = text_model(pre, trained.model, mix, splits.class_names)  # what users load and call
    save_keras(text, run_dir / "model.keras")
    result, probs = _test_report(trained.model, mix, members, words, rows["test"], splits, mixing)
    save_json(run_dir / "report.json", result)
    kill_point("reported")
    labels, names = splits.test.labels, splits.class_names
    plots = write_plots(run_dir, trained.history, labels, probs, names, trained.best_epoch)
    kill_point("plotted")
    facts = {"embeddings": glove, "pretraining": pretraining, "mix": mixing, "resumed": resuming}
    facts.update(vocabulary_size=len(pre.vocabulary), run_dir=str(run_dir.resolve()))
    facts["tokens_per_epoch"] = sum(len(r) for r in rows["train"])
    facts["errors"] = most_confident_errors(splits.test.texts, labels, probs, names)
    facts["reviews_to_explain"] = reviews_to_explain(splits.test.texts, labels, probs, names)
    facts["wall_seconds"] = round(time.perf_counter() - started, 1)
    record = run_summary(cfg, splits, trained, result, facts)
    path = _export(cfg, pre, trained.model, mix, splits.class_names, record, run_dir)
    _finish(path, run_dir, plots, record)
    return Run(text, trained.history, result, run_dir, path, record)


def _preprocessor(cfg: Config, texts: np.ndarray, run_dir: Path) -> TextPreprocessor:
    """The run's preprocessor: adapted on the training texts, or as the interrupted run had it."""
    if (run_dir / "preprocessor.json").is_file():
        return TextPreprocessor.from_config(json.loads((run_dir / "preprocessor.json").read_text()))
    pre = adapt_preprocessor(cfg, texts)
    save_json(run_dir / "preprocessor.json", pre.get_config())
    return pre


def _vectorize(pre: TextPreprocessor, splits: Splits) -> dict[str, list[np.ndarray]]:
    """Token ids of every split's texts, computed once."""
    start = time.perf_counter()
    rows = {name: vectorize(pre, getattr(splits, name).texts) for name in ("train", "val", "test")}
    tokens = sum(len(r) for r in rows["train"])
    print(
        f"vectorized {sum(len(r) for r in rows.values())} texts "
        f"({tokens / max(1, len(rows['train'])):.0f} tokens per training text; "
        f"{time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    return rows


def _pretrain(cfg: Config, pre, texts, unlabeled, matrix) -> tuple[dict | None, dict]:
    """Language-model pretraining when asked: its weights and what it did (or None, {})."""
    if not cfg.pretrain_epochs:
        return None, {}
    start = time.perf_counter()
    lm_rows = vectorize(pre, texts)
    weights = pretrain(cfg, lm_rows, matrix, len(pre.vocabulary))
    info = {
        "texts": len(lm_rows),
        "unlabeled_texts": len(unlabeled),
        "tokens": sum(len(r) for r in lm_rows),
        "epochs": cfg.pretrain_epochs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    # Fine-tuning starts from the same random state whether pretraining ran or was cached.
    keras.utils.set_random_seed(cfg.seed)
    return weights, info


def _mix(cfg: Config, pre: TextPreprocessor, splits: Splits, rows: dict, model):
    """The n-gram members fitted on train and stacked with the LSTM on validation.

    Returns:
        The mix (None where the LSTM answers alone), how it was chosen ({} when off), every
        member fitted, and the test texts' words as read (None unless a member reads them).
    """
    if not (cfg.ngrams or cfg.char_ngrams):
        return None, {}, [], None
    if len(splits.class_names) != 2:
        print(f"mix: off (NB-LR needs two classes, not {len(splits.class_names)})", flush=True)
        return None, {}, [], None
    chars = char_order(cfg, rows["train"])
    words = dict.fromkeys(("train", "val", "test"))
    if chars:  # the char member reads each word as written, not its id
        for name in words:
            words[name], _ = vectorize(pre, getattr(splits, name).texts, words=True)
    train, val = ((words[n], rows[n], getattr(splits, n).labels) for n in ("train", "val"))
    lstm_val = predict_rows(model, rows["val"])
    mix, info, members = fit_mix(cfg, chars, len(pre.vocabulary), train, val, lstm_val)
    return mix, info, members, words["test"]


def _test_report(model, mix: Mix | None, members, words, rows, splits: Splits, mixing: dict):
    """The test split, touched once, here: the report, and the probabilities it scored (each
    part's accuracy alone too, the members the stack dropped included)."""
    probs = predict_rows(model, rows)
    if members:  # where the stack left the LSTM alone, a mix of it alone scores the parts
        mixed, parts = mix_rows(mix or Mix([], 1.0, [], 0.0), words, rows, probs, members)
        probs = probs if mix is None else mixed
        labels = splits.test.labels
        accuracy = {name: float(np.mean((p > 0) == labels)) for name, p in parts.items()}
        mixing["test_accuracy"] = {**accuracy, "mixed": float(np.mean(probs.argmax(1) == labels))}
        alone = ", ".join(f"{name} {a:.4f}" for name, a in accuracy.items())
        print(f"test accuracy of each part alone: {alone}", flush=True)
    result = report(splits.test.labels, probs, splits.class_names)
    print("\ntest report\n" + format_report(result), flush=True)
    return result, probs


def _export(cfg, pre, model, mix, class_names, record: RunRecord, run_dir) -> Path:
    """The SavedModel under the run's own version number; the card beside the run too."""
    base = Path(cfg.output_dir) / cfg.name
    path = export_saved_model(pre, model, class_names, base, record, int(run_dir.name), mix)
    kill_point("exported")
    write_atomic(run_dir / "MODEL_CARD.md", (path / "assets.extra" / "MODEL_CARD.md").read_text())
    record.export = str(path)
    write_summary(run_dir, record)  # written last: the run is finished
    remove(run_dir / "checkpoint")
    return path


def _finish(path: Path, run_dir: Path, plots: list[Path], record: RunRecord) -> None:
    """The closing lines: what was written, the score, and how to use the model."""
    print(f"\nwrote: {path}  (SavedModel for TF Serving; metadata in {path / 'assets.extra'})")
    kept = "config, preprocessor, history, report, summary, MODEL_CARD.md, model.keras, best.keras"
    print(f"wrote: {run_dir}  ({kept}, logs)")
    print(f"wrote: {', '.join(p.name for p in plots)} in {run_dir}")
    print(
        f"test accuracy {record.metrics.accuracy:.4f}, macro F1 "
        f"{record.metrics.macro_f1:.4f}, {record.training.wall_seconds:.0f}s"
    )
    print(f'try it: python -m keras_sentiment predict {path.parent} "What a wonderful film!"')
    for line in served_before(path.parent, int(path.name), record):
        print(line, flush=True)


def load(path: str | Path) -> Predictor:
    """A trained model as a predictor: raw texts in, probabilities and `str` labels out.

    Args:
        path: a SavedModel (`saved_models/NAME`, its highest version, or
            `saved_models/NAME/VERSION`), or a `.keras` file from `fit`
            (`runs/NAME/VERSION/model.keras`).

    Returns:
        A `SavedModelPredictor` or a `KerasPredictor`; both answer `predictor(texts)` with
        `probabilities`, `label`, `label_id` and `classes`.

    Raises:
        UserError: no such model, or not one this package can read.

    Example:
        >>> predictor = ks.load("saved_models/imdb_lstm_quick")
        >>> predictor("What a wonderful film!")["label"]
        array(['pos'], dtype=object)
    """
    return load_predictor(path)


def evaluate(
    model: str | Path | Predictor | Run,
    data: Any = None,
    split: str = "test",
    max_test: int = 0,
    label_map: str | dict | None = None,
) -> dict:
    """The classification report of a trained model on labeled texts.

    Args:
        model: a Run, a predictor, or a path `load` takes.
        data: what to score: None for the test split the model was reported on (as its
            `fit` cut it; a `.keras` file finds it in its run folder's config.json); a TFDS
            name, folder or review file (CSV, JSONL or Parquet: whole; a TFDS data set or
            folder: its `split`); or in-memory data as `fit` takes it.
        split: the split of a TFDS data set or folder.
        max_test: score at most this many texts (a seeded, stratified sample; 0: all).
        label_map: the data's labels as the model's classes, where they differ: a dict
            (`{0: "neg", 1: "pos"}`) or the command line's `"0=neg,1=pos"`.

    Returns:
        The report (`accuracy`, `macro_f1`, `per_class`, `confusion_matrix`, ...) with
        `seconds`, the scoring time after loading.

    Raises:
        UserError: no data on record and none given; a class of the data that is not one of
            the model's (the message says how to map them); a file that cannot be read.

    Example:
        >>> ks.evaluate("saved_models/imdb_lstm_quick", max_test=500)["accuracy"]  # doctest: +SKIP
        0.852
        >>> ks.evaluate(model, "reviews01.csv", label_map={0: "neg", 1: "pos"})  # doctest: +SKIP
    """
    if isinstance(model, Run):
        predictor, summary = model.predictor(), model.summary
    elif isinstance(model, (str, Path)):
        predictor, summary = load_predictor(model), recorded_fit(model)
    else:
        predictor, summary = model, None
    return evaluate_predictor(predictor, data, split, max_test, summary, label_map)


def export(
    run: Run | str | Path | None = None,
    *,
    name: str = "",
    runs_dir: str = "runs",
    output_dir: str = "saved_models",
    models_config: bool = False,
    batching: bool = False,
    base_path_prefix: str = "/models",
    files_only: bool = False,
) -> Path:
    """Export a finished run's model again, as the next version TF Serving will serve; or,
    with `files_only`, only write the server's files for the version already there.

    Args:
        run: a Run, a run folder (`runs/NAME/VERSION`), or None for the latest finished run
            of `name` in `runs_dir`.
        name: the model name when `run` is None (default: `imdb_lstm`).
        runs_dir: where the run folders are.
        output_dir: where the versioned SavedModels go.
        models_config: also write `output_dir/models.config` listing every model there.
        batching: also time the new version and write `output_dir/NAME/batching_parameters.txt`.
        base_path_prefix: where the server sees `output_dir`, for `models.config`.
        files_only: export nothing: write `models.config` and/or the batching parameters
            (timing the latest version of the name) for what `output_dir` already holds.

    Returns:
        The new version folder; with `files_only`, the file written last (`models.config`
        when asked, else `batching_parameters.txt`).

    Raises:
        UserError: no finished run to export; with `files_only`, no file asked for, or no
            exported version of the name to time.

    Example:
        >>> ks.export(name="imdb_lstm_quick")  # doctest: +ELLIPSIS
        wrote: saved_models/imdb_lstm_quick/2  (the model of runs/imdb_lstm_quick/1)
        ...
        PosixPath('saved_models/imdb_lstm_quick/2')
        >>> ks.export(name="imdb_lstm_quick", models_config=True, files_only=True)
        wrote: saved_models/models.config
        PosixPath('saved_models/models.config')
    """
    run_dir = Path(run.run_dir if isinstance(run, Run) else run) if run else None
    if files_only:
        name = run_dir.parent.name if run_dir else name or Config().run_name
        return _server_files(name, output_dir, models_config, batching, base_path_prefix)
    if run_dir is None:
        name = name or Config().run_name
        found = finished_runs(runs_dir, name)
        if not found:
            raise UserError(f"export: no finished run of {name!r} in {Path(runs_dir) / name}")
        run_dir = found[-1]
    return export_again(run_dir, output_dir, models_config, batching, base_path_prefix)


def _server_files(name: str, output_dir, models_config, batching, base_path_prefix) -> Path:
    """`export(files_only=True)`: models.config, and the batching parameters of the latest
    version of `name`; returns the file written last."""
    if not (models_config or batching):
        flags = (
            "--models-config or --batching-parameters"
            if on_command_line()
            else "models_config=True or batching=True"
        )
        raise UserError(f"export: files only, but which? Ask for {flags}")
    latest = None
    if batching:  # models.config lists every model there: it needs no name
        found = versions(Path(output_dir) / name)
        if not found:
            raise UserError(
                f"export: no exported version of {name!r} in {Path(output_dir) / name} to time"
            )
        latest = Path(output_dir) / name / str(found[-1])
    return server_files(latest, output_dir, models_config, batching, base_path_prefix)


def score(model: str | Path, inputs: str, output: str, **options: Any) -> dict:
    """Score files of reviews with Apache Beam's RunInference (`pip install -e ".[beam]"`).

    Every record of the input comes out once: a prediction, or a row of `errors-*.jsonl` that
    names its file and line(s) and why (the records are read as `fit` reads them). A run that
    fails leaves `output` as it found it.

    Args:
        model: `saved_models/NAME[/VERSION]` (a path the workers read, on a remote runner).
        inputs: a file pattern or folder of JSONL, CSV, Parquet or text files, a review a row.
        output: a new or empty folder (anything else is refused: no mixed or duplicate rows).
        **options: explain, output_format (jsonl, parquet), input_format, text_field, id_field,
            num_shards, pipeline_args (Beam's flags; default: the local runner in this
            process; `["--direct_num_workers=2", "--direct_running_mode=multi_processing"]`
            for two worker processes).

    Returns:
        Records `read`, `scored`, `failed` and `multiline` (over several lines), the `output`
        folder and the `seconds` taken.

    Example:
        >>> ks.score("saved_models/imdb_lstm", "reviews/*.jsonl", "scored")  # doctest: +SKIP
    """
    from keras_sentiment.scoring.beam import (
        score_files,  # Apache Beam is imported only here, on first use
    )

    return score_files(str(model), inputs, output, **options)

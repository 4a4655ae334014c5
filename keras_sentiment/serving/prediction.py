"""Prediction: score raw texts with an exported SavedModel or a `.keras` file.

`SavedModelPredictor` and `KerasPredictor` answer the same way: texts in, a dict of arrays
out, with labels as `str`. A single `str` or `bytes` is one text.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.config import FIELDS, Config, UserError, on_command_line
from keras_sentiment.data.sources import from_memory, parse_label_map, to_classes
from keras_sentiment.data.splits import load_test, load_test_split, subsample
from keras_sentiment.network.model import class_names_of
from keras_sentiment.records import (
    ExportRecord,
    RunRecord,
    read_metadata,
    read_run_config,
    versions,
)
from keras_sentiment.reporting.evaluation import report
from keras_sentiment.serving.explanation import keras_explain_function
from keras_sentiment.text.preprocessing import OOV, TextPreprocessor

Texts = str | bytes | Sequence[str | bytes]


def as_texts(texts: Texts) -> list[bytes]:
    """Texts as a list of UTF-8 bytes; one `str` or `bytes` is one text.

    Raises:
        TypeError: `texts` is neither a text nor a sequence of texts.
    """
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    elif not isinstance(texts, Sequence) and not hasattr(texts, "__array__"):
        raise TypeError(f"expected a text or a sequence of texts, got {type(texts).__name__}")
    data = []
    for i, text in enumerate(texts):
        if not isinstance(text, (str, bytes)):
            raise TypeError(f"text {i} is a {type(text).__name__}, not str or bytes")
        # surrogatepass: a lone surrogate (from surrogateescape'd bytes) still gets an answer.
        data.append(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    return data


def resolve_version(path: str | Path) -> Path:
    """A version folder itself, or the highest version under a model's base folder."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.exists():
        raise UserError(f"{path}: no such model folder")
    found = versions(path)
    if not found:
        raise UserError(f"{path}: not a SavedModel (no saved_model.pb) and no version folders")
    return path / str(found[-1])


class Predictor:
    """Raw texts in, probabilities and labels out, in length-sorted batches, two in flight.

    Subclasses give `class_names` and `_score(batch)`, the probabilities of a batch of texts.
    """

    class_names: list[str]
    default_batch = 256

    def __call__(self, texts: Texts, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Score texts.

        Args:
            texts: one text, or a sequence of texts (`str` or UTF-8 `bytes`).
            batch_size: texts per call of the model (default: the predictor's own).

        Returns:
            In input order: `probabilities` (float32, [n, classes]), `label` (str, [n]),
            `label_id` (int32, [n]), `classes` (str, [n, classes]: each column's class) and,
            where the model gives it, `known_words` (int32, [n]: how many of the words it
            read are in its vocabulary; 0 means the answer is only its prior).

        Raises:
            TypeError: `texts` is not a text or a sequence of texts.
        """
        data = as_texts(texts)
        size = batch_size or self.default_batch
        order = np.argsort([len(t) for t in data], kind="stable")
        starts = range(0, len(data), size)

        def score(start: int) -> dict[str, np.ndarray]:
            return self._score([data[i] for i in order[start : start + size]])

        if len(starts) <= 1:
            # No thread pool for one batch: starting one costs a short call a share of its time
            # (benchmarks/README.md, "Choices in the code").
            parts = [score(0)] if data else []
        else:  # a second batch in flight fills the cores while the first runs its short rows
            with ThreadPoolExecutor(2) as pool:
                parts = list(pool.map(score, starts))
        probabilities = np.zeros((len(data), len(self.class_names)), np.float32)
        known = np.zeros(len(data), np.int32)
        if parts:
            probabilities[order] = np.concatenate([part["probabilities"] for part in parts])
        if parts and all("known_words" in part for part in parts):
            known[order] = np.concatenate([part["known_words"] for part in parts])
        elif parts or not self._counts_words():
            known = None  # a model exported before the count
        return self._outputs(probabilities, known)

    def _outputs(
        self, probabilities: np.ndarray, known_words: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        names = np.array(self.class_names, dtype=object)
        label_id = probabilities.argmax(1).astype(np.int32)
        classes = np.tile(names[None, :], (len(label_id), 1))
        outputs = {
            "probabilities": probabilities,
            "label": names[label_id],
            "label_id": label_id,
            "classes": classes,
        }
        if known_words is not None:
            outputs["known_words"] = known_words
        return outputs

    def _score(self, batch: list[bytes]) -> dict[str, np.ndarray]:
        """`probabilities` of a batch of texts, and `known_words` where the model counts them."""
        raise NotImplementedError

    def _counts_words(self) -> bool:
        return True

    def explain(self, texts: Texts, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Each word's share of the score the model gives each text (integrated gradients).

        The score is the log-odds of the predicted class, the n-gram mix included
        (`serving/explanation.py`); each text's attributions sum to `score - baseline_score` within
        5% (or 0.02).

        Args:
            texts: one text, or a sequence of texts (`str` or UTF-8 `bytes`).
            batch_size: texts per call of the model.

        Returns:
            In input order: `tokens` (str, [n, words]: the words as the model read them,
            padded with ""), `attributions` (float32, same shape, 0 on padding), `score`
            and `baseline_score` (float32, [n]), and `probabilities`, `label`, `label_id`,
            `classes` and `known_words` as a call of the predictor gives them (`known_words`
            where the model counts them).

        Raises:
            TypeError: `texts` is not a text or a sequence of texts.
            UserError: a SavedModel exported without the `explain` signature.

        Example:
            >>> predictor = ks.load("saved_models/imdb_lstm_quick")
            >>> out = predictor.explain("A dull film.")
            >>> list(out["tokens"][0]), out["label"][0]
            (['a', 'dull', 'film'], 'neg')
            >>> out["tokens"][0][out["attributions"][0].argmax()]  # the strongest for "neg"
            'dull'
        """
        data = as_texts(texts)
        order = np.argsort([len(t) for t in data], kind="stable")  # batches of like lengths
        batches = [order[start : start + batch_size] for start in range(0, len(data), batch_size)]
        parts = [(rows, self._explain([data[i] for i in rows])) for rows in batches]
        width = max((part["tokens"].shape[1] for _, part in parts), default=0)
        merged = {"tokens": np.full((len(data), width), "", dtype=object)}
        merged["attributions"] = np.zeros((len(data), width), np.float32)
        merged.update({k: np.zeros(len(data), np.float32) for k in ("score", "baseline_score")})
        probabilities = np.zeros((len(data), len(self.class_names)), np.float32)
        counted = all("known_words" in part for _, part in parts) if parts else self._counts_words()
        known = np.zeros(len(data), np.int32) if counted else None  # None: exported before it
        for rows, part in parts:
            used = part["tokens"].shape[1]
            merged["tokens"][rows, :used] = np.vectorize(_decoded, otypes=[object])(part["tokens"])
            merged["attributions"][rows, :used] = part["attributions"]
            merged["score"][rows], probabilities[rows] = part["score"], part["probabilities"]
            merged["baseline_score"][rows] = part["baseline_score"]
            if known is not None:
                known[rows] = part["known_words"]
        return {**merged, **self._outputs(probabilities, known)}

    def _explain(self, batch: list[bytes]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _decoded(token: bytes | str) -> str:
    return token.decode("utf-8", "replace") if isinstance(token, bytes) else str(token)


class SavedModelPredictor(Predictor):
    """The `serving_default` signature of an exported model: what TF Serving answers.

    Args:
        path: a version folder (`saved_models/NAME/3`) or a model's folder (its highest
            version is used).

    Example:
        >>> predictor = SavedModelPredictor("saved_models/imdb_lstm_quick")
        >>> predictor("What a great film!")["label"]
        array(['pos'], dtype=object)
    """

    def __init__(self, path: str | Path):
        self.path = resolve_version(path)
        try:
            # Keep the loaded object: its resources (tables, variables) die with it.
            self._loaded = tf.saved_model.load(str(self.path))
            self.signature = self._loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path}: not a loadable SavedModel ({first})") from None
        # The version's record; an empty one for a SavedModel exported without it.
        self.metadata = read_metadata(self.path) or ExportRecord()
        self.class_names = self.metadata.class_names or [
            c.decode("utf-8") for c in self.signature(text=tf.constant([""]))["classes"][0].numpy()
        ]
        # Big batches pay only when ops keep to their own cores (startup.serving_threads).
        self.default_batch = 512 if tf.config.threading.get_intra_op_parallelism_threads() else 256

    def __repr__(self) -> str:
        version = f", version={self.path.name}" if self.path.name.isdigit() else ""
        return f"SavedModelPredictor({str(self.path)!r}{version}, classes={self.class_names})"

    def _score(self, batch: list[bytes]) -> dict[str, np.ndarray]:
        out = self.signature(text=tf.constant(batch, tf.string))
        return {k: out[k].numpy() for k in ("probabilities", "known_words") if k in out}

    def _counts_words(self) -> bool:
        return "known_words" in self.signature.structured_outputs

    def _explain(self, batch: list[bytes]) -> dict[str, np.ndarray]:
        explain = self._loaded.signatures.get("explain")
        if explain is None:
            again = (
                "python -m keras_sentiment export --name NAME"
                if on_command_line()
                else "ks.export(name=NAME)"
            )
            raise UserError(
                f"{self.path}: exported without an `explain` signature; export its run again "
                f"({again}) to add it"
            )
        return {k: v.numpy() for k, v in explain(text=tf.constant(batch, tf.string)).items()}


class KerasPredictor(Predictor):
    """A raw-text Keras model (`run.model`, or a `.keras` file from `fit`) as a predictor.

    Args:
        model: raw strings in, probabilities out.
        class_names: the classes of the probability columns (default: the model's own).
        path: the `.keras` file it was loaded from, if any.
    """

    def __init__(
        self,
        model: keras.Model,
        class_names: list[str] | None = None,
        path: str | Path | None = None,
    ):
        self.model = model
        self.class_names = class_names or class_names_of(model)
        self.path = None if path is None else Path(path)  # the .keras file, if from one
        self._explainer = None

    def __repr__(self) -> str:
        where = repr(str(self.path)) if self.path else f"model={self.model.name!r}"
        return f"KerasPredictor({where}, classes={self.class_names})"

    def _score(self, batch: list[bytes]) -> dict[str, np.ndarray]:
        text = tf.constant(batch, tf.string)
        out = {"probabilities": np.asarray(self.model(text, training=False))}
        pre = next((x for x in self.model.layers if isinstance(x, TextPreprocessor)), None)
        if pre is not None:  # the served graph's count, from the same ids
            out["known_words"] = np.sum(np.asarray(pre(text)) > OOV, axis=1).astype(np.int32)
        return out

    def _counts_words(self) -> bool:
        return any(isinstance(x, TextPreprocessor) for x in self.model.layers)

    def _explain(self, batch: list[bytes]) -> dict[str, np.ndarray]:
        if self._explainer is None:  # traced on first use: plain prediction never pays for it
            self._explainer = keras_explain_function(self.model)
        return {k: v.numpy() for k, v in self._explainer(tf.constant(batch, tf.string)).items()}


def load_predictor(path: str | Path) -> Predictor:
    """A SavedModel folder or a `.keras` file from `fit`, as a predictor (see `ks.load`)."""
    path = Path(path)
    if path.suffix != ".keras":
        return SavedModelPredictor(path)
    if not path.is_file():
        raise UserError(f"{path}: no such .keras file")
    try:
        return KerasPredictor(keras.saving.load_model(path), path=path)
    except (ValueError, TypeError, OSError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{path}: not a keras_sentiment model ({first})") from None


def evaluate_predictor(
    predictor: Predictor,
    data: Any,
    split: str,
    max_test: int,
    record: RunRecord | None = None,
    label_map: str | dict | None = None,
) -> dict:
    """The report of `predictor` on `data` (see `ks.evaluate`), with the scoring `seconds`.

    `record` (a run's; else the SavedModel's metadata, or the run folder's config.json beside
    a `.keras` file: `recorded_fit`) says which test split its fit scored. `label_map` maps the
    data's labels to the model's classes (`0=neg,1=pos` or a dict).
    """
    record = record or getattr(predictor, "metadata", None) or recorded_fit(predictor)
    record = record or RunRecord()
    test, names = _evaluation_data(record.config, data, split, max_test)
    classes = list(predictor.class_names)
    test = to_classes(test, names, classes, parse_label_map(label_map))
    start = time.perf_counter()
    outputs = predictor(list(test.texts))
    result = report(test.labels, outputs["probabilities"], classes)
    result["seconds"] = round(time.perf_counter() - start, 2)  # scoring only, after loading
    return result


def recorded_fit(model: Any) -> RunRecord | None:
    """What a model file records of its fit, as a run's record (its `config` only): the run
    folder's config.json beside a `.keras` file from `fit` (a path, or a predictor that knows
    its path); else None."""
    path = getattr(model, "path", model)
    if not isinstance(path, (str, Path)) or Path(path).suffix != ".keras":
        return None
    config = read_run_config(Path(path).parent)
    return None if config is None else RunRecord(config=config)


def _evaluation_data(trained: dict, data: Any, split: str, max_test: int):
    cfg = Config(**{k: v for k, v in trained.items() if k in FIELDS})
    if data is None:
        if not trained:
            raise UserError(
                "this model has no record of its data: say which data to score with "
                "--test-data FILE or --dataset NAME (data= in Python)"
            )
        # The test split its fit scored, cut further only when asked.
        return load_test(dataclasses.replace(cfg, max_test=max_test or cfg.max_test))
    if isinstance(data, (str, Path)):
        test, names = load_test_split(str(data), split, cfg)
    else:
        test, names = from_memory(data, cfg)
    return subsample(test, max_test, cfg.seed), names

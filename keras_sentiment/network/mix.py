"""The mix: the LSTM and the n-gram members, stacked on their log-odds.

Each part gives the log-odds of the second class (the LSTM: log p1 - log p0 of its softmax;
an n-gram member: its NB-LR logit); the mix is a logistic regression on them,

    s = bias + c_lstm * (log p1 - log p0) + sum over members of c_m * logit_m,

fitted on the validation split, where every part is a model that has not seen those texts
(stacking, Wolpert 1992). Log-odds rather than probabilities, because the parts are calibrated
differently (the LSTM is the more confident), and a weight per part learned, not picked from a
grid: the LSTM keeps a say where it helps, and a part that does not help gets no weight. On a
few hundred texts a grid over a probability mix overfits; three or four coefficients do not.
Being linear in the parts' log-odds, the mix also explains exactly: each part's share of s is
its coefficient times its own explanation (`serving/explanation.py`).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from keras_sentiment.config import Config
from keras_sentiment.network.ngrams import CHARS, WORDS, NgramMember, fit_member

FLOOR = 1e-7  # probabilities are clipped here before their log-odds: a saturated softmax is finite
STACK_C = 1.0  # inverse L2 strength of the stacking regression: a few coefficients, mildly held


def log_odds(probabilities: tf.Tensor) -> tf.Tensor:
    """log p1 - log p0 of two-class probabilities [..., 2]: [...].

    A weighted sum rather than two slices, so its gradient (the explanation's path) needs
    no slicing op's gradient in the served graph.
    """
    p = tf.maximum(tf.convert_to_tensor(probabilities, tf.float32), FLOOR)
    return tf.reduce_sum(tf.math.log(p) * tf.constant([-1.0, 1.0]), -1)


class MixScoring:
    """The mix's math, shared by the Keras layer and its served twin.

    Needs `members` (each with `logits(words, ids)`), `lstm_coefficient`, `coefficients`
    (one per member) and `bias`.
    """

    def combine(self, lstm: tf.Tensor | None, logits: list[tf.Tensor]) -> tf.Tensor:
        """s from the parts: the LSTM's log-odds (None where its coefficient is 0) and each
        member's logit, [batch]. The mix's one formula."""
        score = self.bias
        for member_logit, c in zip(logits, self.coefficients):
            score += c * member_logit
        if self.lstm_coefficient:
            score += self.lstm_coefficient * lstm
        return score

    def score(self, words: tf.Tensor, ids: tf.Tensor, probabilities: tf.Tensor | None):
        """s, the mix's log-odds of the second class, [batch] (the LSTM's probabilities may be
        None where its coefficient is 0)."""
        logits = [member.logits(words, ids) for member in self.members]
        lstm = log_odds(probabilities) if self.lstm_coefficient else None
        return tf.zeros([tf.shape(ids)[0]]) + self.combine(lstm, logits)

    def mixed(self, words: tf.Tensor, ids: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        """The two classes' probabilities under the mix, [batch, 2]."""
        return as_probabilities(self.score(words, ids, probabilities))


def as_probabilities(score: tf.Tensor) -> tf.Tensor:
    """[sigmoid(-s), sigmoid(s)] of log-odds s [batch]: [batch, 2]."""
    return tf.stack([tf.sigmoid(-score), tf.sigmoid(score)], 1)


@keras.saving.register_keras_serializable(package="keras_sentiment")
class Mix(MixScoring, keras.layers.Layer):
    """[words, ids, LSTM probabilities] -> the two classes' probabilities under the mix."""

    def __init__(
        self,
        members: list[NgramMember],
        lstm_coefficient: float,
        coefficients: list[float],
        bias: float,
        **kwargs,
    ):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.members = list(members)
        self.lstm_coefficient = float(lstm_coefficient)
        self.coefficients = [float(c) for c in coefficients]
        self.bias = float(bias)
        self.built = True

    def call(self, inputs):
        words, ids, probabilities = inputs
        return self.mixed(words, ids, probabilities)

    def compute_output_shape(self, input_shape):
        return input_shape[2]

    def get_config(self):
        return {
            **super().get_config(),
            "members": [keras.saving.serialize_keras_object(m) for m in self.members],
            "lstm_coefficient": self.lstm_coefficient,
            "coefficients": self.coefficients,
            "bias": self.bias,
        }

    @classmethod
    def from_config(cls, config):
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        return cls(members, **config)


# --- fitting ---------------------------------------------------------------------------------


def fit_stack(parts: dict[str, np.ndarray], labels: np.ndarray, seed: int) -> dict:
    """The mix's coefficients from the parts' log-odds on held-out texts.

    A logistic regression on every part; a part whose coefficient comes out 0 or below adds
    nothing the others do not, and is dropped (refitted without it). Where the held-out texts
    say one part alone is better than the stack (the stack's cross-validated accuracy on them
    against each part's own), that part answers alone.

    Args:
        parts: each part's log-odds of the second class on the held-out texts, by name
            ("lstm" first, then the members).
        labels: the held-out texts' labels (0 or 1).
        seed: the cross-validation's shuffling.

    Returns:
        `coefficients` (by part name, the dropped ones 0), `bias`, and the held-out
        accuracies: `parts` (each alone) and `mixed` (the stack's, cross-validated).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    names = list(parts)
    alone = {name: float(np.mean((parts[name] > 0) == labels)) for name in names}
    kept = list(names)
    while True:
        x = np.stack([parts[name] for name in kept], 1)
        model = LogisticRegression(C=STACK_C).fit(x, labels)
        weak = [name for name, c in zip(kept, model.coef_[0]) if c <= 0]
        if not weak or len(kept) == 1:
            break
        kept = [name for name in kept if name not in weak]
    folds = min(5, int(np.bincount(labels).min()))
    if folds >= 2:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        predicted = cross_val_predict(LogisticRegression(C=STACK_C), x, labels, cv=splitter)
        mixed = float(np.mean(predicted == labels))
    else:  # too few texts of a class to cross-validate: the fit's own accuracy
        mixed = float(np.mean(model.predict(x) == labels))
    coefficients = dict.fromkeys(names, 0.0)
    coefficients.update({name: float(c) for name, c in zip(kept, model.coef_[0])})
    bias = float(model.intercept_[0])
    best = max(names, key=lambda name: alone[name])
    if alone[best] > mixed:  # one part alone, as it is: its log-odds are the mix's
        coefficients, bias = {**dict.fromkeys(names, 0.0), best: 1.0}, 0.0
        mixed = alone[best]
    return {"coefficients": coefficients, "bias": bias, "parts": alone, "mixed": mixed}


SHORT_TEXTS = 100  # words read: below this median, char n-grams join the mix by default
CHAR_ORDER = 5  # the longest char n-gram when they join by default


def char_order(cfg: Config, rows: list[np.ndarray]) -> int:
    """The char n-grams' order: `cfg.char_ngrams`, or where it is -1 (auto), CHAR_ORDER for
    short texts (what a word's spelling says matters most where a text has few words) and 0
    for long ones (the word n-grams have enough to go on, and chars would cost the most)."""
    if cfg.char_ngrams >= 0:
        return cfg.char_ngrams
    lengths = [len(row) for row in rows]
    return CHAR_ORDER if lengths and np.median(lengths) < SHORT_TEXTS else 0


def fit_mix(
    cfg: Config,
    chars: int,
    vocabulary_size: int,
    train: tuple[list | None, list[np.ndarray], np.ndarray],
    val: tuple[list | None, list[np.ndarray], np.ndarray],
    lstm_val: np.ndarray,
) -> tuple[Mix | None, dict, list[NgramMember]]:
    """The n-gram members fitted on train, stacked with the LSTM on validation.

    Args:
        cfg: `ngrams` (the word member's order; 0: none) and `seed` are read.
        chars: the char member's order (0: none), see `char_order`.
        vocabulary_size: the preprocessor's vocabulary, the base of word n-gram keys.
        train: the training texts' words as read (None without a char member), ids and labels.
        val: the validation texts', the same way: they fit the stack.
        lstm_val: the LSTM's probabilities on the validation texts.

    Returns:
        The mix (None where the LSTM answers alone); how it was chosen: `members` (what
        each fitted), `coefficients` and `bias` (the stack's), `validation_accuracy` (each
        part alone, and the stack's, cross-validated) and `validation_texts`; and every
        member fitted, those the stack dropped included (for the test report's parts).
    """
    start = time.perf_counter()
    parts, members, fitted = {"lstm": np.asarray(log_odds(lstm_val))}, [], []
    for kind, order in ((WORDS, cfg.ngrams), (CHARS, chars)):
        if order:
            member, logits, info = fit_member(kind, order, vocabulary_size, train, val, cfg.seed)
            if member is not None:
                members.append(member)
                parts[kind] = logits
                fitted.append(info)
    if not members:
        print("mix: the LSTM alone (no n-gram in 2+ training texts, or one class)", flush=True)
        return None, {}, []
    stack = fit_stack(parts, val[2], cfg.seed)
    weights = stack["coefficients"]
    kept = [m for m in members if weights[m.kind]]
    info = {
        "members": fitted,
        "coefficients": weights,
        "bias": stack["bias"],
        "validation_accuracy": {**stack["parts"], "mixed": stack["mixed"]},
        "validation_texts": int(len(val[2])),
        "seconds": round(time.perf_counter() - start, 1),
    }
    for found in fitted:
        low = 1 if found["kind"] == WORDS else 2
        print(
            f"mix: {found['ngrams']:,} {found['kind'][:-1]} {low}-{found['order']}-grams in 2+ "
            f"labeled texts, NB-LR C={found['C']} ({found['seconds']:.1f}s)",
            flush=True,
        )
    accuracy = ", ".join(f"{name} {a:.4f}" for name, a in info["validation_accuracy"].items())
    terms = " + ".join(f"{weights[name]:.3g} x {name}" for name in parts if weights[name])
    print(f"mix: validation accuracy {accuracy} (mixed: 5-fold cross-validated)", flush=True)
    print(f"mix: log-odds = {stack['bias']:.3g} + {terms}", flush=True)
    if not kept:
        return None, info, members
    mix = Mix(kept, weights["lstm"], [weights[m.kind] for m in kept], stack["bias"], name="mix")
    return mix, info, members

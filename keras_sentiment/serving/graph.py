"""The served graph: everything TF Serving runs, as `tf.function`s over plain TensorFlow ops.

`serving_function` is the `serving_default` signature: raw strings in; probabilities, label,
label id and classes out. A single review, the commonest request, takes a path of its own
(`token_ids` of one text, `ServingNetwork.one`, `ServingNgrams.logit_of_one`); batches take
the ragged, packed path. `write_warmup` and `batching_parameters` are the files TF Serving
reads beside it.
"""

from __future__ import annotations

import itertools
import os
import platform
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_sentiment.compat import NO_INLINE
from keras_sentiment.network.mix import Mix, MixScoring, as_probabilities, log_odds
from keras_sentiment.network.ngrams import CHARS, WORDS, NgramMember, NgramScoring
from keras_sentiment.network.serving_network import ServingNetwork
from keras_sentiment.text.preprocessing import OOV, TextPreprocessor, token_ids

SIGNATURES = ("serving_default", "explain")  # what every export serves
WARMUP_TEXTS = [
    "A wonderful film with a moving story and great acting.",
    "Dull, predictable and far too long. I wanted my money back.",
    "",
]  # one request of these three, then one of the first alone: the batch and the single path


class ServingNgrams(NgramScoring, tf.Module):
    """An n-gram member for the served graph: a hash table finds the n-grams, plain variables.

    A binary search takes log2(keys) dependent probes per n-gram, a hash table about one
    (benchmarks/README.md, "n-grams found by binary search"). Exporting the Keras layer
    itself would also save each of its weights twice (as the Keras variable and as the
    tf.Variable under it). The table gives each kept n-gram its index + 1 and every other 0,
    whose weight is 0, so a single review's logit needs no mask.
    """

    def __init__(self, member: NgramMember):
        super().__init__(name=f"serving_{member.kind}_ngrams")
        self.kind, self.order = member.kind, member.order
        self.vocabulary_size, self.size = member.vocabulary_size, member.size
        keys = tf.constant(member.keys.numpy())
        init = tf.lookup.KeyValueTensorInitializer(
            keys, tf.range(1, member.size + 1, dtype=tf.int64)
        )
        self.table = tf.lookup.StaticHashTable(init, default_value=0)
        weights = np.concatenate([[0.0], member.coefficients.numpy()]).astype(np.float32)
        self.weights = tf.Variable(weights, trainable=False)  # [0, coefficients...]
        self.bias = tf.Variable(member.bias.numpy(), trainable=False)

    def find(self, grams: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Each n-gram's index among the kept ones, and whether it is one of them."""
        found = self.table.lookup(grams)
        return found - 1, found > 0

    def weight_of(self, index: tf.Tensor) -> tf.Tensor:
        """The coefficient of each kept n-gram's index."""
        return tf.gather(self.weights, index + 1)

    def logit_of_one(self, words: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """The logit of one review's unpadded words and ids [time]: a scalar."""
        if self.kind == WORDS:  # its keys straight from the ids, no bookkeeping
            keys = self.grams(ids)
        else:
            keys = self.occurrences(words[None], ids[None])[1]
        found, _ = tf.unique(self.table.lookup(keys))  # binary features
        return tf.reduce_sum(tf.gather(self.weights, found)) + self.bias


class ServingMix(MixScoring, tf.Module):
    """The mix for the served graph: the members' served twins, the coefficients as constants."""

    def __init__(self, mix: Mix):
        super().__init__(name="serving_mix")
        self.members = [ServingNgrams(member) for member in mix.members]
        self.lstm_coefficient, self.coefficients = mix.lstm_coefficient, list(mix.coefficients)
        self.bias = mix.bias
        self.reads_words = any(member.kind == CHARS for member in mix.members)

    def score_of_one(self, words: tf.Tensor, ids: tf.Tensor, probabilities: tf.Tensor):
        """s of one review's unpadded words and ids, and the LSTM's probabilities [1, 2]: [1]."""
        logits = [member.logit_of_one(words, ids) for member in self.members]
        lstm = log_odds(probabilities) if self.lstm_coefficient else None
        return tf.zeros([1]) + self.combine(lstm, logits)


def known_words(ids: tf.Tensor) -> tf.Tensor:
    """How many of the words the model read it knows, per text (punctuation marks are words
    too): ids past padding and OOV."""
    return tf.reduce_sum(tf.cast(ids > OOV, tf.int32), axis=-1)


def serving_function(
    pre: TextPreprocessor,
    network: ServingNetwork,
    class_names: list[str],
    mix: ServingMix | None = None,
):
    """The `serving_default` function: raw strings `text` -> probabilities, label, label_id,
    classes and known_words (how many words read are in the vocabulary), all graph ops.

    Args:
        pre: the preprocessing layer (its tables serve as they are).
        network: the served LSTM network.
        class_names: the classes, in the order of the probability columns.
        mix: the served mix with the n-gram members, or None.

    Returns:
        A `tf.function` with one input, `text` (`tf.string`, `[None]`).
    """
    # A mix that gives the LSTM no weight answers without running it.
    lstm = mix is None or bool(mix.lstm_coefficient)
    words = mix is not None and mix.reads_words

    def one(text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if words:
            read, ids = token_ids(pre, text[0], words=True)
        else:
            read, ids = None, token_ids(pre, text[0])
        probabilities = network.one(ids) if lstm else None
        if mix is not None:
            probabilities = as_probabilities(mix.score_of_one(read, ids, probabilities))
        return probabilities, known_words(ids[None])

    # The batch path as a function call the graph keeps (not inlined): for a single review
    # TensorFlow's executor then passes "dead" through one op instead of through each of the
    # batch path's hundreds (benchmarks/README.md, "Serving").
    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string)],
        experimental_attributes=NO_INLINE,
    )
    def batch(text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        read, ids = token_ids(pre, text, words=True) if words else (None, token_ids(pre, text))
        probabilities = network(ids) if lstm else None
        if mix is not None:
            probabilities = mix.mixed(read, ids, probabilities)
        return probabilities, known_words(ids)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        # A single review, the commonest request, skips the batch's ragged ids, lengths and
        # masks: fewer small ops, each a step of TensorFlow's executor (benchmarks/README.md).
        probabilities, known = tf.cond(tf.size(text) == 1, lambda: one(text), lambda: batch(text))
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        names = tf.constant(class_names)  # class names live in the graph
        return {
            "probabilities": probabilities,
            "label": tf.gather(names, label_id),
            "label_id": label_id,
            # TF Serving's own classify convention: the class of each score column.
            "classes": tf.tile(names[None, :], [tf.shape(label_id)[0], 1]),
            # 0: no word the model knows, so the answer is its prior (an empty or emoji line).
            "known_words": known,
        }

    return serve


def write_warmup(path: Path, texts: list[str]) -> None:
    """TF Serving warm-up file: a TFRecord of PredictionLog, so the first request is fast.

    For each signature, `serving_default` and `explain`, two requests: `texts` and its first
    text alone, since the served graph has a path for each.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, batch in itertools.product(SIGNATURES, (texts, texts[:1])):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=signature)
            )
            request.inputs["text"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def batching_parameters(version_dir: Path, texts: list[bytes], cores: int | None = None) -> str:
    """TF Serving's --batching_parameters_file for this model, from timing it on `texts`.

    The batching guide's CPU advice (one batch thread per core, tune max_batch_size and
    batch_timeout_micros by measurement) with the measured numbers: max_batch_size is the
    smallest size within 5% of the best reviews/s, and a request waits at most as long as a
    single review takes to serve, so batching at most doubles a lone request's latency.
    """
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    rates, single = {}, 0.0
    for size in (1, 8, 32, 64, 128, 256, 512):
        requests = [
            tf.constant([texts[(start + i) % len(texts)] for i in range(size)])
            for start in range(0, max(2 * size, 512), size)
        ]
        serve(text=requests[0])["label_id"].numpy()  # warm-up: the first call of a shape
        seconds = []
        for request in requests:
            start = time.perf_counter()
            serve(text=request)["label_id"].numpy()
            seconds.append(time.perf_counter() - start)
        rates[size] = size * len(seconds) / sum(seconds)
        single = float(np.median(seconds)) if size == 1 else single
    best = max(rates.values())
    max_batch = min(size for size, rate in rates.items() if rate >= 0.95 * best)
    threads = cores or os.cpu_count() or 1
    measured = ", ".join(f"{size}: {rate:.0f}" for size, rate in rates.items())
    return (
        f"# Measured on {platform.node()} ({threads} cores): reviews/s by batch size {measured};\n"
        f"# single review p50 {single * 1e3:.2f} ms. Use with --enable_batching "
        f"--batching_parameters_file=<this file>.\n"
        f"max_batch_size {{ value: {max_batch} }}\n"
        f"batch_timeout_micros {{ value: {max(1, round(single * 1e6))} }}\n"
        f"num_batch_threads {{ value: {threads} }}\n"
        f"max_enqueued_batches {{ value: {2 * threads} }}\n"
    )

"""Training: the model learns, the best epoch is kept, adversarial steps push the worst way,
weight averaging swaps in, batches are bucketed, and the stream replays for a resume."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sentiment.data.batching import bucket_boundaries, eval_dataset, train_dataset
from keras_sentiment.network.model import build_model
from keras_sentiment.reporting.evaluation import format_report, predict_rows, report
from keras_sentiment.training import train as train_module
from keras_sentiment.training.runs import read_history
from keras_sentiment.training.train import adversarial_losses, compile_model, train

from .helpers import model_config


@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_never_changes_the_answer(pooling, bidirectional):
    cfg = model_config(pooling=pooling, bidirectional=bidirectional, lstm_layers=2, dropout=0.0)
    model = build_model(cfg, 20, 3, None)
    ids = np.array([[5, 6, 7]], np.int32)
    padded = np.array([[5, 6, 7, 0, 0, 0, 0]], np.int32)
    # The model called as predict calls it (training=False), without tracing predict's loop.
    a, b = model(ids, training=False).numpy(), model(padded, training=False).numpy()
    assert a.shape == (1, 3) and np.allclose(a.sum(), 1)
    assert np.allclose(a, b, atol=1e-5)


def test_glove_matrix_is_the_starting_embedding():
    matrix = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    model = build_model(model_config(train_embeddings=False), 12, 2, matrix)
    layer = model.get_layer("embedding")
    assert np.allclose(layer.get_weights()[0], matrix) and not layer.trainable


def test_length_buckets_are_right_padded_and_similar():
    rng = np.random.default_rng(0)
    rows = [rng.integers(2, 50, size=n).astype(np.int32) for n in rng.integers(1, 300, 500)]
    labels = rng.integers(0, 2, 500)
    cfg = model_config(batch_size=16, sequence_length=300)
    for ids, y in train_dataset(rows, labels, cfg).take(20):
        ids = ids.numpy()
        lengths = (ids > 0).sum(1)
        assert ids.shape[0] == 16 and len(y) == 16
        assert lengths.max() - lengths.min() < 32  # one bucket
        assert ids.shape[1] + 1 in bucket_boundaries(300)  # padded to its bound: few shapes
        for row, n in zip(ids, lengths):
            assert (row[:n] > 0).all() and not row[n:].any()
    ds, order = eval_dataset(rows, labels, 64)
    seen = sum(int(x.shape[0]) for x, _ in ds)
    assert seen == 500 and sorted(order.tolist()) == list(range(500))


def test_tiny_model_learns_a_separable_task(tmp_path, monkeypatch):
    tiny_model_learns_a_separable_task(tmp_path, monkeypatch, "val_loss", 0.0, "float32", True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "monitor, adversarial, precision, bidirectional",
    [
        ("val_accuracy", 0.0, "float32", True),
        ("val_loss", 1.0, "float32", True),
        # bfloat16 gradients, the batch in two loops (not the default precision)
        ("val_loss", 0.0, "bfloat16", False),
    ],
)
def test_tiny_model_learns_a_separable_task_in_other_settings(
    tmp_path, monkeypatch, monitor, adversarial, precision, bidirectional
):
    settings = (monitor, adversarial, precision, bidirectional)
    tiny_model_learns_a_separable_task(tmp_path, monkeypatch, *settings)


def tiny_model_learns_a_separable_task(
    tmp_path, monkeypatch, monitor: str, adversarial: float, precision: str, bidirectional: bool
) -> None:
    # Every batch the adversarial step trains on: its losses are computed per traced step.
    calls = []

    def counted(*args):
        calls.append(args[3])  # epsilon
        return adversarial_losses(*args)

    monkeypatch.setattr(train_module, "adversarial_losses", counted)
    rng = np.random.default_rng(1)
    # Class 1 texts contain token 3, class 0 texts token 4: trivially learnable.
    rows, labels = [], []
    for i in range(400):
        row = rng.integers(5, 30, size=rng.integers(3, 40)).astype(np.int32)
        row[rng.integers(0, len(row))] = 3 if i % 2 else 4
        rows.append(row)
        labels.append(i % 2)
    labels = np.array(labels)
    cfg = model_config(
        epochs=6,
        batch_size=32,
        learning_rate=1e-2,
        patience=6,
        seed=3,
        monitor=monitor,
        adversarial=adversarial,
        precision=precision,
        bidirectional=bidirectional,
    )
    build = lambda: build_model(cfg, 30, 2, None)  # noqa: E731
    strategy = tf.distribute.get_strategy()
    trained = train(
        cfg, strategy, build, (rows[:320], labels[:320]), (rows[320:], labels[320:]), tmp_path
    )
    model, history = trained.model, trained.history
    # The adversarial step trained exactly when the config asks for it, at its epsilon.
    assert set(calls) == ({adversarial} if adversarial else set())
    lstm = model.layers[2].forward_layer if bidirectional else model.layers[2]
    assert lstm.matmul_dtype == precision
    # One direction runs its batch as two loops on a CPU with two cores or more.
    assert lstm.batch_splits == (2 if not bidirectional and os.cpu_count() > 1 else 1)
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    assert read_history(tmp_path / "history.csv") == history
    assert (tmp_path / "best.keras").is_file()
    scores = [row[monitor] for row in history]
    # The best epoch is the first with the lowest loss or the highest accuracy.
    best = int(np.argmin(scores) if monitor == "val_loss" else np.argmax(scores))
    # The model ends with the best epoch's weights, the ones best.keras holds.
    kept = keras.models.load_model(tmp_path / "best.keras")
    for a, b in zip(kept.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert trained.best_epoch == best + 1
    probs = predict_rows(model, rows[320:])
    result = report(labels[320:], probs, ["zero", "one"])
    assert result["accuracy"] > 0.9
    assert "confusion matrix" in format_report(result)


def test_the_adversarial_push_is_the_worst_case_of_its_size():
    keras.utils.set_random_seed(7)
    # Mean pooling: the loss is smooth in the embeddings (under max pooling a push can change
    # which step wins the max, and first-order predictions break at that kink).
    # float32 gradients (as by default): the check is to first order at 1e-3, finer than
    # bfloat16 products.
    cfg = model_config(dropout=0.0, pooling="mean", precision="float32")
    model = build_model(cfg, 40, 2, None)
    compile_model(model, cfg)
    # Every token once in the batch: the gradient of its embedding row is the gradient of
    # the one vector where it stands. Rows of different lengths, right-padded.
    lengths = [3, 9, 5, 12]
    x = np.zeros((4, 12), np.int32)
    ids = iter(range(1, 40))
    for row, n in enumerate(lengths):
        x[row, :n] = [next(ids) for _ in range(n)]
    y = np.array([0, 1, 1, 0])
    table = model.get_layer("embedding").embeddings
    with tf.GradientTape() as tape:
        expected_loss = model.compute_loss(x, y, model(x, training=True))
    rows = tf.convert_to_tensor(tape.gradient(expected_loss, table)).numpy()
    # Each text pushed by epsilon along its own gradient: to first order the mean loss rises
    # by epsilon times the sum of the texts' gradient norms, the most any such push can.
    # Pushing both ways cancels the second-order term.
    per_text = [np.linalg.norm(rows[x[i, :n]]) for i, n in enumerate(lengths)]
    epsilon = 1e-2
    loss, up, _, _ = adversarial_losses(model, x, y, epsilon)
    _, down, _, _ = adversarial_losses(model, x, y, -epsilon)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    assert down < loss < up
    assert float(up - down) == pytest.approx(2 * epsilon * sum(per_text), rel=1e-3)
    # The step's gradients are those of both losses: with no push, twice the clean ones.
    kernel = model.get_layer("probabilities").kernel
    dense = next(i for i, w in enumerate(model.trainable_weights) if w is kernel)
    with tf.GradientTape() as tape:
        clean = model.compute_loss(x, y, model(x, training=True))
    twice = 2 * tape.gradient(clean, kernel).numpy()
    _, _, gradients, _ = adversarial_losses(model, x, y, 0.0)
    np.testing.assert_allclose(gradients[dense].numpy(), twice, rtol=1e-5, atol=1e-8)


def test_weight_averaging_replaces_the_weights_at_each_epoch_end():
    keras.utils.set_random_seed(5)
    cfg = model_config(weight_average=0.9, learning_rate=1e-2)
    model = build_model(cfg, 30, 2, None)
    compile_model(model, cfg, steps_per_epoch=4)
    rng = np.random.default_rng(0)
    x, y = rng.integers(1, 30, size=(64, 10)).astype(np.int32), rng.integers(0, 2, 64)
    same = []

    class Compare(keras.callbacks.Callback):
        def check(self):
            averages = self.model.optimizer._model_variables_moving_average
            pairs = zip(self.model.trainable_variables, averages)
            same.append(all(np.array_equal(w.numpy(), a.numpy()) for w, a in pairs))

        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # mid-epoch the weights run ahead of their average
                self.check()

        def on_epoch_end(self, epoch, logs=None):
            self.check()

    model.fit(x, y, batch_size=16, epochs=2, callbacks=[Compare()], verbose=0)
    assert same == [False, True, False, True]


def test_report_matches_sklearn():
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]])
    result = report(labels, probs, ["neg", "pos"])
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]
    assert result["per_class"]["pos"]["precision"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    keras.backend.clear_session()


def test_the_training_stream_replays_exactly_for_a_resume():
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 50, size=rng.integers(1, 90)).astype(np.int32) for _ in range(300)]
    labels = np.arange(300) % 2
    cfg = model_config(batch_size=16, sequence_length=96, seed=5)

    def batches(skip, n):
        ds = train_dataset(rows, labels, cfg, skip=skip).take(n)
        return [(x.numpy().tolist(), y.numpy().tolist()) for x, y in ds]

    # Two epochs of 19 batches, and the same stream resumed at epoch 2, step 4.
    stream = batches(0, 40)
    assert batches(23, 17) == stream[23:40]
    assert stream[:19] != stream[19:38]  # each epoch is shuffled anew


def test_glove_matrix_lives_in_the_weights_not_in_the_config(tmp_path):
    import zipfile

    matrix = np.random.default_rng(0).normal(size=(3000, 50)).astype(np.float32)
    model = build_model(model_config(), 3000, 2, matrix)
    np.testing.assert_array_equal(model.get_layer("embedding").embeddings.numpy(), matrix)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        assert archive.getinfo("config.json").file_size < 50_000  # not 3000x50 numbers as JSON
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.get_layer("embedding").embeddings.numpy(), matrix)

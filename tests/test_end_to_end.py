"""The main job as a user runs it on IMDB: fit a slice, export, reload elsewhere, evaluate."""

import json
import re

import numpy as np
import pytest

from keras_sentiment.data.splits import load_test_split
from keras_sentiment.network.compiled_lstm import gradient_dtype
from keras_sentiment.serving.prediction import SavedModelPredictor

from .helpers import run_cli, run_python, without

# Loads the SavedModel in a process where keras_sentiment and NLTK cannot even be imported.
STANDALONE = r"""
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("keras_sentiment", "nltk"):
            raise ImportError(f"{name} is blocked in this process")
sys.meta_path.insert(0, Block())
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
texts = json.loads(sys.stdin.read())
out = serve(text=tf.constant(texts))
keep = ("probabilities", "label_id")
print(json.dumps({k: v.numpy().tolist() for k, v in out.items() if k in keep}))
print(json.dumps([x.decode() for x in out["label"].numpy()]))
"""


@pytest.fixture(scope="module")
def reviews():
    data, names = load_test_split("imdb_reviews", "test")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(data), 400, replace=False)
    return [data.texts[i].decode() for i in pick], data.labels[pick], names


@pytest.mark.slow
def test_fit_writes_everything(imdb_run):
    version = imdb_run["version"]
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    meta = json.loads((version / "assets.extra" / "metadata.json").read_text())
    assert meta["class_names"] == ["neg", "pos"] and meta["version"] == 1
    assert meta["dataset"]["train"] + meta["dataset"]["validation"] == 2000
    assert meta["dataset"]["test"] == 500
    # The reported accuracy is the exported model's on those very 500 test reviews (to a
    # near-tie flipped by float rounding between the Keras model and the served graph).
    from keras_sentiment.config import Config
    from keras_sentiment.data.splits import load_splits

    test = load_splits(Config(**meta["config"])).test
    labels = SavedModelPredictor(version)(list(test.texts))["label_id"]
    assert abs(np.mean(labels == test.labels) - meta["metrics"]["accuracy"]) <= 1 / 500
    assert meta["config"]["max_train"] == 2000 and "tensorflow" in meta["versions"]
    assert meta["embeddings"]["coverage"] > 0.8
    files = ["config.json", "report.json", "history.csv", "model.keras", "preprocessor.json"]
    files += ["MODEL_CARD.md", "curves.png", "confusion_matrix.png", "roc.png"]
    for name in files + ["precision_recall.png", "summary.json"]:
        assert (imdb_run["run_dir"] / name).is_file(), name
    card = (version / "assets.extra" / "MODEL_CARD.md").read_text()
    assert "version 1" in card and f"{meta['metrics']['accuracy']:.4f}" in card
    assert f"{meta['parameters']:,}" in card
    # The precision training used, as resolved on this CPU, is on record.
    precision = meta["training"]["precision"]
    assert precision == gradient_dtype(meta["config"]["precision"]) == "float32"
    assert f"- Precision: {precision}" in card
    assert list((imdb_run["run_dir"] / "logs").rglob("events.out.tfevents.*"))  # TensorBoard


@pytest.mark.slow
def test_plots_decode_with_their_sizes(imdb_run):
    from matplotlib.image import imread

    sizes = {"curves.png": (450, 1000), "confusion_matrix.png": (500, 600), "roc.png": (500, 600)}
    for name, (height, width) in sizes.items():
        pixels = imread(imdb_run["run_dir"] / name)
        assert pixels.shape[:2] == (height, width) and pixels.std() > 0


@pytest.mark.slow
def test_savedmodel_scores_raw_reviews_without_the_package(imdb_run, reviews):
    texts, labels, names = reviews
    done = run_python(STANDALONE, imdb_run["version"], stdin=json.dumps(texts))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    outputs, label_names = json.loads(lines[-2]), json.loads(lines[-1])
    probs = np.array(outputs["probabilities"])
    assert probs.shape == (400, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # The same answers as this package's predictor, and a model that learned: two epochs on
    # 1,800 reviews with the n-gram branch score 0.8425 on these 400 (the LSTM alone about 0.7,
    # chance 0.5), so a lost branch or a broken mix falls below.
    ours = SavedModelPredictor(imdb_run["version"])(texts)["probabilities"]
    np.testing.assert_allclose(probs, ours, rtol=0, atol=1e-6)
    accuracy = (probs.argmax(1) == labels).mean()
    assert accuracy >= 0.82, accuracy
    assert label_names == [names[i] for i in outputs["label_id"]]


@pytest.mark.slow
def test_evaluate_rescores_the_test_split_fit_reported(imdb_run):
    meta = json.loads((imdb_run["version"] / "assets.extra" / "metadata.json").read_text())
    done = run_cli("evaluate", str(imdb_run["base"]), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The same 500 reviews fit scored (its seeded --max-test sample), not all 25,000.
    assert result["support"] == 500
    assert abs(result["accuracy"] - meta["metrics"]["accuracy"]) <= 1 / 500
    cut = run_cli("evaluate", str(imdb_run["base"]), "--max-test", "100", "--json")
    assert json.loads(cut.stdout.strip().splitlines()[-1])["support"] == 100


@pytest.mark.slow
def test_serving_commands_keep_each_op_to_half_the_cores(imdb_run):
    # Checked inside the process the CLI ran in: the setting is process-wide.
    code = (
        "import os\n"
        "from keras_sentiment.cli import main\n"
        f"main(['predict', {str(imdb_run['version'])!r}, 'a fine film'])\n"
        "import tensorflow as tf\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(), "
        "len(os.sched_getaffinity(0)))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    threads, cores = map(int, done.stdout.strip().splitlines()[-1].split())
    assert threads == max(1, cores // 2)


@pytest.mark.slow
def test_a_csv_fit_takes_its_own_name_and_starts_quietly(toy_csv, tmp_path):
    # As a user runs it: no TF_CPP_MIN_LOG_LEVEL of their own, no --name. TensorFlow's C++
    # lines (oneDNN, CUDA probing) stay off stderr.
    env = without("TF_CPP_MIN_LOG_LEVEL")
    out = ["--output-dir", str(tmp_path / "sm"), "--runs-dir", str(tmp_path / "runs")]
    fit = run_cli("fit", "--dataset", str(toy_csv), "--epochs", "1", *out, env=env)
    assert fit.returncode == 0, fit.stderr[-2000:]
    # The model is named after its data: it never becomes a version of imdb_lstm.
    assert (tmp_path / "sm" / "toy_lstm" / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in (tmp_path / "sm").iterdir()) == ["toy_lstm"]
    card = (tmp_path / "runs" / "toy_lstm" / "1" / "MODEL_CARD.md").read_text()
    assert f"It learned from the file `{toy_csv}`" in card and "movie reviews" not in card
    said = run_cli("predict", str(tmp_path / "sm" / "toy_lstm"), "A fine film.", env=env)
    assert said.returncode == 0, said.stderr[-2000:]
    for done in (fit, said):
        native = [x for x in done.stderr.splitlines() if re.match(r"[IWEF]\d{4} ", x)]
        assert not native and "oneDNN" not in done.stderr, done.stderr[-2000:]
    assert "keep quick runs apart" not in fit.stdout  # no quick run: no advice about one

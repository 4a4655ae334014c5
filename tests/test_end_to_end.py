"""The main job as a user runs it: fit a slice, export, reload elsewhere, predict, evaluate."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_sentiment.data import load_test_split
from keras_sentiment.model import gradient_dtype

from .conftest import run_cli, write_csv

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
    from keras_sentiment.data import load_splits
    from keras_sentiment.prediction import SavedModelPredictor

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


def test_plots_decode_with_their_sizes(imdb_run):
    from matplotlib.image import imread

    sizes = {"curves.png": (450, 1000), "confusion_matrix.png": (500, 600), "roc.png": (500, 600)}
    for name, (height, width) in sizes.items():
        pixels = imread(imdb_run["run_dir"] / name)
        assert pixels.shape[:2] == (height, width) and pixels.std() > 0


def test_runs_lists_and_compares(imdb_run):
    out = imdb_run["work"] / "saved_models"
    table = run_cli("runs", "--output-dir", str(out))
    assert table.returncode == 0 and "tiny" in table.stdout and "ACCURACY" in table.stdout
    both = run_cli("runs", "--output-dir", str(out), "--compare", "tiny/1", "tiny")
    assert both.returncode == 0, both.stderr
    missing = run_cli("runs", "--output-dir", str(out), "--compare", "tiny", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_savedmodel_scores_raw_reviews_without_the_package(imdb_run, reviews):
    texts, labels, names = reviews
    done = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(imdb_run["version"])],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    outputs, label_names = json.loads(lines[-2]), json.loads(lines[-1])
    probs = np.array(outputs["probabilities"])
    assert probs.shape == (400, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    accuracy = (probs.argmax(1) == labels).mean()
    assert accuracy > 0.58, accuracy  # one epoch on 1,800 reviews: well above chance
    assert label_names == [names[i] for i in outputs["label_id"]]


def test_predict_cli_arguments_and_stdin(imdb_run):
    done = run_cli("predict", str(imdb_run["base"]), "A wonderful film.", "")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 2 and records[0]["text"] == "A wonderful film."
    for r in records:
        assert r["label"] in ("neg", "pos") and set(r["probabilities"]) == {"neg", "pos"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
    piped = run_cli("predict", str(imdb_run["version"]), stdin="A wonderful film.\nawful\n")
    lines = [json.loads(x) for x in piped.stdout.splitlines()]
    assert len(lines) == 2 and lines[0]["probabilities"] == records[0]["probabilities"]


def test_evaluate_json(imdb_run, reviews, tmp_path):
    texts, labels, names = reviews
    path = write_csv(tmp_path / "held.csv", [(t, names[y]) for t, y in zip(texts, labels)])
    done = run_cli("evaluate", str(imdb_run["base"]), "--dataset", str(path), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ["accuracy", "macro_f1", "per_class", "confusion_matrix"]:
        assert key in result
    assert sum(map(sum, result["confusion_matrix"])) == 400
    assert set(result["per_class"]) == {"neg", "pos"}
    assert 0 < result["seconds"] < 60  # the scoring alone, after loading
    text = run_cli("evaluate", str(imdb_run["base"]), "--dataset", str(path))
    assert "precision" in text.stdout and "confusion matrix" in text.stdout
    assert re.search(r"on 400 texts, scored in [0-9.]+s \([0-9,]+ texts/s\)", text.stdout)


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
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    threads, cores = map(int, done.stdout.strip().splitlines()[-1].split())
    assert threads == max(1, cores // 2)


@pytest.mark.parametrize("command", [[], ["fit"], ["evaluate"], ["predict"], ["export"], ["runs"]])
def test_help_everywhere(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    done = run_cli("predict", str(tmp_path / "nothing"), "hi")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    bad = run_cli("fit", "--lstm-units", "0")
    assert bad.returncode == 2 and "lstm_units" in bad.stderr


def test_a_users_terminal_gets_no_tensorflow_log_lines(toy_csv, tmp_path):
    # As a user runs it: no TF_CPP_MIN_LOG_LEVEL of their own. TensorFlow's C++ lines (oneDNN,
    # CUDA probing, "oneDNN supports DT_BOOL only on platforms with AVX-512") stay off stderr.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = ["--output-dir", str(tmp_path / "sm"), "--runs-dir", str(tmp_path / "runs")]
    fit = run_cli("fit", "--dataset", str(toy_csv), "--epochs", "1", "--name", "t", *out, env=env)
    assert fit.returncode == 0, fit.stderr[-2000:]
    said = run_cli("predict", str(tmp_path / "sm" / "t"), "A fine film.", env=env)
    assert said.returncode == 0, said.stderr[-2000:]
    for done in (fit, said):
        native = [x for x in done.stderr.splitlines() if re.match(r"[IWEF]\d{4} ", x)]
        assert not native and "oneDNN" not in done.stderr, done.stderr[-2000:]

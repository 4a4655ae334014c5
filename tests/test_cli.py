"""The command line as a user meets it: help, one-line errors, predict, evaluate, runs."""

import io
import json
import re
from subprocess import PIPE

import pytest

from keras_sentiment.cli import main

from .helpers import run_cli, run_python, start_cli, synthetic_reviews, write_csv

FLAGS = {
    "fit": ["--max-train", "--epochs", "--text-column", "--precision", "--config"],
    "evaluate": ["--test-data", "--max-test", "--dataset", "--json"],
    "predict": ["--server", "--model-name", "--timeout"],
    "export": [
        "--name",
        "--models-config",
        "--batching-parameters",
        "--base-path-prefix",
        "--files-only",
    ],
    "runs": ["--compare", "--output-dir", "--runs-dir"],
}


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_each_command_helps_with_its_own_flags(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and text.startswith(f"usage: python -m keras_sentiment {command}")
    for flag in FLAGS[command]:
        assert flag in text, flag
    assert "--lstm-units" in text if command == "fit" else "--lstm-units" not in text


def test_help_needs_no_tensorflow():
    code = "import sys\nfrom keras_sentiment.cli import main\ntry:\n    main(['--help'])\n"
    code += "except SystemExit:\n    print('tensorflow' in sys.modules)"
    done = run_python(code)
    assert done.stdout.strip().endswith("False"), done.stderr
    assert "fit" in done.stdout and "evaluate" in done.stdout


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["fit", "--lstm-units", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: config: lstm_units must be > 0, got 0\n"
    assert main(["predict", str(tmp_path / "nothing"), "hi"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nothing'}: no such model")
    assert main(["fit", "--dataset", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "none.csv: no such file" in err
    with pytest.raises(SystemExit) as exit_info:  # a typo of a flag is argparse's error
        main(["fit", "--epoch", "1"])
    assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_a_csv_fit_fails_before_any_run_folder_with_its_columns_named(tmp_path, capsys):
    rows = list(zip(*synthetic_reviews(40)))
    path = write_csv(tmp_path / "tweets.csv", rows, header=("content", "sentiment"))
    out = ["--output-dir", str(tmp_path / "m"), "--runs-dir", str(tmp_path / "r")]
    assert main(["fit", "--dataset", str(path), *out]) == 2
    said = capsys.readouterr()
    assert "its columns are content, sentiment" in said.err and "--text-column" in said.err
    assert "run folder" not in said.out and not (tmp_path / "r").exists()


def test_predict_arguments_and_stdin(tiny_run, monkeypatch, capsys):
    assert main(["predict", str(tiny_run["base"]), "A wonderful film.", ""]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and records[0]["text"] == "A wonderful film."
    assert records[0]["label"] == "pos"
    for r in records:
        assert r["label"] in ("neg", "pos") and set(r["probabilities"]) == {"neg", "pos"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
    stdin = io.TextIOWrapper(io.BytesIO(b"A wonderful film.\nawful\n"))
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["predict", str(tiny_run["version"])]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["probabilities"] == records[0]["probabilities"]


def test_evaluate_a_test_file_or_a_slice(tiny_run, tmp_path, capsys):
    texts, labels = synthetic_reviews(120, seed=11)
    path = write_csv(tmp_path / "held.csv", list(zip(texts, labels)))
    assert main(["evaluate", str(tiny_run["base"]), "--test-data", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 116 of these 120 right; two texts of margin.
    assert sum(map(sum, result["confusion_matrix"])) == 120 and result["accuracy"] >= 0.95
    assert set(result["per_class"]) == {"neg", "pos"} and result["data"] == str(path)
    assert 0 < result["seconds"] < 60  # the scoring alone, after loading
    args = ["evaluate", str(tiny_run["base"]), "--test-data", str(path), "--max-test", "50"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "confusion matrix" in text
    assert re.search(r"on 50 texts, scored in [0-9.]+s \([0-9,]+ texts/s\)", text)
    # Trained in memory: no test split on record, so it asks for data.
    assert main(["evaluate", str(tiny_run["base"])]) == 2
    assert "pass the test data" in capsys.readouterr().err


def test_runs_lists_and_compares_without_tensorflow(tiny_run, tmp_path):
    import shutil

    out = tmp_path / "saved_models"
    shutil.copytree(tiny_run["base"], out / "tiny")
    shutil.copytree(tiny_run["version"], out / "tiny" / "2")  # a second version to compare
    code = (
        "import sys\nfrom keras_sentiment.cli import main\n"
        f"main(['runs', '--output-dir', {str(out)!r}, '--runs-dir', {str(tmp_path)!r}])\n"
        f"main(['runs', '--output-dir', {str(out)!r}, '--compare', 'tiny/1', 'tiny'])\n"
        "print('tensorflow' in sys.modules)"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "False"  # listing reads JSON files: no TensorFlow
    assert lines[0].split()[:4] == ["NAME", "VERSION", "CREATED", "ACCURACY"]
    assert [line.split()[:2] for line in lines[1:3]] == [["tiny", "2"], ["tiny", "1"]]
    compared = "\n".join(lines[3:-1])
    assert "tiny/1" in compared and "tiny/2" in compared  # side by side, the same run twice
    assert re.search(r"^\s+accuracy\s+(\d\.\d{4})\s+\1$", compared, re.M)
    assert not re.search(r"^\*", compared, re.M)  # no setting differs
    missing = run_cli("runs", "--output-dir", str(out), "--compare", "tiny", "nope")
    assert missing.returncode == 2 and "no exported run 'nope'" in missing.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`runs | head -1`: the reader is gone before the listing is written; no traceback."""
    listing = start_cli("runs", "--output-dir", tmp_path, "--runs-dir", tmp_path, stderr=PIPE)
    listing.stdout.close()  # before the child writes: its first write meets a closed pipe
    err = listing.stderr.read().decode()
    assert listing.wait(timeout=60) == 141, err  # 128 + SIGPIPE, as a shell tool ends
    assert err == ""


def test_a_near_flag_is_suggested_under_the_commands_own_usage(capsys):
    for argv, near in (
        (["fit", "--epoch", "1"], "--epochs"),
        (["export", "--batching"], "--batching-parameters"),
        (["predict", "m", "--explian", "hi"], "--explain"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert err.startswith(f"usage: python -m keras_sentiment {argv[0]} ")
        assert f"(did you mean {near}?)" in err.splitlines()[-1]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(r"keras_sentiment \d+\.\d+\.\d+\n", capsys.readouterr().out)


MISSING_PATHS = """
import sys
from keras_sentiment.cli import main
for argv in [
    ["predict", "no/model", "hi"],
    ["predict", "no.keras", "hi"],
    ["evaluate", "no/model"],
    ["evaluate", sys.argv[1], "--test-data", "no.csv"],
    ["evaluate", sys.argv[1], "--dataset", "no/folder"],
    ["fit", "--dataset", "no.csv"],
    ["fit", "--test-data", "no.jsonl"],
    ["fit", "--unlabeled", "no/texts"],
    ["fit", "--embeddings", "no.txt"],
    ["score", "no/model", "x.jsonl", "out"],
    ["score", sys.argv[1], "no/*.jsonl", "out"],
]:
    assert main(argv) == 2, argv
print("tensorflow" in sys.modules)
"""


def test_missing_paths_are_said_before_tensorflow_starts(tiny_run):
    done = run_python(MISSING_PATHS, tiny_run["base"], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
    said = done.stderr.splitlines()
    assert said == [
        "error: no/model: no such model folder",
        "error: no.keras: no such .keras file",
        "error: no/model: no such model folder",
        "error: no.csv: no such file or folder",
        "error: no/folder: no such file or folder",
        "error: no.csv: no such file or folder",
        "error: no.jsonl: no such file or folder",
        "error: unlabeled: no/texts: no such file or folder",
        "error: no.txt: embeddings file not found "
        "(or use --embeddings glove-6b-50d or --embeddings none)",
        "error: no/model: no such model folder",
        "error: no/*.jsonl: no file matches",
    ]


def test_predict_says_how_many_known_words_it_read(tiny_run, tiny_predictor, capsys):
    import tensorflow as tf

    from keras_sentiment.serving.prediction import KerasPredictor

    texts = ["", "😀🎬🍿", "zzzq xxyq", "A wonderful film.", "dull"]
    assert main(["predict", str(tiny_run["version"]), *texts]) == 0
    said = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["known_words"] for r in said] == [0, 0, 0, 3, 1]
    # The raw-text Keras model counts the same; the served signature on its single-review
    # path and its batch path.
    assert KerasPredictor(tiny_run["run"].model)(texts)["known_words"].tolist() == [0, 0, 0, 3, 1]
    serve = tiny_predictor.signature
    assert serve(text=tf.constant([""]))["known_words"].numpy().tolist() == [0]
    assert serve(text=tf.constant(texts))["known_words"].numpy().tolist() == [0, 0, 0, 3, 1]

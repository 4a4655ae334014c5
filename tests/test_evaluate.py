"""`evaluate` on the user's data: labels spelled otherwise than the model's classes (a label map),
and the test split a `.keras` file's run recorded."""

import json
import shutil

import pytest

import keras_sentiment as ks
from keras_sentiment.cli import main
from keras_sentiment.data.sources import parse_label_map

from .helpers import synthetic_reviews, write_csv


def test_labels_the_model_spells_otherwise_need_a_map_and_the_error_gives_it(
    tiny_run, tmp_path, capsys
):
    texts, labels = synthetic_reviews(60, seed=5)
    ones = write_csv(
        tmp_path / "reviews01.csv", [(t, int(y == "pos")) for t, y in zip(texts, labels)]
    )
    args = ["evaluate", str(tiny_run["base"]), "--test-data", str(ones)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the data's classes ['0', '1'] differ" in err
    assert "--label-map 0=neg,1=pos" in err and "label_map=" in err
    assert main([*args, "--label-map", "0=neg,1=pos", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["support"] == 60 and result["accuracy"] >= 0.85
    words = [(t, "positive" if y == "pos" else "negative") for t, y in zip(texts, labels)]
    named = write_csv(tmp_path / "named.csv", words)
    predictor = ks.load(tiny_run["base"])
    with pytest.raises(ks.UserError, match="--label-map negative=neg,positive=pos"):
        ks.evaluate(predictor, str(named))
    mapped = {"negative": "neg", "positive": "pos"}
    assert ks.evaluate(predictor, str(named), label_map=mapped)["accuracy"] == result["accuracy"]
    # The data may hold fewer classes than the model; a label the map leaves out is named.
    positive = ([t for t, y in words if y == "positive"], ["positive"] * 30)
    only = ks.evaluate(predictor, positive, label_map="positive=pos")
    assert only["support"] == 30 and only["confusion_matrix"][0] == [0, 0]
    with pytest.raises(ks.UserError, match=r"classes \['negative', 'pos'\] differ"):
        ks.evaluate(predictor, str(named), label_map={"positive": "pos"})
    assert main([*args, "--label-map", "0:neg"]) == 2
    assert "expected DATA=MODEL pairs" in capsys.readouterr().err


def test_parse_label_map():
    assert parse_label_map("0=neg, 1=pos") == {"0": "neg", "1": "pos"}
    assert parse_label_map({0: "neg", True: "pos"}) == {"0": "neg", "True": "pos"}
    assert parse_label_map("") == {} and parse_label_map(None) == {}
    for bad in ("0", "0=", "=neg", "0=neg=pos", ","):
        with pytest.raises(ks.UserError, match="like 0=neg,1=pos"):
            parse_label_map(bad)


def test_a_keras_file_scores_the_test_split_its_run_recorded(tiny_run, tmp_path, capsys):
    texts, labels = synthetic_reviews(80, seed=3)
    test = write_csv(tmp_path / "test.csv", list(zip(texts, labels)))
    run = tmp_path / "runs" / "tiny" / "1"
    run.mkdir(parents=True)
    shutil.copy(tiny_run["run_dir"] / "model.keras", run / "model.keras")
    config = json.loads((tiny_run["run_dir"] / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "test_data": str(test)}))
    assert main(["evaluate", str(run / "model.keras"), "--max-test", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["support"] == 30 and result["model"] == str(run / "model.keras")
    (run / "config.json").unlink()  # no record: the message names the flag that gives data
    assert main(["evaluate", str(run / "model.keras")]) == 2
    assert "no record of its data" in capsys.readouterr().err
    with pytest.raises(ks.UserError, match="--test-data FILE"):
        ks.evaluate(ks.load(run / "model.keras"))

import json

import numpy as np
import pytest

from keras_sentiment.config import Config, UserError
from keras_sentiment.data.splits import load_dataset, load_splits

from .helpers import NEGATIVE, POSITIVE, write_csv


def test_csv_splits_are_stratified_and_disjoint(toy_csv):
    splits = load_splits(Config(dataset=str(toy_csv), validation_fraction=0.25))
    assert splits.class_names == ["neg", "pos"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 48
    for split in (splits.train, splits.val, splits.test):
        counts = np.bincount(split.labels, minlength=2)
        assert abs(counts[0] - counts[1]) <= 1  # balanced, as the source


def test_jsonl_and_separate_test_file(tmp_path):
    rows = [{"text": t, "label": 1} for t in POSITIVE * 2] + [
        {"text": t, "label": 0} for t in NEGATIVE * 2
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows))
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join(json.dumps(r) for r in rows[:4] + rows[-4:]))
    tr, te, names, _ = load_dataset(str(train), str(test))
    assert names == ["0", "1"] and len(tr) == 24 and len(te) == 8


def test_aclimdb_folder(tmp_path):
    for split in ("train", "test"):
        for label, texts in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i, t in enumerate(texts):
                (folder / f"{i}_7.txt").write_text(t)
    (tmp_path / "train" / "unsup").mkdir()  # aclImdb's unlabeled folder is not a class
    train, test, names, _ = load_dataset(str(tmp_path))
    assert names == ["neg", "pos"] and len(train) == 12 and len(test) == 12


def test_other_column_names_are_chosen_with_flags(tmp_path):
    rows = [(t, "pos") for t in POSITIVE * 4] + [(t, "neg") for t in NEGATIVE * 4]
    path = write_csv(tmp_path / "reviews.csv", rows, header=("review", "sentiment"))
    # From Python the message names the Config fields (the CLI test sees the flags).
    python = r"its columns are review, sentiment.*Config\(text_column=\.\.\.\) and Config\(label"
    with pytest.raises(UserError, match=python):
        load_splits(Config(dataset=str(path)))
    cfg = Config(dataset=str(path), text_column="review", label_column="sentiment")
    splits = load_splits(cfg)
    assert splits.class_names == ["neg", "pos"] and len(splits.test) == 10
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text("\n".join(json.dumps({"review": t, "sentiment": y}) for t, y in rows))
    with pytest.raises(UserError, match=r"reviews.jsonl:1: .*this one has: review, sentiment"):
        load_splits(Config(dataset=str(jsonl)))
    assert load_splits(Config(**{**cfg.to_dict(), "dataset": str(jsonl)})).class_names == [
        "neg",
        "pos",
    ]


def test_in_memory_data_in_every_form(tiny_data):
    import pandas as pd
    import tensorflow as tf

    from keras_sentiment.data.sources import from_memory

    texts, labels = tiny_data
    pair, names = from_memory((texts, labels))
    assert names == ["neg", "pos"] and pair.labels.tolist() == [int(y == "pos") for y in labels]
    assert pair.texts[0] == texts[0].encode()
    frame, _ = from_memory(pd.DataFrame({"text": texts, "label": labels}))
    renamed = pd.DataFrame({"review": texts, "y": labels})
    cfg = Config(text_column="review", label_column="y")
    assert from_memory(renamed, cfg)[0].texts.tolist() == frame.texts.tolist()
    with pytest.raises(UserError, match="no column 'text' \\(it has: review, y\\)"):
        from_memory(renamed)
    ds = tf.data.Dataset.from_tensor_slices((texts, labels))
    for dataset in (ds, ds.batch(7)):
        got, _ = from_memory(dataset)
        assert got.texts.tolist() == pair.texts.tolist()
        assert got.labels.tolist() == pair.labels.tolist()
    # A test set maps its labels to the training set's classes, and refuses others.
    test, _ = from_memory((["x"], ["pos"]), class_names=["neg", "pos"])
    assert test.labels.tolist() == [1]
    with pytest.raises(UserError, match="'meh' is not one of the classes"):
        from_memory((["x"], ["meh"]), class_names=["neg", "pos"])
    with pytest.raises(UserError, match="3 texts but 2 labels"):
        from_memory((["a", "b", "c"], [0, 1]))
    with pytest.raises(UserError, match="expected a DataFrame"):
        from_memory("reviews.csv")


def test_a_test_file_replaces_the_test_split_of_any_source(tmp_path):
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    test = write_csv(tmp_path / "test.csv", rows)
    train, held, names, source = load_dataset(str(test), str(test))
    assert len(held) == 12 and source.endswith("(test: " + str(test) + ")")


@pytest.mark.slow
def test_tfds_with_a_test_file(tmp_path):
    rows = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
    test = write_csv(tmp_path / "test.csv", rows)
    splits = load_splits(Config(max_train=200, test_data=str(test)))
    assert len(splits.test) == 12 and splits.class_names == ["neg", "pos"]
    assert splits.source == f"tfds:imdb_reviews (test: {test})"


@pytest.mark.slow
def test_max_train_keeps_class_balance():
    cfg = Config(max_train=400, max_test=100)
    splits = load_splits(cfg)
    assert len(splits.train) + len(splits.val) == 400 and len(splits.test) == 100
    assert np.bincount(splits.train.labels).min() >= 170
    assert splits.class_names == ["neg", "pos"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "data.csv: the file is empty"),
        ("\n \n", "data.csv: the file is empty"),
        ("text,label\n", "data.csv: no rows"),
        ("text,label\na,pos\nb,neg,x\n", "data.csv:3: 3 columns, the header has 2"),
        ("review,label\nx,1\n", "no column 'text'; its columns are review, label"),
        ("text,stars\nx,1\n", "no column 'label'; its columns are text, stars"),
        ("text,label\na,pos\nb,\n", ":3: missing label"),
        ("text,label\na,pos\nb,pos\nc,pos\n", "one class"),
    ],
)
def test_bad_csv_files_get_one_clear_message(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_splits(Config(dataset=str(path)))


def test_bad_jsonl_and_encodings(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n')
    with pytest.raises(UserError, match="mixed label types"):
        load_splits(Config(dataset=str(mixed)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(UserError, match="broken.jsonl:2"):
        load_splits(Config(dataset=str(broken)))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_splits(Config(dataset=str(latin)))


def test_missing_paths_and_folders(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_splits(Config(dataset=str(tmp_path / "nope.csv")))
    with pytest.raises(UserError, match="no such file or folder"):
        load_splits(Config(dataset=str(tmp_path / "nope")))
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="class subfolders"):
        load_splits(Config(dataset=str(tmp_path)))


@pytest.mark.slow
def test_unknown_tfds_name():
    with pytest.raises(UserError, match="unknown TFDS data set"):
        load_splits(Config(dataset="no_such_dataset_xyz"))


def test_tiny_split_refused(tmp_path):
    path = write_csv(tmp_path / "two.csv", [("good", "pos"), ("bad", "neg")])
    with pytest.raises(UserError, match="too few"):
        load_splits(Config(dataset=str(path)))

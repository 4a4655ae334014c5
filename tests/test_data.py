import json

import numpy as np
import pytest

from keras_sentiment.config import Config, UserError
from keras_sentiment.data import load_dataset, load_splits

from .conftest import NEGATIVE, POSITIVE, write_csv


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


def test_max_train_keeps_class_balance():
    cfg = Config(max_train=400, max_test=100)
    splits = load_splits(cfg)
    assert len(splits.train) + len(splits.val) == 400 and len(splits.test) == 100
    assert np.bincount(splits.train.labels).min() >= 170
    assert splits.class_names == ["neg", "pos"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no rows|columns"),
        ("review,label\nx,1\n", "missing \\['text'\\]"),
        ("text,stars\nx,1\n", "missing \\['label'\\]"),
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
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="class subfolders"):
        load_splits(Config(dataset=str(tmp_path)))


def test_unknown_tfds_name():
    with pytest.raises(UserError, match="unknown TFDS data set"):
        load_splits(Config(dataset="no_such_dataset_xyz"))


def test_tiny_split_refused(tmp_path):
    path = write_csv(tmp_path / "two.csv", [("good", "pos"), ("bad", "neg")])
    with pytest.raises(UserError, match="too few"):
        load_splits(Config(dataset=str(path)))

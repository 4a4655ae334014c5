"""The run's and the export's records: typed, versioned, and old ones still read."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from keras_sentiment.config import Config
from keras_sentiment.records import (
    SCHEMA,
    ExportRecord,
    MixMember,
    MixRecord,
    NgramBranch,
    RunRecord,
    config_json,
    read_metadata,
    read_run_config,
    read_summary,
    recorded_classes,
    write_metadata,
    write_run_config,
    write_summary,
)
from keras_sentiment.reporting.model_card import model_card
from keras_sentiment.training.runs import open_run

# Written by keras_sentiment 43b5833, before records had a schema number (see its README.md).
OLD = Path(__file__).parent / "data" / "records_43b5833"
OLD_RUN = OLD / "runs" / "old" / "1"
OLD_VERSION = OLD / "saved_models" / "old" / "1"


def old_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_old_records_read_whole_and_typed():
    run = read_summary(OLD_RUN)
    assert run.schema == 0 and run.name == "old" and run.class_names == ["neg", "pos"]
    assert run.dataset.train == 86 and run.dataset.source.startswith("memory:")
    assert run.embeddings.source == "none" and run.embeddings.dim == 4
    assert run.pretraining is None  # off: {} in the file
    assert isinstance(run.ngrams, NgramBranch) and run.ngrams.order == 3
    assert run.training.epochs_run == 1 and run.metrics.accuracy == 0.75
    assert run.export.endswith("saved_models/old/1")
    assert run.settings().lstm_units == 4 and run.settings().name == "old"
    meta = read_metadata(OLD_VERSION)
    assert meta.schema == 0 and meta.version == 1 and meta.path == str(OLD_VERSION)
    assert set(meta.explanations) == {"ngrams", "reviews"}
    # Nothing is lost: written again, each is the old file plus its schema number (and the
    # stacked mix's section, off).
    assert run.to_dict() == {**old_json(OLD_RUN / "summary.json"), "mix": {}, "schema": SCHEMA}
    metadata = old_json(OLD_VERSION / "assets.extra" / "metadata.json")
    expected = {**metadata, "mix": {}, "path": str(OLD_VERSION), "schema": SCHEMA}
    assert meta.to_dict() == expected


def test_the_card_of_an_old_record_is_the_card_its_version_wrote():
    old_card = (OLD_VERSION / "assets.extra" / "MODEL_CARD.md").read_text()
    assert model_card(read_metadata(OLD_VERSION)) == old_card


def test_old_and_new_config_json_read_alike(tmp_path):
    old = read_run_config(OLD_RUN)
    assert old == old_json(OLD_RUN / "config.json") and "schema" not in old
    cfg = Config(**{k: v for k, v in old.items()})
    write_run_config(tmp_path, cfg)
    assert old_json(tmp_path / "config.json")["schema"] == SCHEMA
    assert read_run_config(tmp_path) == cfg.to_dict()
    assert json.loads(config_json(cfg)) == {"schema": SCHEMA, **cfg.to_dict()}


def test_records_round_trip_and_read_leniently(tmp_path):
    run = read_summary(OLD_RUN)
    write_summary(tmp_path, run)
    again = read_summary(tmp_path)
    assert again == dataclasses.replace(run, schema=SCHEMA)
    export = ExportRecord.of_run(run, version=3, path="p", explanations={"ngrams": {}})
    write_metadata(tmp_path / "m" / "3", export)
    read = read_metadata(tmp_path / "m" / "3")
    assert read.version == 3 and read.path == str(tmp_path / "m" / "3") and read.export == ""
    assert "export" not in old_json(tmp_path / "m" / "3" / "assets.extra" / "metadata.json")
    # A record lacking keys reads with "not recorded" defaults; unknown keys are left out.
    sparse = RunRecord.from_dict({"name": "x", "training": {"epochs_run": 2}, "future": 1})
    assert sparse.training.epochs_run == 2 and sparse.training.wall_seconds is None
    assert sparse.metrics.accuracy is None and sparse.ngrams is None and sparse.schema == 0
    assert RunRecord.from_dict("not a record") == RunRecord(schema=0)
    # Unreadable files are no record at all.
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    assert read_summary(tmp_path / "bad") is None and read_summary(tmp_path / "none") is None


def test_the_mix_and_its_members_are_written_and_read_typed(tmp_path):
    member = MixMember(kind="chars", order=5, ngrams=47020, C=0.1, validation_accuracy=0.78)
    mix = MixRecord(members=[member], coefficients={"lstm": 0.4, "chars": 0.4}, bias=0.1)
    write_summary(tmp_path, RunRecord(name="x", mix=mix))
    written = old_json(tmp_path / "summary.json")["mix"]["members"]
    assert written == [{"kind": "chars", "order": 5, "ngrams": 47020, "C": 0.1,
                        "validation_accuracy": 0.78}]  # fmt: skip
    read = read_summary(tmp_path).mix
    assert read == mix and isinstance(read.members[0], MixMember)
    assert RunRecord.from_dict({"mix": {"members": "garbled"}}).mix.members == []


def test_recorded_classes_reads_old_and_new_records(tmp_path):
    shutil.copytree(OLD / "saved_models", tmp_path / "saved_models")
    shutil.copytree(OLD / "runs", tmp_path / "runs")
    write_summary(tmp_path / "runs" / "old" / "2", RunRecord(class_names=["a", "b", "c"]))
    write_summary(tmp_path / "runs" / "old" / "3", RunRecord())  # no classes: left out
    found = recorded_classes(tmp_path / "saved_models", tmp_path / "runs", "old")
    assert found == {
        str(tmp_path / "saved_models" / "old" / "1"): ["neg", "pos"],
        str(tmp_path / "runs" / "old" / "1"): ["neg", "pos"],
        str(tmp_path / "runs" / "old" / "2"): ["a", "b", "c"],
    }


# --- resuming: what matters for the result --------------------------------------------------


@pytest.fixture
def interrupted(tmp_path):
    """An interrupted run's folder, and the config it ran with."""
    cfg = Config(name="x", runs_dir=str(tmp_path / "runs"), output_dir=str(tmp_path / "m"))
    run, resuming = open_run(cfg)
    assert run == tmp_path / "runs" / "x" / "1" and not resuming
    return run, cfg


def test_an_interrupted_run_resumes_after_a_new_setting_with_its_default(interrupted):
    run, cfg = interrupted
    # Its config.json as a package without `weight_average` wrote it (schema 0, no number).
    recorded = {k: v for k, v in cfg.to_dict().items() if k != "weight_average"}
    (run / "config.json").write_text(json.dumps(recorded))
    assert open_run(cfg) == (run, True)
    # The new setting at another value computes something else: a new run.
    averaged = dataclasses.replace(cfg, weight_average=0.99)
    assert open_run(averaged) == (run.parent / "2", False)


def test_where_files_go_and_how_often_backups_are_made_do_not_matter(interrupted, tmp_path):
    run, cfg = interrupted
    write_run_config(run, cfg)
    moved = dataclasses.replace(cfg, output_dir=str(tmp_path / "elsewhere"), checkpoint_steps=50)
    assert open_run(moved) == (run, True)
    # A key Config no longer has is not compared.
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "gone_setting": 3}))
    assert open_run(cfg) == (run, True)
    for key, value in [("epochs", 3), ("seed", 1), ("strategy", "mirrored"), ("max_test", 9)]:
        other = dataclasses.replace(cfg, **{key: value})
        resumed, resuming = open_run(other)
        assert not resuming and resumed != run, key


def test_a_different_config_starts_a_new_run_beside_an_interrupted_one(tmp_path):
    cfg = Config(name="x", runs_dir=str(tmp_path / "runs"), output_dir=str(tmp_path / "m"))
    run, resuming = open_run(cfg)
    assert run == tmp_path / "runs" / "x" / "1" and not resuming
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert open_run(cfg) == (run, True)  # interrupted, same config: resumed
    other = Config(**{**cfg.to_dict(), "epochs": 3})
    assert open_run(other) == (tmp_path / "runs" / "x" / "2", False)
    (tmp_path / "m" / "x" / "7").mkdir(parents=True)  # a version exported by other means
    (run / "summary.json").write_text("{}")  # run 1 finished: never resumed again
    assert open_run(cfg) == (tmp_path / "runs" / "x" / "8", False)

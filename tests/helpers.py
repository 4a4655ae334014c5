"""What the tests share: tiny data, the configs of small fits and their command lines, ways to
run the command line and Python in a new process, and what an exported graph may hold.

Fixtures live in conftest.py; test modules import from here, never from each other.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

POSITIVE = [
    "A wonderful film, the acting was brilliant and I loved every minute.",
    "Great story, beautiful music, one of the best movies this year!",
    "I enjoyed it a lot: funny, touching and superbly directed.",
    "An excellent, moving performance. Highly recommended.",
    "Loved it. The cast is fantastic and the ending is perfect.",
    "Brilliant and charming; a delightful movie for the whole family.",
]
NEGATIVE = [
    "A terrible film, the acting was awful and I hated every minute.",
    "Boring story, dreadful music, one of the worst movies this year!",
    "I didn't enjoy it at all: dull, predictable and badly directed.",
    "A poor, lifeless performance. Not recommended.",
    "Hated it. The cast is wooden and the ending is stupid.",
    "Awful and tedious; a waste of time for the whole family.",
]
HOSTILE = [
    "",
    "   \t\n ",
    "<br /><br /><p></p>",
    "!!! ??? ...",
    "😀🎬🍿",
    "これは素晴らしい映画です",
    "Фильм ужасный",
    "a\x00b\x00",
    "great " * 900_000,  # ~5 MB
]
HOSTILE_BYTES = [t.encode("utf-8") for t in HOSTILE] + [b"\xff\xfe bad \x80", b"\xc3\x28", b"\x00"]

GOOD_WORDS = "wonderful great brilliant moving superb loved delightful excellent".split()
BAD_WORDS = "dull boring awful waste terrible hated dreadful stupid".split()
FILLER = (
    "the film movie plot story actor actors scene scenes was is it and a of this that "
    "with director music ending cast time character characters script camera"
).split()


def synthetic_reviews(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` short reviews, half "pos" and half "neg": filler words with sentiment words among
    them, a negation now and then ("not dull" in a positive one). Learnable in seconds."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        positive = i % 2 == 1
        words = list(rng.choice(FILLER, rng.integers(6, 30)))
        for _ in range(rng.integers(1, 4)):
            word = rng.choice(GOOD_WORDS if positive else BAD_WORDS)
            if rng.random() < 0.1:  # a negated opposite says the same thing
                word = "not " + rng.choice(BAD_WORDS if positive else GOOD_WORDS)
            words.insert(rng.integers(0, len(words) + 1), word)
        texts.append(" ".join(words).capitalize() + rng.choice([".", "!", "...", "<br />"]))
        labels.append("pos" if positive else "neg")
    return texts, labels


def run_config(work: Path, **settings):
    """A fit's config with its outputs in the work folder (saved_models/, runs/), every other
    setting at its default unless given."""
    from keras_sentiment.config import Config

    folders = dict(output_dir=str(work / "saved_models"), runs_dir=str(work / "runs"))
    return Config(**{**folders, **settings})


def tiny_config(work: Path, **overrides):
    """A config for seconds-long fits: tiny LSTM, short texts, the work folder's outputs."""
    tiny = dict(name="tiny", epochs=2, lstm_units=8, sequence_length=32, batch_size=32, seed=7)
    return run_config(work, **{**tiny, **overrides})


def model_config(**overrides):
    """A config for networks built in the test itself: a small LSTM on learned embeddings."""
    from keras_sentiment.config import Config

    return Config(**{"lstm_units": 8, "embeddings": "none", "embedding_dim": 8, **overrides})


def with_lstm(mix, coefficient: float):
    """The same stacked mix with the LSTM's coefficient set (a tiny or quick fit's stack may
    give the LSTM 0, and then the served graph and explain skip it)."""
    from keras_sentiment.network.mix import Mix

    return Mix(mix.members, coefficient, mix.coefficients, mix.bias)


def fit_args(cfg) -> list[str]:
    """The `fit` command line of a config: a flag for each setting off its default."""
    from keras_sentiment.config import FIELDS

    args = ["fit"]
    for key, value in cfg.to_dict().items():
        if value == FIELDS[key].default:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    """A CSV with text and label columns."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run_cli(
    *args,
    stdin: str | bytes | None = None,
    cwd: Path | None = None,
    timeout: int = 600,
    env=None,
) -> subprocess.CompletedProcess:
    """`python -m keras_sentiment ARGS` in a new process, as a user runs it: its output as
    text, or as bytes when `stdin` is bytes."""
    return subprocess.run(
        _cli(args), input=stdin, capture_output=True, text=not isinstance(stdin, bytes),
        cwd=cwd or ROOT, timeout=timeout, env=env,
    )  # fmt: skip


def start_cli(*args, env=None, **popen) -> subprocess.Popen:
    """`python -m keras_sentiment ARGS` started in a new process, for tests that signal or
    kill it: by default its stdout and stderr together in one binary pipe (`popen` changes
    that, as subprocess.Popen's arguments)."""
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.Popen(_cli(args), cwd=ROOT, env=env, **{**pipes, **popen})


def _cli(args) -> list[str]:
    return [sys.executable, "-m", "keras_sentiment", *map(str, args)]


def run_python(
    code: str | Path,
    *args,
    stdin: str | None = None,
    timeout: int = 600,
    env=None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Python code (a string), or a script (a Path), with ARGS in a new process."""
    program = [str(code)] if isinstance(code, Path) else ["-c", code]
    return subprocess.run(
        [sys.executable, *program, *map(str, args)], input=stdin, capture_output=True,
        text=True, cwd=cwd or ROOT, timeout=timeout, env=env,
    )  # fmt: skip


def without(*names: str) -> dict:
    """This process's environment without the variables `names`, as a user's shell has it."""
    return {k: v for k, v in os.environ.items() if k not in names}


# Every op type the exported graph may hold: TensorFlow's standard kernels, all in the stock
# tensorflow/serving image. A new op type must be added here on purpose, after checking that
# it is neither XLA (XlaLaunch, _XlaCompile), cuDNN (CudnnRNN*), Python (PyFunc) nor custom.
ALLOWED_OPS = {
    # the network: fused LSTM kernel for a few rows, a packed while-loop for more
    "BlockLSTMV2", "StatelessWhile", "While", "If", "StatelessIf", "TensorListConcatV2",
    "TensorListGetItem", "TensorListReserve", "TensorListSetItem", "TensorListSplit",
    "MatMul", "BiasAdd", "Sigmoid", "Tanh", "Softmax", "AddV2", "Sub", "Mul", "Maximum", "Minimum",
    "Max", "Sum", "Prod", "Cumsum", "RealDiv",
    "ArgMax", "TopKV2", "ReverseSequence", "ReverseV2", "ScatterNd", "GatherV2", "GatherNd",
    "ResourceGather", "Split", "ConcatV2", "Transpose", "Reshape", "Squeeze", "ExpandDims",
    "BroadcastTo", "Tile", "Pad", "Fill", "Range", "Shape", "Size", "Pack", "StridedSlice",
    "Where", "Select", "SelectV2", "Cast", "Equal", "NotEqual", "Less", "LessEqual", "Greater",
    "GreaterEqual", "FloorDiv", "Identity", "NoOp", "Const", "Placeholder",
    "StatefulPartitionedCall", "PartitionedCall",
    # preprocessing: string ops and the vocabulary / lemma tables
    "UnicodeTranscode", "StaticRegexReplace", "StaticRegexFullMatch", "StringLower",
    "StringStrip", "StringSplitV2", "StringJoin", "ReduceJoin", "UnsortedSegmentJoin",
    "HashTableV2", "LookupTableFindV2", "LookupTableImportV2", "RaggedRange",
    "RaggedTensorToTensor", "DenseBincount",
    # the n-gram branch: its table, distinct (row, n-gram) pairs, sums per row
    "Unique", "UnsortedSegmentSum", "FloorMod",
    # the explain signature: log-odds, gradients through the LSTM loops (a custom gradient's
    # IdentityN) and pooling, n-gram shares, chunks written back into place
    "Abs", "AddN", "BroadcastGradientArgs", "ConcatOffset", "DynamicStitch", "Exp",
    "IdentityN", "InvertPermutation", "IsFinite", "Log", "LogSoftmax", "LogicalAnd", "Neg",
    "Reciprocal", "ShapeN", "Slice", "Softplus", "StopGradient", "TensorScatterUpdate",
    "UniqueWithCounts", "Unpack", "ZerosLike",
    # variables, saving and restoring
    "VarHandleOp", "ReadVariableOp", "AssignVariableOp", "DisableCopyOnRead", "SaveV2",
    "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringFormat",
}  # fmt: skip


def saved_model_proto(version_dir):
    """The SavedModel protocol buffer of an exported version."""
    from tensorflow.core.protobuf import saved_model_pb2

    return saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())


def graph_op_types(version_dir) -> set[str]:
    """Op types of a SavedModel's graph and of every function in its library."""
    ops = set()
    for graph in saved_model_proto(version_dir).meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for function in graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
            assert "_XlaMustCompile" not in function.attr  # no jit_compile=True function
    return ops

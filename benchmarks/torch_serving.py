"""The PyTorch serving peer: the same network and weights as an exported default model.

Embedding -> bidirectional LSTM -> masked max over time -> Linear -> softmax, with the weights
copied from our Keras model and fed the same token ids, served as a PyTorch user would: each
request either packed (`pack_padded_sequence`) or sorted by length and run in padded chunks
of 64 (the backward direction reads each row reversed within its own length, so padding never
reaches a real step). Both are timed; the faster is the peer. Needs only numpy and torch, so
it runs in its own environment:
    python benchmarks/torch_serving.py NET.npz [--singles 200] [--batches 32,256]
NET.npz holds `ids` (every review's token ids, concatenated in arrival order), `lengths`, the
weights (`embedding`, `fw_kernel`, `fw_recurrent`, `fw_bias`, `bw_*`, `dense_kernel`,
`dense_bias`) and `probabilities`, our answers for the first reviews, to show that both sides
compute the same function. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def lstm(net: dict[str, np.ndarray], side: str, bidirectional: bool = False) -> nn.LSTM:
    """nn.LSTM with Keras weights: x @ kernel, gates i, f, g, o, one bias (b_hh = 0)."""
    dim, units = net[f"{side}_kernel"].shape[0], net[f"{side}_recurrent"].shape[0]
    module = nn.LSTM(dim, units, bidirectional=bidirectional)
    sides = [("", side)] + ([("_reverse", "bw")] if bidirectional else [])
    for suffix, s in sides:
        for name, value in {
            "weight_ih_l0": net[f"{s}_kernel"].T,
            "weight_hh_l0": net[f"{s}_recurrent"].T,
            "bias_ih_l0": net[f"{s}_bias"],
            "bias_hh_l0": np.zeros_like(net[f"{s}_bias"]),
        }.items():
            param = getattr(module, name + suffix)
            param.data.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module.eval()


class Network(nn.Module):
    """Our default network in PyTorch."""

    def __init__(self, net: dict[str, np.ndarray]):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(torch.from_numpy(net["embedding"]))
        self.bilstm = lstm(net, "fw", bidirectional=True)  # packed
        self.forward_lstm, self.backward_lstm = lstm(net, "fw"), lstm(net, "bw")  # padded
        self.fc = nn.Linear(*net["dense_kernel"].shape)
        self.fc.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(net["dense_kernel"].T)))
        self.fc.bias.data.copy_(torch.from_numpy(net["dense_bias"]))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, packed: bool) -> torch.Tensor:
        """ids [time, batch] right-padded -> probabilities [batch, classes]."""
        steps = torch.arange(ids.shape[0])[:, None]
        real = steps < lengths[None, :]
        if packed:
            x = nn.utils.rnn.pack_padded_sequence(
                self.embedding(ids), lengths, enforce_sorted=False
            )
            out, _ = nn.utils.rnn.pad_packed_sequence(self.bilstm(x)[0])
        else:
            reverse = torch.where(real, lengths[None, :] - 1 - steps, steps)
            backward_ids = torch.gather(ids, 0, reverse)
            fw, _ = self.forward_lstm(self.embedding(ids))
            bw, _ = self.backward_lstm(self.embedding(backward_ids))
            bw = torch.gather(bw, 0, reverse[:, :, None].expand_as(bw))
            out = torch.cat([fw, bw], -1)
        out = out.masked_fill(~real[: out.shape[0], :, None], -1e9)
        return torch.softmax(self.fc(out.max(dim=0).values), dim=-1)


def padded(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-major right-padded ids and their lengths."""
    lengths = np.array([len(r) for r in rows], np.int64)
    x = np.zeros((int(lengths.max()), len(rows)), np.int64)
    for j, row in enumerate(rows):
        x[: len(row), j] = row
    return torch.from_numpy(x), torch.from_numpy(lengths)


def score(model: Network, rows: list[np.ndarray], mode: str, chunk: int) -> np.ndarray:
    """Probabilities of one request, in request order."""
    if mode == "packed":
        return model(*padded(rows), True).numpy()
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = np.empty((len(rows), model.fc.out_features), np.float32)
    for start in range(0, len(rows), chunk):
        index = order[start : start + chunk]
        out[index] = model(*padded([rows[i] for i in index]), False).numpy()
    return out


def timed(model: Network, rows: list[np.ndarray], mode: str, batch: int, chunk: int) -> list:
    """Seconds of each request of `batch` reviews, after two warm-up requests."""
    requests = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    for request in requests[:2]:
        score(model, request, mode, chunk)
    seconds = []
    for request in requests:
        start = time.perf_counter()
        score(model, request, mode, chunk)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    """Batch 1 (throughput, p50, p99) and the larger batches, packed and sorted chunks."""
    # TensorFlow flushes denormal floats to zero on its CPU threads; PyTorch does not by
    # default (torch_peer.py says what that costs). Same footing for both.
    torch.set_flush_denormal(True)
    parser = argparse.ArgumentParser()
    parser.add_argument("net")
    parser.add_argument("--singles", type=int, default=200, help="single-review requests")
    parser.add_argument("--batches", default="32,256", help="request sizes to time")
    parser.add_argument("--chunk", type=int, default=64, help="rows per padded chunk")
    args = parser.parse_args()
    net = dict(np.load(args.net))
    starts = np.concatenate([[0], np.cumsum(net["lengths"])[:-1]])
    rows = [net["ids"][s : s + n] for s, n in zip(starts, net["lengths"])]
    torch.set_grad_enabled(False)
    model = Network(net)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "reviews": len(rows)}
    check = len(net["probabilities"])
    for mode in ("packed", "chunked"):
        got = score(model, rows[:check], mode, args.chunk)
        result[f"max_abs_diff_vs_ours_{mode}"] = float(np.abs(got - net["probabilities"]).max())
    sizes = [1] + [int(b) for b in args.batches.split(",") if b]
    for size in sizes:
        data = rows[: args.singles] if size == 1 else rows
        for mode in ("packed", "chunked"):
            seconds = timed(model, data, mode, size, args.chunk)
            entry = {"reviews_per_s": len(data) / sum(seconds), "requests": len(seconds)}
            if size == 1:
                entry["p50_ms"] = float(np.percentile(seconds, 50) * 1e3)
                entry["p99_ms"] = float(np.percentile(seconds, 99) * 1e3)
            result[f"batch_{size}_{mode}"] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()

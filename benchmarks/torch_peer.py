"""The PyTorch peer of the seed model, timed on the same token ids as ours.

The model of the PyTorch/torchtext sentiment tutorial this package replaces: Embedding (50-d,
GloVe rows given) -> one nn.LSTM of 256 units over packed sequences -> Linear on the last
hidden state, Adam, batches of 64 reviews of similar length (torchtext's BucketIterator).

Needs only numpy and torch, so it runs in a separate environment:
    python benchmarks/torch_peer.py ROWS.npz [--epochs N] [--max-batches N] [--padded]
ROWS.npz holds `ids` (all rows concatenated), `lengths`, `labels` and `embeddings`, as
`benchmarks.bench --torch-python` writes it. Prints one JSON object: tokens/s per epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn


class TutorialLSTM(nn.Module):
    """Embedding -> LSTM -> Linear, as in the tutorial."""

    def __init__(self, embeddings: np.ndarray, units: int, classes: int):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(
            torch.from_numpy(embeddings), freeze=False, padding_idx=0
        )
        self.lstm = nn.LSTM(embeddings.shape[1], units)
        self.fc = nn.Linear(units, classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, packed: bool) -> torch.Tensor:
        x = self.embedding(ids)
        if packed:  # the tutorial's way: padding is never computed
            x = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            _, (hidden, _) = self.lstm(x)
            return self.fc(hidden[-1])
        # Padded: the LSTM also runs over padding; read each review's last real step.
        outputs, _ = self.lstm(x)
        return self.fc(outputs[lengths - 1, torch.arange(len(lengths))])


def batches(lengths: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: sort within chunks of 100 batches, like torchtext."""
    order = rng.permutation(len(lengths))
    out = []
    chunk = 100 * batch
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[i : i + batch] for i in range(0, len(part), batch)]
    rng.shuffle(out)
    return out


def main() -> None:
    """Train for --epochs epochs and print tokens/s for each."""
    # TensorFlow flushes denormal floats to zero on its CPU threads; PyTorch does not by
    # default. Gradients read back through hundreds of LSTM steps decay into denormals, where
    # the CPU is many times slower, so without flushing the backward pass would time the
    # denormals, not PyTorch. Same footing for both.
    torch.set_flush_denormal(True)
    parser = argparse.ArgumentParser()
    parser.add_argument("rows")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--max-batches", type=int, default=0, help="cut each epoch (0: all)")
    parser.add_argument("--padded", action="store_true", help="run over padding, no packing")
    args = parser.parse_args()

    data = np.load(args.rows)
    lengths, labels = data["lengths"], data["labels"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ids = data["ids"]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TutorialLSTM(data["embeddings"].astype(np.float32), args.units, int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    epochs = []
    for _ in range(args.epochs):
        plan = batches(lengths, args.batch_size, rng)
        if args.max_batches:
            plan = plan[: args.max_batches]
        tokens = 0
        start = time.perf_counter()
        for index in plan:
            width = int(lengths[index].max())
            x = np.zeros((width, len(index)), np.int64)  # time-major, as nn.LSTM expects
            for j, i in enumerate(index):
                x[: lengths[i], j] = ids[starts[i] : starts[i] + lengths[i]]
            optimizer.zero_grad()
            logits = model(torch.from_numpy(x), torch.from_numpy(lengths[index]), not args.padded)
            loss = loss_fn(logits, torch.from_numpy(labels[index]))
            loss.backward()
            optimizer.step()
            tokens += int(lengths[index].sum())
        seconds = time.perf_counter() - start
        epochs.append({"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds})
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "mode": "padded" if args.padded else "packed",
                "reviews": int(len(lengths)),
                "batches_per_epoch": len(plan),
                "epochs": epochs,
                "median_tokens_per_s": statistics.median(e["tokens_per_s"] for e in epochs),
            }
        )
    )


if __name__ == "__main__":
    main()

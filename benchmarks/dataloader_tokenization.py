"""Tokenization in DataLoader workers vs inside ``forward`` (as the original cortex did).

Same tree, same data, same training step (forward, loss, backward, AdamW step); only where the
text becomes ids changes:

- ``tokenize_in_forward`` (baseline): the loader hands raw strings to the main process, which
  tokenizes and pads them right before the forward pass, as the original roots did.
- ``tokenize_in_workers``: :class:`cortex.data.TokenizingCollator` in ``--workers`` DataLoader workers,
  overlapping tokenization with the training step.
- ``pretokenized_map``: :func:`cortex.data.tokenize_dataset` (``Dataset.map(batched=True)``) once,
  then :class:`cortex.data.TreeCollator` in the workers (the one-off map time is reported).

Data: real prompts from ``../shared/data/routing/train.jsonl`` (``CORTEX_SHARED_DATA`` overrides), with
a char-level root; falls back to random protein-like strings when the file is absent. The
configurations alternate over ``--rounds``; one JSON line gives each one's training samples/s, its
ratio to the baseline, the one-off ``Dataset.map`` time and the machine.

    python benchmarks/dataloader_tokenization.py [--batch-size 64] [--steps 20] [--rounds 2] [--workers 2] [--device cpu]

:func:`measure` runs the comparison and returns the per-configuration totals (``benchmarks/gpu_suite.py``
imports it); :func:`summarize` turns them into the line this script prints.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

SHARED = Path(os.environ.get("CORTEX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
MAX_LEN = 512
CONFIGS = ("tokenize_in_forward", "tokenize_in_workers", "pretokenized_map")
WARMUP_BATCHES = 3


def load_rows(n: int, shared: Path = SHARED) -> tuple[list[dict], str]:
    path = Path(shared) / "routing" / "train.jsonl"
    if path.is_file():
        labels: dict[str, int] = {}
        rows = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                if len(r["prompt"]) <= MAX_LEN:
                    rows.append({"text": r["prompt"], "label": labels.setdefault(r["master"], len(labels))})
                if len(rows) == n:
                    break
        return rows, "routing/train.jsonl"
    rng = random.Random(0)
    return ([{"text": "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(50, MAX_LEN))),
              "label": rng.randrange(7)} for _ in range(n)], "synthetic")


@dataclass
class Totals:
    """What one configuration accumulated over the rounds (timed batches only).

    ``prepare_s``: main-process time making batches ready (the baseline tokenizes here); ``step_s``:
    main-process time in forward, loss, backward and the optimizer step (synchronized on CUDA);
    ``gpu_s``: time the CUDA stream spent between an event before forward and one after the optimizer
    step (0 on CPU), i.e. the GPU's share of the wall time.
    """

    samples: int = 0
    seconds: float = 0.0
    prepare_s: float = 0.0
    step_s: float = 0.0
    gpu_s: float = 0.0

    def add(self, other: Totals) -> None:
        for name in ("samples", "seconds", "prepare_s", "step_s", "gpu_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Measurement:
    """Totals per configuration, the one-off ``Dataset.map`` time and the data described."""

    totals: dict[str, Totals]
    map_s: float
    source: str
    rows: int
    mean_chars: float
    settings: dict = field(default_factory=dict)


def tree_config():
    """The char-level conv1d tree every configuration trains."""
    from cortex.models.neural_tree import NeuralTreeConfig

    return NeuralTreeConfig(
        roots={"text": {"kind": "conv1d", "tokenizer": "char", "max_len": MAX_LEN, "embed_dim": 32,
                        "hidden_dim": 64, "out_dim": 64, "num_blocks": 2}},
        branches={"b": {"kind": "mlp", "out_dim": 32, "pooling": "mean"}},
        leaves={"route": {"kind": "classifier", "branch": "b", "num_classes": 7}},
    )


def train_over(loader, prepare, cfg, device: str) -> Totals:
    """Train over ``loader`` after :data:`WARMUP_BATCHES` warm-up batches (worker start, allocator)."""
    import torch

    from cortex.models.neural_tree import NeuralTreeModel

    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    tree = NeuralTreeModel(cfg).to(device).train()
    opt = torch.optim.AdamW(tree.parameters(), lr=1e-3)
    out, t0 = Totals(), None
    for i, batch in enumerate(loader):
        if i == WARMUP_BATCHES:
            if cuda:
                torch.cuda.synchronize()
            t0, out = time.perf_counter(), Totals()
        a = time.perf_counter()
        inputs, labels = prepare(batch)
        b = time.perf_counter()
        if cuda:  # stream time of the step, measured on the GPU itself
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        loss = tree.leaf_loss("route", tree(inputs), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            end.record()
            torch.cuda.synchronize()
            out.gpu_s += start.elapsed_time(end) / 1000
        out.prepare_s, out.step_s = out.prepare_s + b - a, out.step_s + time.perf_counter() - b
        out.samples += labels.shape[0]
    out.seconds = time.perf_counter() - t0
    return out


def _loaders(ds, tokenizer, batch_size: int, workers: int, device: str):
    """Configuration name -> () -> (DataLoader, prepare(batch) -> (inputs, labels)), and the map time."""
    import torch
    from torch.utils.data import DataLoader

    from cortex.data import TokenizingCollator, TreeCollator, pad_ids, tokenize_dataset

    def in_forward(batch):  # the original's path: strings reach the model, ids are made here
        enc = tokenizer([r["text"] for r in batch])["input_ids"]
        ids, mask = pad_ids(enc, tokenizer.pad_token_id)
        labels = torch.tensor([r["label"] for r in batch])
        return {"text": {"input_ids": ids.to(device), "attention_mask": mask.to(device)}}, labels.to(device)

    def prepared(batch):
        inputs = {r: {k: v.to(device, non_blocking=True) for k, v in d.items()} for r, d in batch["inputs"].items()}
        return inputs, batch["targets"]["label"].to(device)

    loader_kw = dict(batch_size=batch_size, shuffle=False, drop_last=True)
    worker_kw = dict(num_workers=workers, prefetch_factor=4 if workers else None,
                     pin_memory=device.startswith("cuda"))
    t0 = time.perf_counter()
    tokenized = tokenize_dataset(ds, {"text": tokenizer}, {"text": "text"}, remove_columns=True)
    map_s = time.perf_counter() - t0
    return {
        "tokenize_in_forward": lambda: (DataLoader(ds, collate_fn=list, num_workers=0, **loader_kw), in_forward),
        "tokenize_in_workers": lambda: (DataLoader(
            ds, collate_fn=TokenizingCollator({"text": tokenizer}, {"text": "text"}, target_columns=["label"]),
            **loader_kw, **worker_kw), prepared),
        "pretokenized_map": lambda: (DataLoader(
            tokenized, collate_fn=TreeCollator.from_tokenizers({"text": tokenizer}, target_columns=["label"]),
            **loader_kw, **worker_kw), prepared),
    }, map_s


def measure(batch_size: int = 64, steps: int = 20, rounds: int = 2, workers: int = 2, device: str = "cpu",
            shared: Path = SHARED) -> Measurement:
    """Train the same tree under each configuration, alternating them round by round."""
    import datasets

    import cortex  # noqa: F401
    from cortex.models.neural_tree import NeuralTreeModel

    rows, source = load_rows(batch_size * (steps + WARMUP_BATCHES), shared)
    ds = datasets.Dataset.from_list(rows)
    cfg = tree_config()
    tokenizer = NeuralTreeModel(cfg).root_tokenizers()["text"]
    loaders, map_s = _loaders(ds, tokenizer, batch_size, workers, device)
    # configurations alternate round by round, so load from other jobs on a shared machine hits them alike
    totals = {name: Totals() for name in loaders}
    for _ in range(rounds):
        for name, make in loaders.items():
            loader, prepare = make()
            totals[name].add(train_over(loader, prepare, cfg, device))
            del loader  # stop this configuration's workers before the next one starts
    return Measurement(totals, map_s, source, len(rows), statistics.mean(len(r["text"]) for r in rows),
                       {"workers": workers, "batch_size": batch_size, "timed_steps_each": steps * rounds,
                        "rounds": rounds})


def summarize(m: Measurement, device: str) -> dict:
    """The JSON line of this script."""
    sps = {name: t.samples / t.seconds for name, t in m.totals.items()}
    batches = {name: t.samples / m.settings["batch_size"] for name, t in m.totals.items()}
    base = sps["tokenize_in_forward"]
    return {
        "benchmark": "dataloader_tokenization",
        "samples_per_s": {name: round(v, 1) for name, v in sps.items()},
        "ratio_vs_tokenize_in_forward": {name: round(v / base, 3) for name, v in sps.items()},
        # where the main process's time goes: batch preparation (the baseline tokenizes here) vs the
        # training step; the overlap workers buy is bounded by the first, and grows as the step gets faster (GPU)
        "main_prepare_ms_per_batch": {n: round(1000 * t.prepare_s / batches[n], 2) for n, t in m.totals.items()},
        "main_step_ms_per_batch": {n: round(1000 * t.step_s / batches[n], 2) for n, t in m.totals.items()},
        **m.settings, "map_s": round(m.map_s, 3),
        "data": m.source, "rows": m.rows, "mean_chars": round(m.mean_chars, 1),
        "machine": {**machine(), "device": device, "load_avg_1m": round(os.getloadavg()[0], 2)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; configurations alternate within each")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # the workers are single-threaded too; a fair split of 2 cores
    m = measure(args.batch_size, args.steps, args.rounds, args.workers, args.device)
    print(json.dumps(summarize(m, args.device)), flush=True)


if __name__ == "__main__":
    main()

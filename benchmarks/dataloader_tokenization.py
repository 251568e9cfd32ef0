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
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

SHARED = Path(os.environ.get("CORTEX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
MAX_LEN = 512


def load_rows(n: int) -> tuple[list[dict], str]:
    path = SHARED / "routing" / "train.jsonl"
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; configurations alternate within each")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import datasets
    import torch
    from torch.utils.data import DataLoader

    import cortex  # noqa: F401
    from cortex.data import TokenizingCollator, TreeCollator, pad_ids, tokenize_dataset
    from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel

    torch.set_num_threads(1)  # the workers are single-threaded too; a fair split of 2 cores
    n = args.batch_size * (args.steps + 3)
    rows, source = load_rows(n)
    n = len(rows)
    ds = datasets.Dataset.from_list(rows)
    cfg = NeuralTreeConfig(
        roots={"text": {"kind": "conv1d", "tokenizer": "char", "max_len": MAX_LEN, "embed_dim": 32,
                        "hidden_dim": 64, "out_dim": 64, "num_blocks": 2}},
        branches={"b": {"kind": "mlp", "out_dim": 32, "pooling": "mean"}},
        leaves={"route": {"kind": "classifier", "branch": "b", "num_classes": 7}},
    )
    tokenizer = NeuralTreeModel(cfg).root_tokenizers()["text"]

    def run(loader, prepare) -> tuple[int, float, float, float]:
        """Train over ``loader`` after 3 warm-up batches (worker start, allocator): samples, seconds,
        seconds the main process spent preparing batches (tokenizing, in the baseline) and in the step."""
        torch.manual_seed(0)
        tree = NeuralTreeModel(cfg).to(args.device).train()
        opt = torch.optim.AdamW(tree.parameters(), lr=1e-3)
        seen, t0, prep, step = 0, None, 0.0, 0.0
        for i, batch in enumerate(loader):
            if i == 3:
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0, seen, prep, step = time.perf_counter(), 0, 0.0, 0.0
            a = time.perf_counter()
            inputs, labels = prepare(batch)
            b = time.perf_counter()
            out = tree(inputs)
            loss = tree.leaf_loss("route", out, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            prep, step = prep + b - a, step + time.perf_counter() - b
            seen += labels.shape[0]
        return seen, time.perf_counter() - t0, prep, step

    dev = args.device

    def in_forward(batch):  # the original's path: strings reach the model, ids are made here
        enc = tokenizer([r["text"] for r in batch])["input_ids"]
        ids, mask = pad_ids(enc, tokenizer.pad_token_id)
        labels = torch.tensor([r["label"] for r in batch])
        return {"text": {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}}, labels.to(dev)

    def prepared(batch):
        inputs = {r: {k: v.to(dev, non_blocking=True) for k, v in d.items()} for r, d in batch["inputs"].items()}
        return inputs, batch["targets"]["label"].to(dev)

    loader_kw = dict(batch_size=args.batch_size, shuffle=False, drop_last=True)
    worker_kw = dict(num_workers=args.workers, prefetch_factor=4 if args.workers else None,
                     pin_memory=dev.startswith("cuda"))
    t0 = time.perf_counter()
    tokenized = tokenize_dataset(ds, {"text": tokenizer}, {"text": "text"}, remove_columns=True)
    map_s = time.perf_counter() - t0
    loaders = {
        "tokenize_in_forward": lambda: (DataLoader(ds, collate_fn=list, num_workers=0, **loader_kw), in_forward),
        "tokenize_in_workers": lambda: (DataLoader(
            ds, collate_fn=TokenizingCollator({"text": tokenizer}, {"text": "text"}, target_columns=["label"]),
            **loader_kw, **worker_kw), prepared),
        "pretokenized_map": lambda: (DataLoader(
            tokenized, collate_fn=TreeCollator.from_tokenizers({"text": tokenizer}, target_columns=["label"]),
            **loader_kw, **worker_kw), prepared),
    }
    # configurations alternate round by round, so load from other jobs on a shared machine hits them alike
    totals = {name: [0, 0.0, 0.0, 0.0] for name in loaders}
    for _ in range(args.rounds):
        for name, make in loaders.items():
            loader, prepare = make()
            for k, v in enumerate(run(loader, prepare)):
                totals[name][k] += v
            del loader  # stop this configuration's workers before the next one starts
    sps = {name: t[0] / t[1] for name, t in totals.items()}
    batches = {name: t[0] / args.batch_size for name, t in totals.items()}
    base = sps["tokenize_in_forward"]
    lengths = [len(r["text"]) for r in rows]
    print(json.dumps({
        "benchmark": "dataloader_tokenization",
        "samples_per_s": {name: round(v, 1) for name, v in sps.items()},
        "ratio_vs_tokenize_in_forward": {name: round(v / base, 3) for name, v in sps.items()},
        # where the main process's time goes: batch preparation (the baseline tokenizes here) vs the
        # training step; the overlap workers buy is bounded by the first, and grows as the step gets faster (GPU)
        "main_prepare_ms_per_batch": {n: round(1000 * t[2] / batches[n], 2) for n, t in totals.items()},
        "main_step_ms_per_batch": {n: round(1000 * t[3] / batches[n], 2) for n, t in totals.items()},
        "workers": args.workers, "batch_size": args.batch_size, "timed_steps_each": args.steps * args.rounds,
        "rounds": args.rounds, "map_s": round(map_s, 3),
        "data": source, "rows": n, "mean_chars": round(statistics.mean(lengths), 1),
        "machine": {**machine(), "device": args.device, "load_avg_1m": round(os.getloadavg()[0], 2)},
    }), flush=True)


if __name__ == "__main__":
    main()

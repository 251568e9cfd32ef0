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
a char-level root; falls back to random protein-like strings when the file is absent. Prints one JSON
line per configuration with samples/s and the ratio to the baseline.

    python benchmarks/dataloader_tokenization.py [--batch-size 64] [--steps 30] [--workers 2] [--device cpu]
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
    ap.add_argument("--steps", type=int, default=30)
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

    def run(loader, prepare) -> float:
        torch.manual_seed(0)
        tree = NeuralTreeModel(cfg).to(args.device).train()
        opt = torch.optim.AdamW(tree.parameters(), lr=1e-3)
        seen, t0 = 0, None
        for i, batch in enumerate(loader):
            if i == 3:  # warm-up: worker start, allocator
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            inputs, labels = prepare(batch)
            out = tree(inputs)
            loss = tree.leaf_loss("route", out, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += labels.shape[0]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return seen / (time.perf_counter() - t0)

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
    worker_kw = dict(num_workers=args.workers, persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None,
                     pin_memory=dev.startswith("cuda"))
    results = {}
    results["tokenize_in_forward"] = run(DataLoader(ds, collate_fn=list, num_workers=0, **loader_kw), in_forward)
    collate = TokenizingCollator({"text": tokenizer}, {"text": "text"}, target_columns=["label"])
    results["tokenize_in_workers"] = run(DataLoader(ds, collate_fn=collate, **loader_kw, **worker_kw), prepared)
    t0 = time.perf_counter()
    tokenized = tokenize_dataset(ds, {"text": tokenizer}, {"text": "text"}, remove_columns=True)
    map_s = time.perf_counter() - t0
    collate = TreeCollator.from_tokenizers({"text": tokenizer}, target_columns=["label"])
    results["pretokenized_map"] = run(DataLoader(tokenized, collate_fn=collate, **loader_kw, **worker_kw), prepared)

    base = results["tokenize_in_forward"]
    lengths = [len(r["text"]) for r in rows]
    for name, sps in results.items():
        line = {
            "benchmark": "dataloader_tokenization",
            "config": name,
            "samples_per_s": round(sps, 1),
            "ratio_vs_tokenize_in_forward": round(sps / base, 3),
            "batch_size": args.batch_size,
            "timed_steps": args.steps,
            "workers": 0 if name == "tokenize_in_forward" else args.workers,
            "data": source,
            "rows": n,
            "mean_chars": round(statistics.mean(lengths), 1),
            "machine": {**machine(), "device": args.device, "load_avg_1m": round(os.getloadavg()[0], 2)},
        }
        if name == "pretokenized_map":
            line["map_s"] = round(map_s, 3)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

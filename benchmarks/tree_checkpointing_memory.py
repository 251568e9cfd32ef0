"""Peak memory of one NeuralTree training step with and without gradient checkpointing.

The tree: a built-in transformer root (``--layers`` blocks of width ``--dim``) and a transformer
branch, batch ``--batch`` of ``--length`` tokens, a regressor and a classifier leaf. Each mode runs
in its own fresh subprocess so the figures do not share an allocator:

- ``peak_rss_delta_mib``: peak resident memory of the process during the step (``ru_maxrss``)
  minus its resident memory just before the step (model built, inputs made). It covers
  activations, parameter gradients and allocator slack, so it understates the activation saving.
- ``peak_cuda_mib`` (``--device cuda`` only): ``torch.cuda.max_memory_allocated`` during the step
  minus the memory allocated before it.

One JSON line per mode plus one ``ratio`` line; the loss of both modes is printed so that a reader
sees they trained the same step. Nothing is tuned here (no held-out split applies).

    python benchmarks/tree_checkpointing_memory.py --layers 8 --dim 256 --length 512 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))


def tree_config(layers: int, dim: int):
    from cortex.models.neural_tree import NeuralTreeConfig

    return NeuralTreeConfig(
        roots={"p": {"kind": "transformer", "tokenizer": "protein", "hidden_dim": dim, "num_heads": 8,
                     "num_layers": layers, "max_len": 1024}},
        trunk={"kind": "sum"},
        branches={"b": {"kind": "transformer", "out_dim": dim, "num_heads": 8, "num_layers": 2}},
        leaves={"y": {"kind": "regressor", "branch": "b"}, "k": {"kind": "classifier", "branch": "b", "num_classes": 3}},
    )


def one_step(args) -> dict:
    """Build the tree, run one forward/backward, return the figures of this mode."""
    import torch

    import cortex  # noqa: F401
    from cortex.models.neural_tree import NeuralTreeModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device(args.device)
    tree = NeuralTreeModel(tree_config(args.layers, args.dim)).to(device).train()
    if args.mode == "checkpointing":
        tree.gradient_checkpointing_enable()
    ids = torch.randint(5, 25, (args.batch, args.length), device=device)
    inputs = {"p": {"input_ids": ids, "attention_mask": torch.ones_like(ids)}}
    targets = {"y": torch.randn(args.batch, 1, device=device), "k": torch.randint(0, 3, (args.batch,), device=device)}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before = _rss_mib()
    out = tree(inputs, targets=targets)
    out.loss.backward()
    row = {"mode": args.mode, "loss": round(float(out.loss), 6), "peak_rss_delta_mib": round(_peak_rss_mib() - rss_before, 1)}
    if device.type == "cuda":
        torch.cuda.synchronize()
        row["peak_cuda_mib"] = round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)
    return row


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", choices=["plain", "checkpointing"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode is not None:
        print(json.dumps(one_step(args)))
        return
    import torch
    from _machine import machine

    torch.set_num_threads(1)  # as in the subprocesses, so the machine line says what ran
    rows = {}
    for mode in ("plain", "checkpointing"):
        cmd = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
        rows[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(json.dumps({"benchmark": "tree_checkpointing_memory", "layers": args.layers, "dim": args.dim,
                          "length": args.length, "batch": args.batch, **rows[mode], "load": os.getloadavg(),
                          "machine": machine()}))
    keys = [k for k in ("peak_rss_delta_mib", "peak_cuda_mib") if k in rows["plain"]]
    print(json.dumps({"benchmark": "tree_checkpointing_memory", "ratio_checkpointing_over_plain": {
        k: round(rows["checkpointing"][k] / max(rows["plain"][k], 1e-9), 3) for k in keys}}))


if __name__ == "__main__":
    main()

"""Eager vs ``torch.compile(fullgraph=True)`` training step of a NeuralTree with corruption.

One step = forward with per-example mask corruption (fractions drawn from the cosine schedule),
regressor (ensemble of 2) + denoising-LM losses, backward, AdamW step. Shapes are fixed (padded
to ``--length``) so the compiled graph is built once. Data are random protein token ids: the
timing depends on shapes only. After the compiled model's first step (its compile time), eager
and compiled steps alternate, and one JSON line gives both median step times, the eager / compiled
ratio and the machine.

    python benchmarks/compile.py [--batch-size 32] [--length 128] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    import cortex  # noqa: F401
    from cortex.corruption import CorruptionParams
    from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel

    torch.set_num_threads(args.threads)
    dev = args.device
    cfg = NeuralTreeConfig(
        roots={"protein": {"kind": "conv1d", "max_len": args.length, "embed_dim": 64, "hidden_dim": 128,
                           "out_dim": 128, "num_blocks": 3, "kernel_size": 5}},
        branches={"b": {"kind": "conv1d", "out_dim": 64, "hidden_dim": 64, "num_layers": 2, "pooling": "attention"}},
        leaves={"y": {"kind": "regressor", "branch": "b", "ensemble_size": 2},
                "mlm": {"kind": "denoising_lm", "branch": "b", "root": "protein"}},
    )
    g = torch.Generator().manual_seed(0)
    B, T = args.batch_size, args.length
    ids = torch.randint(5, 25, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for i in range(B):  # ragged real lengths inside the fixed padded shape
        n = int(torch.randint(T // 2, T + 1, (1,), generator=g))
        ids[i, n:] = 0
        mask[i, n:] = 0
    inputs = {"protein": {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}}
    y = torch.randn(B).to(dev)

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    def make(compiled: bool):
        torch.manual_seed(0)  # both modes start from the same weights
        tree = NeuralTreeModel(cfg).to(dev).train()
        schedule = tree.roots["protein"].schedule
        model = torch.compile(tree, fullgraph=True) if compiled else tree
        opt = torch.optim.AdamW(tree.parameters(), lr=1e-3)

        def step() -> float:
            corruption = {"protein": CorruptionParams(frac=schedule.sample_corrupt_frac(B, g).to(dev))}
            out = model(inputs, corruption=corruption)
            loss = tree.leaf_loss("y", out, y) + tree.leaf_loss("mlm", out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        return step

    def timed(step) -> float:
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - t0

    steps = {"eager": make(False), "compiled": make(True)}
    first = {mode: timed(step) for mode, step in steps.items()}  # compiled: dynamo + inductor, fwd and bwd
    for _ in range(2):
        for step in steps.values():
            step()
    # eager and compiled steps alternate, so load from other jobs on a shared machine hits both alike
    times: dict[str, list[float]] = {mode: [] for mode in steps}
    for _ in range(args.steps):
        for mode, step in steps.items():
            times[mode].append(timed(step))
    eager_ms = 1000 * statistics.median(times["eager"])
    compiled_ms = 1000 * statistics.median(times["compiled"])
    print(json.dumps({
        "benchmark": "compile",
        "eager_ms_per_step": round(eager_ms, 2),
        "compiled_ms_per_step": round(compiled_ms, 2),
        "speedup_compiled_vs_eager": round(eager_ms / compiled_ms, 3),
        "compile_s": round(first["compiled"] - first["eager"], 1),
        "mode": "torch.compile(fullgraph=True), inductor",
        "step": "forward with per-example mask corruption, regressor (E=2) + denoising-LM loss, backward, AdamW",
        "batch_size": B, "length": T, "timed_steps_each": args.steps,
        "machine": {**machine(), "device": dev, "load_avg_1m": round(os.getloadavg()[0], 2)},
    }), flush=True)


if __name__ == "__main__":
    main()

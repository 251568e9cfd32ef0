"""Eager vs ``torch.compile(fullgraph=True)`` training step of a NeuralTree with corruption.

One step = forward with per-example mask corruption (fractions drawn from the cosine schedule),
regressor (ensemble of 2) + denoising-LM losses, backward, AdamW step. Shapes are fixed (padded
to ``--length``) so the compiled graph is built once. Data are random protein token ids: the
timing depends on shapes only. Prints one JSON line per mode; the compiled line carries the
compile time (first step) and the eager / compiled step-time ratio.

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

    def measure(compiled: bool) -> dict:
        torch.manual_seed(0)
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

        sync()
        t0 = time.perf_counter()
        step()
        sync()
        first = time.perf_counter() - t0
        for _ in range(2):
            step()
        times = []
        for _ in range(args.steps):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        return {"first_step_s": first, "ms_per_step": 1000 * statistics.median(times)}

    eager = measure(False)
    compiled = measure(True)
    info = {**machine(), "device": dev, "load_avg_1m": round(os.getloadavg()[0], 2)}
    common = {"benchmark": "compile", "batch_size": B, "length": T, "timed_steps": args.steps}
    print(json.dumps({**common, "mode": "eager", "ms_per_step": round(eager["ms_per_step"], 2), "machine": info}))
    print(json.dumps({**common, "mode": "compiled_fullgraph", "ms_per_step": round(compiled["ms_per_step"], 2),
                      "compile_s": round(compiled["first_step_s"], 1),
                      "speedup_vs_eager": round(eager["ms_per_step"] / compiled["ms_per_step"], 3), "machine": info}))


if __name__ == "__main__":
    main()

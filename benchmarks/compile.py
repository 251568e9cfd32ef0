"""Eager vs ``torch.compile(fullgraph=True)`` training step of a NeuralTree with corruption.

One step = forward with per-example mask corruption (fractions drawn from the cosine schedule),
regressor (ensemble of 2) + denoising-LM losses, backward, AdamW step. Shapes are fixed (padded
to ``--length``) so the compiled graph is built once. Data are random protein token ids: the
timing depends on shapes only. After the compiled model's first step (its compile time), eager
and compiled steps alternate, and one JSON line gives both median step times, the eager / compiled
ratio and the machine.

    python benchmarks/compile.py [--batch-size 32] [--length 128] [--steps 20] [--device cpu]

:func:`measure` returns the timings (``benchmarks/gpu_suite.py`` imports it, with bf16 autocast on
CUDA); :func:`summarize` turns them into the line this script prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402


@dataclass
class Timings:
    """Per-step seconds of each mode (``eager``, ``compiled``) and each mode's first, untimed-for-median step."""

    times: dict[str, list[float]]
    first: dict[str, float]

    def median_ms(self, mode: str) -> float:
        return 1000 * statistics.median(self.times[mode])

    @property
    def compile_s(self) -> float:
        """The compiled model's first step minus the eager one's: dynamo + the backend, forward and backward."""
        return self.first["compiled"] - self.first["eager"]


def tree_config(length: int):
    """The conv1d tree with a regressor and a denoising-LM leaf that every step trains."""
    from cortex.models.neural_tree import NeuralTreeConfig

    return NeuralTreeConfig(
        roots={"protein": {"kind": "conv1d", "max_len": length, "embed_dim": 64, "hidden_dim": 128,
                           "out_dim": 128, "num_blocks": 3, "kernel_size": 5}},
        branches={"b": {"kind": "conv1d", "out_dim": 64, "hidden_dim": 64, "num_layers": 2, "pooling": "attention"}},
        leaves={"y": {"kind": "regressor", "branch": "b", "ensemble_size": 2},
                "mlm": {"kind": "denoising_lm", "branch": "b", "root": "protein"}},
    )


def _batch(B: int, T: int, device: str):
    """Random protein ids ``(B, T)`` with ragged real lengths inside the fixed padded shape, and targets ``(B,)``."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 25, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for i in range(B):
        n = int(torch.randint(T // 2, T + 1, (1,), generator=g))
        ids[i, n:] = 0
        mask[i, n:] = 0
    return {"protein": {"input_ids": ids.to(device), "attention_mask": mask.to(device)}}, torch.randn(B).to(device), g


def measure(batch_size: int = 32, length: int = 128, steps: int = 20, device: str = "cpu",
            amp_dtype=None, backend: str = "inductor") -> Timings:
    """Time eager and compiled training steps, alternating them.

    ``amp_dtype`` (e.g. ``torch.bfloat16``) runs forward and loss under ``torch.autocast`` on ``device``;
    ``backend`` is the ``torch.compile`` backend (``aot_eager`` checks graph capture without code generation).
    """
    import torch

    import cortex  # noqa: F401
    from cortex.corruption import CorruptionParams
    from cortex.models.neural_tree import NeuralTreeModel

    cfg = tree_config(length)
    B = batch_size
    inputs, y, g = _batch(B, length, device)
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype)

    def make(compiled: bool):
        torch.manual_seed(0)  # both modes start from the same weights
        tree = NeuralTreeModel(cfg).to(device).train()
        schedule = tree.roots["protein"].schedule
        model = torch.compile(tree, fullgraph=True, backend=backend) if compiled else tree
        opt = torch.optim.AdamW(tree.parameters(), lr=1e-3)

        def step() -> float:
            corruption = {"protein": CorruptionParams(frac=schedule.sample_corrupt_frac(B, g).to(device))}
            with autocast():
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

    modes = {"eager": make(False), "compiled": make(True)}
    first = {mode: timed(step) for mode, step in modes.items()}  # compiled: dynamo + backend, fwd and bwd
    for _ in range(2):
        for step in modes.values():
            step()
    # eager and compiled steps alternate, so load from other jobs on a shared machine hits both alike
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(steps):
        for mode, step in modes.items():
            times[mode].append(timed(step))
    return Timings(times, first)


def summarize(t: Timings, batch_size: int, length: int, steps: int, device: str) -> dict:
    """The JSON line of this script."""
    eager_ms, compiled_ms = t.median_ms("eager"), t.median_ms("compiled")
    return {
        "benchmark": "compile",
        "eager_ms_per_step": round(eager_ms, 2),
        "compiled_ms_per_step": round(compiled_ms, 2),
        "speedup_compiled_vs_eager": round(eager_ms / compiled_ms, 3),
        "compile_s": round(t.compile_s, 1),
        "mode": "torch.compile(fullgraph=True), inductor",
        "step": "forward with per-example mask corruption, regressor (E=2) + denoising-LM loss, backward, AdamW",
        "batch_size": batch_size, "length": length, "timed_steps_each": steps,
        "machine": {**machine(), "device": device, "load_avg_1m": round(os.getloadavg()[0], 2)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    t = measure(args.batch_size, args.length, args.steps, args.device)
    print(json.dumps(summarize(t, args.batch_size, args.length, args.steps, args.device)), flush=True)


if __name__ == "__main__":
    main()

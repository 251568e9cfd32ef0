"""Per-token scoring latency: BatchedLensBank vs a per-probe loop, one JSON line per configuration.

For N probes (``--probe mlp``: MLPClassifier, the issue's W1 [N,128,d] bank; ``--probe linear``: LinearProbe,
what ``cortex lens train`` writes by default), half with LayerNorm, at width d, on a block of T tokens:

- ``batched_ms_per_token``: one ``bank.logits(x (T, d))`` call, divided by T;
- ``loop_ms_per_token``: the per-probe loop named by ``loop``:
  ``per_probe`` calls every probe module once on the block ``(T, d)`` (for T = 1 this is a generation step);
  ``per_token`` calls every probe on each token's ``(1, d)`` state, as a monitor that scores lenses one at
  a time per token does (timed on ``loop_tokens_timed`` tokens; the cost per token does not depend on T);
- ``max_abs_diff``: largest |bank − loop| logit over the block (float32).

Usage: python benchmarks/lens_bank.py [--quick] [--device cuda] [--probe mlp|linear]

:func:`make_probes`, :func:`make_bank` and :func:`measure` are the stages of :func:`run`;
``benchmarks/gpu_suite.py`` imports them to time bf16 and fp32 banks over one set of probes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from cortex.lenses.bank import BatchedLensBank
from cortex.lenses.probes import LinearProbe, MLPClassifier


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def make_probes(n: int, d: int, device: str, seed: int = 0, probe: str = "mlp"):
    """``n`` probes of kind ``probe`` at width ``d``, half with LayerNorm, sharing one input normalizer.

    Returns ``(probes {name: module}, mean (d,), std (d,))``.
    """
    torch.manual_seed(seed)
    mean, std = torch.randn(d) * 0.1, torch.rand(d) + 0.5
    probes = {}
    for i in range(n):
        p = (MLPClassifier if probe == "mlp" else LinearProbe)(d, layer_norm=i % 2 == 0)
        if p.norm is not None:
            p.norm.weight.data.normal_(1.0, 0.1)
            p.norm.bias.data.normal_(0.0, 0.1)
        probes[f"c{i}"] = p.set_normalizer(mean, std).eval().to(device)
    return probes, mean, std


def make_bank(probes: dict, d: int, mean: torch.Tensor, std: torch.Tensor, device: str,
              dtype: torch.dtype = torch.float32) -> BatchedLensBank:
    """A :class:`BatchedLensBank` in ``dtype`` holding ``probes`` (added in chunks)."""
    bank = BatchedLensBank(d, input_mean=mean, input_std=std, device=device, dtype=dtype)
    names = list(probes)
    for i in range(0, len(names), 500):  # in chunks: one add of 8,000 d=896 probes would stack ~4 GB of temporaries
        bank.add({k: probes[k] for k in names[i:i + 500]})
    return bank


def measure(bank: BatchedLensBank, modules: list, tokens: int, loop: str, device: str,
            dtype: torch.dtype = torch.float32) -> dict:
    """Per-token seconds of the bank and of the per-probe loop (modules and inputs in ``dtype``) on a
    random block ``(tokens, d)``, and the largest |bank - loop| logit."""
    n, d = len(bank), bank.dim
    x = torch.randn(tokens, d, device=device)
    xl = x.to(dtype)
    big = n * d >= 2000 * 896
    with torch.inference_mode():
        batched = _time(lambda: bank.logits(x), 3 if big else 10) / tokens
        ref = torch.stack([m(xl) for m in modules], dim=1).float()
        diff = float((bank.logits(x).float() - ref).abs().max())
        if loop == "per_probe":
            looped = _time(lambda: [m(xl) for m in modules], 1 if big else 3) / tokens
            timed = tokens
        else:
            timed = min(tokens, 2 if big else 4)
            rows = [xl[t:t + 1] for t in range(timed)]
            looped = _time(lambda: [m(r) for r in rows for m in modules], 1) / timed
    return {"batched_s_per_token": batched, "loop_s_per_token": looped, "loop_tokens_timed": timed, "max_abs_diff": diff}


def run(n: int, d: int, tokens: int, loop: str, device: str, seed: int = 0, probe: str = "mlp") -> dict:
    probes, mean, std = make_probes(n, d, device, seed, probe)
    bank = make_bank(probes, d, mean, std, device)
    modules = [probes[name] for name in bank.names]
    m = measure(bank, modules, tokens, loop, device)
    batched, looped = m["batched_s_per_token"], m["loop_s_per_token"]
    del probes, modules, bank
    return {
        "probe": probe, "n_probes": n, "dim": d, "tokens": tokens, "loop": loop, "loop_tokens_timed": m["loop_tokens_timed"],
        "device": device, "batched_ms_per_token": round(batched * 1e3, 4), "loop_ms_per_token": round(looped * 1e3, 4),
        "ratio": round(looped / batched, 2), "max_abs_diff": float(f"{m['max_abs_diff']:.3g}"),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Only N = 50 and 500 at d = 384.")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: a fair single-core comparison).")
    ap.add_argument("--sizes", default=None, help="Comma-separated probe counts (default: 50,500,2000,8000).")
    ap.add_argument("--dims", default=None, help="Comma-separated widths (default: 384,896).")
    ap.add_argument("--probe", default="mlp", choices=["mlp", "linear"], help="Probe kind in the bank.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [50, 500] if args.quick else [50, 500, 2000, 8000]
    dims = [384] if args.quick else [384, 896]
    if args.sizes:
        sizes = [int(v) for v in args.sizes.split(",")]
    if args.dims:
        dims = [int(v) for v in args.dims.split(",")]
    configs = [(1, "per_probe"), (32, "per_probe"), (32, "per_token")]
    for d in dims:
        for n in sizes:
            for tokens, loop in configs:
                print(json.dumps(run(n, d, tokens, loop, args.device, probe=args.probe)), flush=True)


if __name__ == "__main__":
    main()

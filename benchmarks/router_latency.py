"""Router decision latency, in-process and over HTTP on loopback with concurrent clients.

    python benchmarks/router_latency.py [--router NAME] [--n 300] [--http-requests 600] [--clients 8]

Without ``--router`` a router is trained on the shared routing data (text features come from the
feature cache after the first run). Every decision is *cold*: its text was never seen, so the
MiniLM encoder runs (except in the ``cached_text`` line, which repeats one text). Texts are
``short`` task-like texts (the first sentence of a held-out prompt, at most 100 characters) or the
full held-out ``prompt`` (MMLU/GSM8K questions, up to 256 tokens). ``int8`` runs the encoder with
dynamic int8 quantization (``--quantize``). One torch thread in-process and in the server.

One JSON line per configuration; ``ratio_p50_vs_fp32_short`` compares with the in-process fp32
short-text line. Goals: p99 <= 10 ms in-process for one task text, >= 200 decisions/s over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def short_text(prompt: str) -> str:
    first = re.split(r"(?<=[.?!:])\s|\n", prompt.strip(), maxsplit=1)[0]
    return first[:100]


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean())}


def in_process(router, texts: list[str], repeat_one: bool = False) -> dict:
    router._cache.clear()
    router.route("warm-up task")  # one-off allocations are not a decision's cost
    times = []
    for t in texts:
        if not repeat_one:
            router._cache.clear()
        t0 = time.perf_counter()
        router.route(texts[0] if repeat_one else t)
        times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_load(url: str, texts: list[str], clients: int) -> dict:
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for i, t in enumerate(texts):
        queue.put_nowait((i, t))
    lat, codes = [], {}

    async def worker(client):
        while True:
            try:
                i, t = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            r = await client.post(url + "/route", json={"text": t, "task_id": f"bench-{i}"})
            lat.append((time.perf_counter() - t0) * 1000)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await client.post(url + "/route", json={"text": "warm-up task"})
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {**percentiles(lat), "decisions_per_s": len(texts) / wall, "status_codes": codes, "clients": clients}


def serve(home: str, router: str, quantize: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "cortex.cli.main", "--home", home, "route", "serve", "--router", router,
           "--port", str(port), "--threads", "1"] + (["--quantize"] if quantize else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "routing" / "train.jsonl"))
    ap.add_argument("--router", default=None, help="registry router to time (default: train one)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--http-requests", type=int, default=600)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from cortex.hub.registry import Registry
    from cortex.routing.data import ingest_labeled
    from cortex.routing.features import master_indices
    from cortex.routing.loop import register_router
    from cortex.routing.masters import load_masters
    from cortex.routing.policy import PolicyConfig
    from cortex.routing.router import Router
    from cortex.routing.rules import RuleSet
    from cortex.routing.training import TrainConfig, stratified_split, train_router

    masters = load_masters(ROOT / "configs" / "router" / "masters.yaml")
    names = [m.name for m in masters]
    frame = ingest_labeled(args.data, text_field="prompt", label_field="master", success_field="weak_correct",
                           masters=names).frame
    train_idx, test_idx = stratified_split(master_indices(frame["label"], names, "label"), 0.2, args.seed)
    rng = np.random.default_rng(args.seed)
    held = frame.iloc[test_idx]["text"].tolist()
    rng.shuffle(held)
    prompts = held[: args.n]
    shorts = list(dict.fromkeys(short_text(p) for p in held))  # unique: every decision is cold
    home = tempfile.mkdtemp(prefix="router-latency-")
    reg = Registry(home)
    if args.router:
        router = Router.load(args.router)
    else:
        res = train_router(frame.iloc[train_idx], masters, train=TrainConfig(seed=args.seed))
        router = Router(res.model, PolicyConfig(knn_weight=res.knn_weight),
                        RuleSet.load(ROOT / "configs" / "router" / "rules.yaml", names), res.knn)
    register_router(router, name="bench-router", registry=reg)
    base = {**machine(), "load_avg_1m_at_start": os.getloadavg()[0]}
    lines = []
    fp32 = Router.load(reg.path("bench-router"))
    int8 = Router.load(reg.path("bench-router"), quantize=True)
    for label, r in (("fp32", fp32), ("int8", int8)):
        lines.append({"mode": "in_process", "encoder": label, "texts": "short", **in_process(r, shorts[: args.n])})
        lines.append({"mode": "in_process", "encoder": label, "texts": "prompt", **in_process(r, prompts)})
    lines.append({"mode": "in_process", "encoder": "fp32", "texts": "cached_text", **in_process(fp32, prompts, True)})
    agree = np.mean([a.master == b.master for a, b in zip(fp32.route_many(prompts), int8.route_many(prompts))])
    for quantize in (False, True):
        proc, url = serve(home, "bench-router", quantize)
        try:
            stats = asyncio.run(http_load(url, shorts[: args.http_requests], args.clients))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        lines.append({"mode": "http", "encoder": "int8" if quantize else "fp32", "texts": "short", **stats})
    ref = lines[0]["p50_ms"]
    for line in lines:
        line["ratio_p50_vs_fp32_short"] = line["p50_ms"] / ref
        if line["encoder"] == "int8":
            line["int8_fp32_agreement"] = float(agree)
        print(json.dumps({**line, **base, "load_avg_1m_at_end": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()

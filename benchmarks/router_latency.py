"""Router decision latency on the dataset's real prompts, in-process and over HTTP, the router as it
is now (``new``: first 3 MiniLM layers, 64 tokens, convex read-out, one tokenization, success head, kNN
vote only when needed) beside the defaults of the previous stop (``prev``: the same with 48 tokens, no
read-out) and the router before issue 16 (``old``: 256 text tokens, last layer, no lexical root).

    python benchmarks/router_latency.py [--n 300] [--http-requests 600] [--clients 8]

Both routers are trained on the training part of the shared routing data (the held-out 20%, seed 0,
is never trained on) and timed on held-out ``prompt`` texts at their real lengths (MMLU/GSM8K
questions: median ~60 word pieces, p99 ~430). Every timed decision is *cold* (the feature cache is
emptied before it); ``cached_text`` lines repeat one text and are never mixed into the cold figures.
One torch thread in-process and in the server; ``int8`` is the encoder ``cortex route serve`` uses by
default, ``fp32`` the one the heads were trained on (``int8_fp32_agreement``: identical decisions).

In-process configurations are timed interleaved, text by text, so they meet the same background
load; besides wall-clock percentiles each line has the thread's CPU time per decision. ``busy_core``
lines repeat the cold run while a second process keeps one core busy. HTTP load comes from a
minimal keep-alive client (``--clients`` connections). One JSON line per configuration, with the
machine's load average. Goals: p99 <= 10 ms in-process (cold, one thread), >= 300 decisions/s over
HTTP with 8 clients and no errors.
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


def in_process(routers: dict, texts: list[str], repeat_one: bool = False) -> dict:
    """Time each router on the same texts, interleaved text by text, so that every configuration
    meets the same background load (this machine is shared). Wall and thread-CPU milliseconds."""
    for r in routers.values():
        r._cache.clear()
        r.route("warm-up task")  # one-off allocations are not a decision's cost
    wall = {k: [] for k in routers}
    cpu = {k: [] for k in routers}
    for t in texts:
        for k, r in routers.items():
            if not repeat_one:
                r._cache.clear()
            c0, t0 = time.thread_time(), time.perf_counter()
            r.route(texts[0] if repeat_one else t)
            wall[k].append((time.perf_counter() - t0) * 1000)
            cpu[k].append((time.thread_time() - c0) * 1000)
    out = {}
    for k in routers:
        c = np.asarray(cpu[k])
        out[k] = {**percentiles(wall[k]), "cpu_p50_ms": float(np.percentile(c, 50)),
                  "cpu_p99_ms": float(np.percentile(c, 99))}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive client on one connection (asyncio streams).

    The load generator shares the machine's two cores with the server; a full client library
    spends more CPU per request than the server's own HTTP handling, so it would measure itself.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:"))
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def http_load(url: str, texts: list[str], clients: int) -> dict:
    host, port = url.rsplit("/", 1)[-1].split(":")
    queue: asyncio.Queue = asyncio.Queue()
    for i, t in enumerate(texts):
        queue.put_nowait((i, t))
    lat, codes = [], {}

    async def worker(client: KeepAliveClient):
        while True:
            try:
                i, t = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            status, body = await client.post("/route", {"text": t, "task_id": f"bench-{i}"})
            lat.append((time.perf_counter() - t0) * 1000)
            codes[status] = codes.get(status, 0) + 1
            if i == 0 and status == 200:
                json.loads(body)["master"]  # a real decision came back

    conns = [KeepAliveClient(host, int(port)) for _ in range(clients)]
    for c in conns:
        await c.post("/route", {"text": "warm-up task"})
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return {**percentiles(lat), "decisions_per_s": len(texts) / wall, "status_codes": codes, "clients": clients}


def busy_core() -> subprocess.Popen:
    """A second process spinning on one core (what a neighbour on the same machine does)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def serve(home: str, router: str, quantize: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "cortex.cli.main", "--home", home, "route", "serve", "--router", router,
           "--port", str(port), "--threads", "1", "--quantize" if quantize else "--no-quantize"]
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


OLD = {"max_text_tokens": 256, "text_layers": [-1], "lexical_buckets": 0, "topics": [], "head_layout": "branch_mlp",
       "hidden_dim": 256, "dropout": 0.5, "text_depth": 0, "readout": False}
# prev: the defaults of the last stop (48 tokens, no convex read-out)
PREV = {"max_text_tokens": 48, "readout": False}
PREV_TRAIN = {"batch_size": 128, "lr": 1e-3, "weight_decay": 0.05, "lexical_lr_scale": 10.0, "outcome_weight": 1.0}


def train_both(args, home: str) -> list[str]:
    """Train the new and the old router on the training part and register them under ``home``."""
    from cortex.hub.registry import Registry
    from cortex.routing.data import ingest_labeled
    from cortex.routing.features import master_indices
    from cortex.routing.loop import register_router
    from cortex.routing.masters import load_masters
    from cortex.routing.policy import PolicyConfig
    from cortex.routing.router import Router
    from cortex.routing.rules import RuleSet
    from cortex.routing.training import TrainConfig, stratified_split, train_router

    masters = load_masters(ROOT / "src" / "cortex" / "configs" / "router" / "masters.yaml")
    names = [m.name for m in masters]
    frame = ingest_labeled(args.data, text_field="prompt", label_field="master", success_field="weak_correct",
                           topic_field="subject", masters=names).frame
    train_idx, test_idx = stratified_split(master_indices(frame["label"], names, "label"), 0.2, args.seed)
    rules = RuleSet.load(ROOT / "src" / "cortex" / "configs" / "router" / "rules.yaml", names)
    for name, kwargs in (("new", None), ("prev", PREV), ("old", OLD)):
        run = {} if kwargs in (None, PREV) else PREV_TRAIN  # old trains as it did then
        res = train_router(frame.iloc[train_idx], masters, model_kwargs=kwargs, train=TrainConfig(seed=args.seed, **run))
        router = Router(res.model, PolicyConfig(knn_weight=res.knn_weight), rules, res.knn,
                        success=res.success if name == "new" else None)
        register_router(router, name=name, registry=Registry(home))
    held = frame.iloc[test_idx]["text"].tolist()
    np.random.default_rng(args.seed).shuffle(held)
    return held


def http_lines(home: str, texts: list[str], clients: int) -> list[dict]:
    lines = []
    for name in ("new", "prev", "old"):
        proc, url = serve(home, name, True)
        try:
            stats = asyncio.run(http_load(url, texts, clients))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        lines.append({"mode": "http", "router": name, "encoder": "int8", "texts": "prompt", **stats})
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "routing" / "train.jsonl"))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--http-requests", type=int, default=600)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from cortex.hub.registry import Registry
    from cortex.routing.router import Router

    home = tempfile.mkdtemp(prefix="router-latency-")
    held = train_both(args, home)
    prompts = held[: args.n]
    reg = Registry(home)
    routers = {f"{n}_{e}": Router.load(reg.path(n), quantize=e == "int8") for n in ("new", "prev", "old")
               for e in ("int8", "fp32")}
    agree = {}
    for name in ("new", "prev", "old"):
        a, b = routers[f"{name}_fp32"].route_many(prompts), routers[f"{name}_int8"].route_many(prompts)
        agree[name] = float(np.mean([x.master == y.master for x, y in zip(a, b)]))
    lines = []
    for label, stats in in_process(routers, prompts).items():
        lines.append({"mode": "in_process", "config": label, "texts": "prompt", **stats})
    spinner = busy_core()
    try:
        for label, stats in in_process(routers, prompts).items():
            lines.append({"mode": "in_process_busy_core", "config": label, "texts": "prompt", **stats})
    finally:
        spinner.kill()
    for label, stats in in_process(routers, prompts, repeat_one=True).items():
        lines.append({"mode": "in_process", "config": label, "texts": "cached_text", **stats})
    lines += http_lines(home, held[: args.http_requests], args.clients)
    base = {**machine(), "load_avg_1m_at_start": os.getloadavg()[0]}
    for line in lines:
        name = (line.get("config") or line["router"]).split("_")[0]
        line["int8_fp32_agreement"] = agree[name]
        print(json.dumps({**line, **base, "load_avg_1m_at_end": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()

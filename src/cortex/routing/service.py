"""The router as an HTTP service (FastAPI): ``POST /route``, ``POST /feedback``, ``GET /health``,
``GET /metrics`` (Prometheus text).

Failure behaviour: a body that is not JSON or does not match the schema → 422; a body or text over
the limits → 413; a malformed context → 422 naming the field; anything failing inside the model →
the decision comes from the rules (``path`` ``rules`` or ``default``, ``error`` set), never a 500.
Feedback is validated exactly as log ingestion validates lines and appended (fsync'd) to the
family's feedback log, which ``cortex route retrain`` reads.

Workers are stateless apart from the in-memory decision memory used to join feedback to its
decision; behind a load balancer, clients send ``text`` and ``routed_to`` with their feedback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from cortex._extras import require

require("fastapi", "serve")  # a MissingExtraError naming the extra, before the imports below
from fastapi import FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from cortex.errors import CortexError, DataError, InputError
from cortex.routing.context import request_context
from cortex.routing.data import task_text
from cortex.routing.loop import FeedbackLog, ShadowRouter
from cortex.routing.policy import decide
from cortex.routing.prometheus import MetricsRegistry
from cortex.routing.router import Router


class RouteRequest(BaseModel):
    """A task to route: ``text``, or ``title`` / ``task_type`` / ``description`` (joined as in the logs)."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    title: str | None = None
    task_type: str | None = None
    description: str | None = None
    task_id: str | None = Field(default=None, max_length=200)
    context: dict[str, Any] | None = None


class FeedbackRequest(BaseModel):
    """The outcome of a routed task. ``text`` and ``routed_to`` are needed only when this process did
    not route the task itself (another worker, or after a restart)."""

    model_config = ConfigDict(extra="forbid")
    task_id: str = Field(min_length=1, max_length=200)
    success: bool | None = None
    completion_time_minutes: float | None = None
    tokens_used: int | None = None
    user_corrected_to: str | None = None
    text: str | None = None
    routed_to: str | None = None


class BodyLimit:
    """Pure ASGI middleware: a request body over ``max_bytes`` gets 413 before any route sees it.

    A declared ``content-length`` is checked at once; a chunked body (no length) is read up to the
    limit here and handed on from memory. Pure ASGI rather than ``@app.middleware("http")``,
    whose per-request task and stream wrapping cost more than a routing decision's HTTP handling.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send, size: str) -> None:
        body = json.dumps({"detail": f"request body of {size} bytes exceeds {self.max_bytes}; send less text."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                return await self._reject(send, length.decode())
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._reject(send, f"more than {self.max_bytes}")
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MicroBatcher:
    """Collects concurrent requests into one batched decision (one encoder pass for several texts).

    A daemon thread takes the first waiting request, gathers more for up to ``max_wait_ms`` (or
    until ``max_batch``), decides them together with :meth:`ShadowRouter.route_many` and resolves
    each request's future. Under light load a request waits at most ``max_wait_ms``; under heavy
    load batching raises throughput because the encoder's cost grows slower than the batch.
    """

    def __init__(self, shadow: ShadowRouter, max_batch: int = 16, max_wait_ms: float = 2.0):
        import queue

        self.shadow, self.max_batch, self.max_wait = shadow, max_batch, max_wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, text: str, context_row: np.ndarray, task_id: str) -> Future:
        """Queue one validated task; the future resolves to ``(decision, challenger decision or None)``."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="router-batcher", daemon=True)
                    self._thread.start()
        fut: Future = Future()
        self._queue.put((text, context_row, task_id, fut))
        return fut

    def _run(self) -> None:
        import queue

        while True:
            batch = [self._queue.get()]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self.shadow.route_many([b[0] for b in batch], np.stack([b[1] for b in batch]),
                                                 [b[2] for b in batch])
            except Exception as e:  # the caller turns this into a rules decision, never a 500
                for b in batch:
                    b[3].set_exception(e)
                continue
            for b, r in zip(batch, results):
                b[3].set_result(r)


@dataclass
class _Service:
    """What the endpoints share: the routers, the batcher, the metrics and the decision memory."""

    shadow: ShadowRouter
    batcher: MicroBatcher
    metrics: MetricsRegistry
    recent: OrderedDict[str, dict[str, Any]]  # task_id → what feedback needs to rebuild the log line
    feedback_log: FeedbackLog | None
    max_text_chars: int
    memory_size: int
    started: float

    @property
    def champion(self) -> Router:
        return self.shadow.champion


def create_app(
    router: Router | ShadowRouter, *, feedback_log: FeedbackLog | None = None, max_text_chars: int = 20_000,
    max_body_bytes: int = 256 * 1024, memory_size: int = 100_000, metrics: MetricsRegistry | None = None,
    max_batch: int = 16, max_wait_ms: float = 2.0,
) -> FastAPI:
    """The FastAPI app serving ``router`` (a plain :class:`Router` or a :class:`ShadowRouter`).

    ``max_batch`` / ``max_wait_ms`` configure the :class:`MicroBatcher` (``max_batch=1``: no batching).
    """
    shadow = router if isinstance(router, ShadowRouter) else ShadowRouter(router)
    svc = _Service(shadow, MicroBatcher(shadow, max_batch, max_wait_ms), metrics or MetricsRegistry(), OrderedDict(),
                   feedback_log, max_text_chars, memory_size, time.time())
    app = FastAPI(title="cortex router", version="1")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.state.metrics, app.state.router, app.state.recent = svc.metrics, shadow, svc.recent
    _add_route(app, svc)
    _add_feedback(app, svc)
    _add_status(app, svc)

    @app.exception_handler(CortexError)
    async def cortex_error(request: Request, exc: CortexError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


def _add_route(app: FastAPI, svc: _Service) -> None:
    """``POST /route``: validate, decide in the micro-batcher (rules if anything fails), remember for feedback."""
    batcher, champion, metrics, recent = svc.batcher, svc.champion, svc.metrics, svc.recent
    max_text_chars, memory_size = svc.max_text_chars, svc.memory_size

    def _fallback(text: str, error: str):
        d = decide(champion.masters, None, text, champion.policy, champion.rules, error=error)
        d.router = champion.name
        return d

    @app.post("/route")
    async def route(req: RouteRequest) -> JSONResponse:
        text = req.text if req.text is not None else task_text(req.title, req.task_type, req.description)
        if not text or not text.strip():
            raise HTTPException(422, "The task has no text; send 'text' or 'title'/'description'.")
        if len(text) > max_text_chars:
            raise HTTPException(413, f"The task text has {len(text)} characters; the limit is {max_text_chars}.")
        task_id = req.task_id or uuid.uuid4().hex
        try:
            ctx = request_context(req.context, champion.masters)
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        t0 = time.perf_counter()
        chall = None
        try:
            decision, chall = await asyncio.wrap_future(batcher.submit(text, ctx, task_id))
        except Exception as e:  # last line of defence: the rules still route a routable task
            decision = _fallback(text, f"{type(e).__name__}: {e}")
        seconds = time.perf_counter() - t0
        metrics.record_decision(decision.path, decision.master, seconds, error=decision.error is not None)
        if chall is not None:
            metrics.shadow.inc(agree=str(chall.master == decision.master).lower())
        recent[task_id] = {"text": text, "title": req.title, "task_type": req.task_type, "description": req.description,
                           "routed_to": decision.master, "rule_used": decision.rule, "confidence": decision.confidence,
                           "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "priority": (req.context or {}).get("priority")}
        while len(recent) > memory_size:
            recent.popitem(last=False)
        out = {"task_id": task_id, **decision.to_dict()}
        if chall is not None:
            out["shadow"] = {"router": chall.router, "master": chall.master, "path": chall.path,
                             "confidence": chall.confidence}
        return JSONResponse(out)  # a plain dict of JSON types: skip FastAPI's response-model encoding


def _add_feedback(app: FastAPI, svc: _Service) -> None:
    """``POST /feedback``: join an outcome to its decision, append it to the log, grow the kNN memory."""
    champion, metrics, recent, feedback_log = svc.champion, svc.metrics, svc.recent, svc.feedback_log

    @app.post("/feedback")
    def feedback(req: FeedbackRequest) -> dict[str, Any]:
        if feedback_log is None:
            raise HTTPException(503, "This service was started without a feedback log; restart it with --feedback-log.")
        seen = recent.get(req.task_id)
        if seen is None and (req.text is None or req.routed_to is None):
            raise HTTPException(
                404, f"task_id {req.task_id!r} was not routed by this service (or is too old); send 'text' and "
                     "'routed_to' with the feedback.")
        seen = dict(seen or {"text": req.text, "routed_to": req.routed_to,
                             "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        if req.routed_to is not None:
            seen["routed_to"] = req.routed_to
        title = seen.get("title") if seen.get("title") or seen.get("description") else seen["text"]
        record = {
            "task_id": req.task_id, "task_title": title, "task_type": seen.get("task_type") if seen.get("title") else None,
            "description": seen.get("description") if seen.get("title") or seen.get("description") else None,
            "routed_to": seen["routed_to"], "rule_used": seen.get("rule_used"), "confidence": seen.get("confidence"),
            "timestamp": seen.get("timestamp"), "priority": seen.get("priority"), "success": req.success,
            "completion_time_minutes": req.completion_time_minutes, "tokens_used": req.tokens_used,
            "user_corrected_to": req.user_corrected_to,
        }
        try:
            feedback_log.append_outcome(record, champion.masters)
        except DataError as e:
            raise HTTPException(422, str(e)) from None
        outcome = "corrected" if req.user_corrected_to else {True: "success", False: "failure", None: "unknown"}[req.success]
        metrics.feedback.inc(outcome=outcome)
        # a successful, uncorrected decision joins the kNN memory at once (retraining persists it)
        if req.success and not req.user_corrected_to and champion.knn is not None:
            feats = champion._cache.get(seen["text"])
            if feats is not None:
                champion.knn.add(feats[None, :], [champion.masters.index(seen["routed_to"])])
        return {"status": "recorded", "task_id": req.task_id}


def _add_status(app: FastAPI, svc: _Service) -> None:
    """``GET /health`` and ``GET /metrics`` (Prometheus text)."""
    shadow, champion, metrics, started = svc.shadow, svc.champion, svc.metrics, svc.started

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "router": champion.name, "masters": champion.masters,
                "challenger": shadow.challenger.name if shadow.challenger is not None else None,
                "shadow_fraction": shadow.fraction, "decisions": int(metrics.decisions.total()),
                "uptime_s": round(time.time() - started, 1), "quantized": champion.quantized}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``app`` with uvicorn until interrupted (access log off: it costs more than a decision)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

"""A servable router: the model, the decision policy, the fallback rules and the kNN memory.

A router folder (a registry entry of kind ``router``) holds::

    config.json, model.safetensors, tokenizer_text/   the RouterModel (save_pretrained)
    router.json                                        policy, rules, training settings and figures
    knn.safetensors                                    embeddings of successful past decisions
    success.safetensors                                the success head and its outcome memory (if trained)
    data/train.parquet                                 the training set (retraining starts from it)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cortex.errors import InputError, RoutingError
from cortex.hub.registry import Registry, atomic_write_text
from cortex.routing.context import request_context
from cortex.routing.data import write_parquet
from cortex.routing.encoder import TextEncoder
from cortex.routing.features import encode_texts
from cortex.routing.knn import KNNMemory, KNNVote
from cortex.routing.model import RouterModel, RouterPredictions
from cortex.routing.policy import Decision, PolicyConfig, Prediction, decide, utilities
from cortex.routing.rules import RuleSet
from cortex.routing.success import SuccessModel, text_statistics

ROUTER_FILE = "router.json"
KNN_FILE = "knn.safetensors"
SUCCESS_FILE = "success.safetensors"
DATA_FILE = "data/train.parquet"
FORMAT_VERSION = 1


def _finite_or_none(arr: np.ndarray | None) -> np.ndarray | None:
    """Outcome arrays with NaN columns (masters never observed) contribute no cost: NaN → 0 for utility."""
    return None if arr is None else np.nan_to_num(arr, nan=0.0)


def _neutral_success(arr: np.ndarray | None) -> np.ndarray | None:
    """Success of masters never observed: the mean of the observed ones in the row (neither favoured
    nor penalized), 1 when none was observed."""
    if arr is None:
        return None
    known = np.isfinite(arr)
    n = known.sum(1)
    fill = np.where(n > 0, np.where(known, arr, 0.0).sum(1) / np.maximum(n, 1), 1.0)
    return np.where(known, arr, fill[:, None])


class Router:
    """Routes task texts to masters.

    Args:
        model: a trained :class:`RouterModel` (put in eval mode).
        policy: the decision policy settings.
        rules: fallback rules (may be empty).
        knn: memory of successful past decisions, or ``None``.
        name: registry name (reported in every decision).
        meta: the ``router.json`` content (training settings and figures).
        cache_size: texts whose features are kept in memory, least recently used dropped first
            (repeated tasks skip the encoder).
        trace: serve the text encoder as a TorchScript trace (see :class:`~cortex.routing.encoder.TextEncoder`);
            tracing costs about a second once, so one-shot commands turn it off.
        success: the success head (:mod:`~cortex.routing.success`); without it the tree's success leaves answer.
    """

    def __init__(
        self, model: RouterModel, policy: PolicyConfig | None = None, rules: RuleSet | None = None,
        knn: KNNMemory | None = None, name: str | None = None, meta: dict[str, Any] | None = None,
        cache_size: int = 4096, trace: bool = True, success: SuccessModel | None = None,
    ):
        self.model = model.eval()
        self.masters = list(model.masters)
        self.policy = policy or PolicyConfig()
        self.rules = rules or RuleSet()
        self.knn = knn
        self.success = success
        if knn is not None:
            knn.k, knn.min_similarity = self.policy.knn_k, self.policy.knn_min_similarity
        self.name = name
        self.meta = dict(meta or {})
        self.quantized = False
        self._trace = trace
        self._encoder: TextEncoder | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # fast tokenizers are not safe to call from several threads at once
        if self.policy.default_master is not None and self.policy.default_master not in self.masters:
            raise RoutingError(f"policy.default_master={self.policy.default_master!r} is not one of {self.masters}.")

    # ------------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls, name_or_path: str | os.PathLike, *, registry: Registry | None = None,
        policy: Mapping[str, Any] | None = None, rules: str | os.PathLike | None = None, quantize: bool = False,
        trace: bool = True,
    ) -> Router:
        """A router from a registry name (or alias such as ``router:champion``) or a router folder.

        ``policy`` overrides fields of the saved policy; ``rules`` replaces the saved rules with a
        YAML file; ``quantize`` runs the text encoder with int8 dynamic quantization (faster on CPU,
        features differ slightly from the fp32 ones the heads were trained on); ``trace`` as in
        :class:`Router`.
        """
        folder, name = Path(name_or_path), None
        if not folder.is_dir():
            reg = registry or Registry()
            entry = reg.get(str(name_or_path), kind="router")
            reg.check(entry.name, fast=True)
            folder, name = reg.path(entry.name), entry.name
        meta_path = folder / ROUTER_FILE
        if not meta_path.is_file():
            raise RoutingError(f"{str(folder)!r} is not a router folder (no {ROUTER_FILE}); train one with: cortex route train")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model = RouterModel.from_pretrained(folder)
        pol = PolicyConfig.from_dict({**meta.get("policy", {}), **dict(policy or {})})
        rule_set = RuleSet.load(rules, model.masters) if rules is not None else RuleSet.from_dict(meta.get("rules"), model.masters)
        knn = KNNMemory.load(folder / KNN_FILE) if (folder / KNN_FILE).is_file() else None
        success = SuccessModel.load(folder / SUCCESS_FILE) if (folder / SUCCESS_FILE).is_file() else None
        router = cls(model, pol, rule_set, knn, name=name or meta.get("name") or folder.name, meta=meta, trace=trace,
                     success=success)
        if quantize:
            router.quantize()
        return router

    def quantize(self) -> None:
        """Serve with an int8 dynamic-quantized copy of the text encoder (CPU inference only).

        The tree keeps its fp32 weights, so the router still saves and fingerprints as trained.
        """
        self._encoder = TextEncoder(self.model, quantize=True, trace=self._trace)
        self.quantized = True
        self._cache.clear()

    def _serving_encoder(self) -> TextEncoder | None:
        """The fast encoder (built on first use), or ``None`` when the text root is not a mean-pooled HF
        encoder it can serve (then the tree's own root computes the features)."""
        if self._encoder is None:
            if not TextEncoder.supports(self.model):
                return None
            self._encoder = TextEncoder(self.model, trace=self._trace)
        return self._encoder

    # ------------------------------------------------------------------------------- saving
    def save(self, folder: str | os.PathLike, train_frame: pd.DataFrame | None = None,
             extra_meta: Mapping[str, Any] | None = None) -> Path:
        """Write the router folder (see the module docstring); a quantized router saves its fp32 weights."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        meta = {**self.meta, **dict(extra_meta or {}), "format": FORMAT_VERSION, "masters": self.model.config.masters,
                "policy": self.policy.to_dict(), "rules": self.rules.to_dict()}
        atomic_write_text(folder / ROUTER_FILE, json.dumps(meta, indent=1, default=str))
        if self.knn is not None:
            self.knn.save(folder / KNN_FILE)
        if self.success is not None:
            self.success.save(folder / SUCCESS_FILE)
        if train_frame is not None:
            write_parquet(train_frame, folder / DATA_FILE)
        return folder

    # ------------------------------------------------------------------------------- features
    def word_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of whole texts: the one tokenization of a decision (text and lexical roots)."""
        with self._lock:  # fast tokenizers are not safe to call from several threads at once
            return self.model.word_ids(list(texts))

    def encode(self, texts: Sequence[str], ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """``(N, H)`` pooled text features computed now (no cache), as this router serves them; ``ids``
        (from :meth:`word_ids`) spare the serving encoder a second tokenization."""
        texts = list(texts)
        encoder = self._serving_encoder()
        if encoder is not None:
            return encoder(texts) if ids is None else encoder.from_ids(ids)
        with self._lock:
            return encode_texts(self.model, texts)

    def features(self, texts: Sequence[str], ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """``(N, H)`` pooled text features, from the in-memory LRU cache or the encoder."""
        out: list[np.ndarray | None] = []
        for t in texts:
            v = self._cache.get(t)
            if v is not None:
                self._cache.move_to_end(t)
            out.append(v)
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            feats = self.encode([texts[i] for i in todo], [ids[i] for i in todo] if ids is not None else None)
            for i, f in zip(todo, feats):
                out[i] = f
                self._cache[texts[i]] = f
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return np.stack(out).astype(np.float32, copy=False)

    def predict(self, features: np.ndarray, contexts: np.ndarray, texts: Sequence[str],
                ids: Sequence[Sequence[int]] | None = None) -> RouterPredictions:
        """Calibrated predictions for ``(B, H)`` text features, ``(B, F)`` raw contexts and the ``B`` texts
        themselves (the lexical root and the success head read them whole; ``ids`` = their :meth:`word_ids`)."""
        ids = self.word_ids(texts) if ids is None else ids
        head = self.success is not None and "success" in self.model.config.outcomes
        pred = self.model.predict(torch.from_numpy(features), torch.as_tensor(contexts, dtype=torch.float32),
                                  self.model.lexical_bags_from_ids(ids), success_leaves=not head)
        if head:  # the head answers for the masters whose success training observed, as the leaves would
            stats = text_statistics(list(texts), [len(r) for r in ids])
            observed = np.asarray(self.model.config.observed["success"], dtype=bool)
            pred.success = np.where(observed, self.success.predict(features, len(self.masters), stats), np.nan)
        return pred

    # ------------------------------------------------------------------------------- routing
    def _check_text(self, text: Any) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InputError("The task text is empty; pass the task's title and/or description.")
        return text

    def route(self, text: str, context: Mapping[str, Any] | None = None) -> Decision:
        """Decide where one task goes (see :class:`~cortex.routing.policy.Decision`).

        Bad input (empty text, malformed context) raises :class:`InputError`; a failure inside the
        model is caught and the decision falls back to the rules, with ``error`` set.
        """
        t0 = time.perf_counter()
        text = self._check_text(text)
        ctx = request_context(context, self.masters)[None, :]
        return self._decide([text], ctx, None, t0)[0]

    def route_many(
        self, texts: Sequence[str], contexts: Sequence[Mapping[str, Any] | None] | np.ndarray | None = None,
        features: np.ndarray | None = None,
    ) -> list[Decision]:
        """Decisions for many tasks at once (one batched model pass); ``latency_ms`` is the batch's
        time divided evenly. ``contexts`` are request dicts or a ``(B, F)`` raw feature array."""
        t0 = time.perf_counter()
        texts = [self._check_text(t) for t in texts]
        if contexts is None:
            ctx = np.stack([request_context(None, self.masters) for _ in texts]) if texts else None
        elif isinstance(contexts, np.ndarray):
            ctx = contexts
        else:
            ctx = np.stack([request_context(c, self.masters) for c in contexts])
        return self._decide(texts, ctx, features, t0)

    def _decide(self, texts: list[str], ctx: np.ndarray, features: np.ndarray | None, t0: float) -> list[Decision]:
        pred, vote, error = None, None, None
        try:
            ids = self.word_ids(texts)
            feats = features if features is not None else self.features(texts, ids)
            pred = self.predict(feats, ctx, texts, ids)
        except (InputError, RoutingError):
            raise
        except Exception as e:  # any model failure: the rules still route the task (never a 500)
            pred, error = None, f"{type(e).__name__}: {e}"
        preds = [None if pred is None else Prediction(
            probs=pred.probs[i], success=_row_or_none(_neutral_success(pred.success), i),
            minutes=_row_or_none(_finite_or_none(pred.minutes), i), tokens=_row_or_none(_finite_or_none(pred.tokens), i))
            for i in range(len(texts))]
        if pred is not None:
            vote = self._vote(feats, preds)
        decisions = []
        for i, text in enumerate(texts):
            d = decide(self.masters, preds[i], text, self.policy, self.rules,
                       knn_probs=vote.probs[i] if vote is not None else None,
                       knn_support=int(vote.support[i]) if vote is not None else 0, error=error)
            if pred is not None:  # report NaN outcomes (never observed) as unknown, not as 0
                j = self.masters.index(d.master)
                d.success_probability = _value_or_none(pred.success, i, j)
                d.expected_minutes = _value_or_none(pred.minutes, i, j)
                d.expected_tokens = _value_or_none(pred.tokens, i, j)
            decisions.append(d)
        elapsed = (time.perf_counter() - t0) * 1000.0 / max(len(texts), 1)
        for d in decisions:
            d.latency_ms, d.router = elapsed, self.name
        return decisions

    def _vote(self, feats: np.ndarray, preds: list[Prediction]) -> KNNVote | None:
        """The kNN vote for the rows whose decision can use it: every row when it is blended in, else
        only the rows the model is unsure of (the fallback); other rows get an empty vote (support 0).

        Why: the vote scans the whole memory (the largest cost of a decision after the encoder), while
        a confident model decision never reads it.
        """
        pol = self.policy
        if self.knn is None or not len(self.knn) or not (pol.knn_weight > 0 or pol.knn_fallback):
            return None
        if pol.knn_weight > 0:
            return self.knn.vote(feats)
        unsure = np.array([pol.confidence_threshold >= 1.0 or float(p.probs[int(np.argmax(utilities(p, p.probs, pol)))])
                           < pol.confidence_threshold for p in preds])
        B, C = len(preds), len(self.masters)
        vote = KNNVote(np.full((B, C), 1.0 / C), np.zeros(B, np.int64), np.full(B, -1.0))
        if unsure.any():
            part = self.knn.vote(feats[unsure])
            vote.probs[unsure], vote.support[unsure], vote.top_similarity[unsure] = part.probs, part.support, part.top_similarity
        return vote


def _row_or_none(arr: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if arr is None else arr[i]


def _value_or_none(arr: np.ndarray | None, i: int, j: int) -> float | None:
    if arr is None or not np.isfinite(arr[i, j]):
        return None
    return float(arr[i, j])

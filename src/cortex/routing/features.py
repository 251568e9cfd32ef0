"""Tensors the router trains and predicts on: cached text features, context features, targets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cortex.errors import DataError
from cortex.routing.context import frame_context
from cortex.routing.embedding_cache import EmbeddingCache
from cortex.routing.lexical import LexicalBags
from cortex.routing.model import TEXT_ROOT, RouterModel
from cortex.routing.success import text_statistics


def text_root_fingerprint(model: RouterModel) -> str:
    """A hex id of the text root: its config (pooling, layer, length) and a hash of all its weights.

    Features cached under this id are valid exactly for this encoder; a fine-tuned or different
    backbone gets a different id, so stale features can never be reused.
    """
    h = hashlib.blake2b(digest_size=16)
    spec = dict(model.config.tree["roots"][TEXT_ROOT])
    spec.pop("source", None)  # where it came from does not change what it computes
    spec["text_layers"] = list(model.config.text_layers)
    if model.config.text_depth:  # (absent when 0, so features cached before the field existed stay valid)
        spec["text_depth"] = model.config.text_depth
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.tree.roots[TEXT_ROOT].state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return "text-" + h.hexdigest()


@torch.inference_mode()
def encode_texts(model: RouterModel, texts: Sequence[str]) -> np.ndarray:
    """``(N, H * len(text_layers))`` pooled text features of ``texts`` (truncated to ``max_text_tokens``)."""
    tok = model.text_tokenizer()
    batch = tok(list(texts), truncation=True, max_length=model.config.max_text_tokens, padding=True,
                return_tensors="pt")
    if not model.training:  # switching modes walks every submodule: only do it when needed
        return model.text_features(batch["input_ids"], batch["attention_mask"]).float().cpu().numpy()
    model.eval()
    try:
        return model.text_features(batch["input_ids"], batch["attention_mask"]).float().cpu().numpy()
    finally:
        model.train()


def feature_cache(model: RouterModel, persist: bool = True, root=None) -> EmbeddingCache:
    """The disk cache of ``model``'s text features (shared by every router with the same encoder)."""
    return EmbeddingCache(text_root_fingerprint(model), model.text_dim, root=root, persist=persist)


@dataclass
class FeatureSet:
    """Everything one training or evaluation pass reads, one row per task.

    Attributes:
        text: ``(N, H)`` pooled text features. context: ``(N, F)`` raw context features (NaN missing).
        labels: ``(N,)`` index of the right master. outcome_master: ``(N,)`` index of the master that
            handled the task. success: ``(N,)`` 1/0/NaN. log_minutes: ``(N,)`` log(minutes) or NaN.
        log_tokens: ``(N,)`` log1p(tokens) or NaN. topics: ``(N,)`` topic index, -1 unknown.
        lexical: hashed n-gram bags of the texts (``None`` for a router without a lexical root).
        text_stats: ``(N, 3)`` size statistics of the texts (:func:`~cortex.routing.success.text_statistics`).
    """

    text: torch.Tensor
    context: torch.Tensor
    labels: torch.Tensor
    outcome_master: torch.Tensor
    success: torch.Tensor
    log_minutes: torch.Tensor
    log_tokens: torch.Tensor
    topics: torch.Tensor
    text_stats: torch.Tensor
    lexical: LexicalBags | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray | torch.Tensor) -> FeatureSet:
        idx = torch.as_tensor(idx, dtype=torch.long)
        tensors = {f: getattr(self, f)[idx] for f in self.__dataclass_fields__ if f != "lexical"}
        return FeatureSet(**tensors, lexical=self.lexical.subset(idx) if self.lexical is not None else None)


def topic_indices(frame: pd.DataFrame, model: RouterModel) -> np.ndarray:
    """``(N,)`` index of each row's topic among the router's topics; -1 where unknown or not a topic."""
    if not model.config.topics or "topic" not in frame.columns:
        return np.full(len(frame), -1, dtype=np.int64)
    index = {t["name"]: i for i, t in enumerate(model.config.topics)}
    return frame["topic"].map(index).fillna(-1).to_numpy(dtype=np.int64, copy=True)


def master_indices(values: pd.Series, masters: Sequence[str], column: str) -> np.ndarray:
    """Master names → indices, with a :class:`DataError` naming unknown masters and their rows."""
    index = {m: i for i, m in enumerate(masters)}
    out = values.map(index)
    if out.isna().any():
        bad = values[out.isna()]
        raise DataError(
            f"{column} holds masters that this router does not have: {sorted(set(bad))[:10]} "
            f"({len(bad)} rows). Masters are {', '.join(masters)}; pass a masters file listing them all "
            "(--masters) or drop those rows."
        )
    return out.to_numpy(dtype=np.int64, copy=True)


def build_features(
    model: RouterModel, frame: pd.DataFrame, cache: EmbeddingCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureSet:
    """Text features (through ``cache`` when given), context features and targets of ``frame``."""
    masters = model.masters
    texts = frame["text"].astype(str).tolist()
    if cache is not None:
        text = cache.features(texts, lambda batch: encode_texts(model, batch), progress=progress)
    else:
        text = np.concatenate([encode_texts(model, texts[i:i + 64]) for i in range(0, len(texts), 64)]) \
            if texts else np.zeros((0, model.text_dim), np.float32)
    ids = model.word_ids(texts) if texts else []
    minutes = frame["minutes"].to_numpy(dtype=np.float64, copy=True)
    tokens = frame["tokens"].to_numpy(dtype=np.float64, copy=True)
    return FeatureSet(
        text=torch.as_tensor(text, dtype=torch.float32),
        context=torch.as_tensor(frame_context(frame, masters), dtype=torch.float32),
        labels=torch.as_tensor(master_indices(frame["label"], masters, "label")),
        outcome_master=torch.as_tensor(master_indices(frame["outcome_master"], masters, "outcome_master")),
        success=torch.as_tensor(frame["success"].to_numpy(dtype=np.float64, copy=True), dtype=torch.float32),
        log_minutes=torch.as_tensor(np.log(minutes), dtype=torch.float32),
        log_tokens=torch.as_tensor(np.log1p(tokens), dtype=torch.float32),
        topics=torch.as_tensor(topic_indices(frame, model)),
        text_stats=torch.as_tensor(text_statistics(texts, [len(r) for r in ids])),
        lexical=model.lexical_bags_from_ids(ids),
    )

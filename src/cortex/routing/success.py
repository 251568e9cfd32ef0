"""The router's success head: P(success | task, master) from what is known beyond the text embedding.

Why: a success leaf that reads only the text features (like logistic regression on MiniLM
embeddings) sees the topic of a task, not how hard it is. Whether a worker succeeds depends most on
how *similar past tasks* went with that worker and on the task itself. The head reads, for every
(task, master) pair (:data:`FEATURES`):

* ``knn_success``: similarity-weighted success of the past tasks this master handled among the
  ``k`` nearest, shrunk toward the master's base rate (``shrink`` pseudo-neighbours);
  ``knn_support``: their summed similarity; ``knn_top``: similarity of the nearest past task at all;
* ``topic_rate``: the same neighbours' topics' success rates (how hard their subjects are), shrunk alike;
* ``log_tokens``, ``log_chars``, ``digit_share``: size of the task, and how numeric it is.

A small MLP (one hidden layer) maps them to a log-odds. It is fitted on the training split with
leave-one-out neighbours (a task never sees itself) and checked on the validation split against
logistic regression on the same features (``TrainResult.validation``); served, the memory holds
every training task.

Not used: the router's own master probabilities, margin and entropy, and the tree's success leaf.
On the training split they come from a model fitted to those very rows (over-confident there), and
a head fitted on them lost 6-7 AUROC points on the tuning split (0.66 vs 0.73); fitted on the
validation split alone (~600 rows) the head over-fitted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cortex.errors import RoutingError
from cortex.routing.knn import l2_normalize

FEATURES = ("knn_success", "knn_support", "knn_top", "topic_rate", "log_tokens", "log_chars", "digit_share")


@dataclass
class OutcomeMemory:
    """Past tasks with an observed outcome: their text features projected to a few principal directions
    and unit-normed ``(N, d)``, the master that handled each, its success (0/1) and its topic's training
    success rate; each master's base rate; and the projection (``center (H,)``, ``basis (H, d)``).

    Why the projection: a decision compares its task with every past one, and at MiniLM width that scan
    (7k x 768 floats) costs about 2 ms on one core; at ``d`` = 64 it costs a tenth of a millisecond.
    """

    vectors: np.ndarray
    master: np.ndarray
    success: np.ndarray
    topic_rate: np.ndarray
    base_rate: np.ndarray
    center: np.ndarray
    basis: np.ndarray

    @classmethod
    def build(cls, text: np.ndarray, master: np.ndarray, success: np.ndarray, topic: np.ndarray,
              num_masters: int, dim: int = 64) -> OutcomeMemory:
        """From training rows (``success`` NaN where unknown: those rows are left out; ``topic`` -1
        where unknown: those rows get their master's rate); ``dim`` principal directions are kept."""
        keep = np.isfinite(success)
        text, master, success, topic = text[keep].astype(np.float32), master[keep], success[keep], topic[keep]
        overall = float(success.mean()) if len(success) else 0.5
        base = np.array([success[master == m].mean() if (master == m).any() else overall for m in range(num_masters)])
        rate = base[master].copy()
        for t in np.unique(topic[topic >= 0]):
            sel = topic == t
            rate[sel] = (success[sel].sum() + 5 * base[master[sel]].mean()) / (sel.sum() + 5)  # 5 pseudo-counts
        center = text.mean(0) if len(text) else np.zeros(text.shape[1], np.float32)
        # principal directions of the centred features (right singular vectors)
        _, _, vt = np.linalg.svd(text - center, full_matrices=False)
        basis = np.ascontiguousarray(vt[: min(dim, len(vt))].T, dtype=np.float32)
        memory = cls(np.zeros((0, basis.shape[1]), np.float32), master.astype(np.int64), success.astype(np.float32),
                     rate.astype(np.float32), base.astype(np.float32), center.astype(np.float32), basis)
        memory.vectors = memory.project(text)
        return memory

    def project(self, text: np.ndarray) -> np.ndarray:
        """``(B, H)`` text features → unit-norm ``(B, d)`` in the memory's principal directions."""
        return l2_normalize((np.asarray(text, np.float32) - self.center) @ self.basis)

    def __len__(self) -> int:
        return len(self.master)


def text_statistics(texts: Sequence[str], n_tokens: Sequence[int]) -> np.ndarray:
    """``(B, 3)``: log(1 + word pieces), log(1 + characters), share of characters that are digits."""
    out = np.zeros((len(texts), 3), np.float32)
    for i, (t, n) in enumerate(zip(texts, n_tokens)):
        out[i] = (math.log1p(n), math.log1p(len(t)), sum(c.isdigit() for c in t) / max(len(t), 1))
    return out


def success_features(memory: OutcomeMemory, text: np.ndarray, num_masters: int, stats: np.ndarray, k: int = 20,
                     shrink: float = 2.0, exclude: np.ndarray | None = None) -> np.ndarray:
    """``(B, C, F)`` features of every (task, master) pair, in the order of :data:`FEATURES`.

    ``exclude``: ``(B,)`` memory row of each query itself (-1: none), left out of its neighbours
    (leave-one-out features for fitting on the memory's own tasks).
    """
    C = num_masters
    # torch's matmul: numpy's BLAS is far slower for this (1, H) x (H, N) shape (see knn.py)
    sims = (torch.from_numpy(memory.project(text)) @ torch.from_numpy(memory.vectors).T).numpy()  # (B, N)
    if exclude is not None:
        own_row = np.flatnonzero(exclude >= 0)
        sims[own_row, exclude[own_row]] = -np.inf
    k = min(k, len(memory))
    nn_idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sims, nn_idx, 1)
    w = np.clip(top, 0.0, None)  # (B, k)
    own = memory.master[nn_idx][:, :, None] == np.arange(C)  # (B, k, C)
    wm = w[:, :, None] * own
    support = wm.sum(1)  # (B, C)
    base = memory.base_rate[None, :]
    knn_success = ((wm * memory.success[nn_idx][:, :, None]).sum(1) + shrink * base) / (support + shrink)
    topic_rate = ((wm * memory.topic_rate[nn_idx][:, :, None]).sum(1) + shrink * base) / (support + shrink)
    cols = [knn_success, support, np.repeat(top.max(1, keepdims=True), C, 1), topic_rate,
            *(np.repeat(stats[:, j:j + 1], C, 1) for j in range(stats.shape[1]))]
    return np.stack(cols, axis=-1).astype(np.float32)


class SuccessHead(nn.Module):
    """Standardized features ``(..., F)`` → log-odds of success ``(...)``: one hidden GELU layer.

    ``mean``/``std`` are buffers fitted on the training rows (saved with the weights).
    """

    def __init__(self, num_features: int = len(FEATURES), hidden: int = 32):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 300, lr: float = 1e-2, weight_decay: float = 1e-2,
            seed: int = 0) -> SuccessHead:
        """Full-batch AdamW on ``(N, F)`` features and 0/1 outcomes ``(N,)``; a few hundred rows fit in a second."""
        torch.manual_seed(seed)
        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
        std = xt.std(0, unbiased=False)
        self.mean.copy_(xt.mean(0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        self.train()
        for _ in range(epochs):
            loss = nn.functional.binary_cross_entropy_with_logits(self(xt), yt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return self.eval()

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(success) for features ``(..., F)``."""
        return torch.sigmoid(self(torch.as_tensor(x, dtype=torch.float32))).numpy()


@dataclass
class SuccessModel:
    """A fitted :class:`SuccessHead` with the outcome memory it reads (what a router folder stores)."""

    head: SuccessHead
    memory: OutcomeMemory
    k: int = 20

    def predict(self, text: np.ndarray, num_masters: int, stats: np.ndarray) -> np.ndarray:
        """``(B, C)`` P(success | task, master) for ``(B, H)`` text features and ``(B, 3)`` text statistics."""
        return self.head.predict(success_features(self.memory, text, num_masters, stats, k=self.k))

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file: the head's weights and the memory, written atomically."""
        from safetensors.torch import save

        from cortex._atomic import atomic_write

        m = self.memory
        tensors = {**{f"head.{k}": v.contiguous() for k, v in self.head.state_dict().items()},
                   "memory.vectors": torch.from_numpy(m.vectors),
                   "memory.master": torch.from_numpy(m.master), "memory.success": torch.from_numpy(m.success),
                   "memory.topic_rate": torch.from_numpy(m.topic_rate), "memory.base_rate": torch.from_numpy(m.base_rate),
                   "memory.center": torch.from_numpy(m.center), "memory.basis": torch.from_numpy(m.basis),
                   "k": torch.tensor([self.k])}
        data = save(tensors)
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SuccessModel:
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
        except Exception as e:
            raise RoutingError(f"Cannot read the success head {str(path)!r} ({e}); retrain the router.") from e
        head = SuccessHead(int(t["head.mean"].shape[0]), int(t["head.net.0.weight"].shape[0]))
        head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
        mem = OutcomeMemory(*(t[f"memory.{k}"].numpy() for k in ("vectors", "master", "success", "topic_rate",
                                                                   "base_rate", "center", "basis")))
        return cls(head.eval(), mem, int(t["k"][0]))

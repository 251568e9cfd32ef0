"""Hierarchical detection: score the active concepts, open a parent's children when it fires, prune.

A :class:`HierarchicalDetector` starts with the pack's top concepts (those with no trained ancestor) in
one :class:`~cortex.lenses.bank.BatchedLensBank` per model layer. :meth:`detect_and_expand` scores them
on a hidden state; every concept whose probability reaches its threshold has its trained children
loaded (from the :class:`~cortex.lenses.cache.TieredProbeCache`) and scored in turn, down to
``max_depth``. Afterwards ``keep_top_k`` pruning sends the lowest-scoring expanded probes back to the
cache, and the hot budget (MB of probe weights in banks) is enforced the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from cortex.errors import ConfigError, InputError
from cortex.lenses.bank import BatchedLensBank
from cortex.lenses.cache import TieredProbeCache
from cortex.lenses.lens_pack import LensPack


@dataclass
class ConceptScore:
    """One concept's score on one hidden state."""

    concept: str
    prob: float
    logit: float
    layer: int
    calibrated: float | None = None   # (logit - background mean) / background std, when known


@dataclass
class Detection:
    """What :meth:`HierarchicalDetector.detect_and_expand` found and did."""

    top: list[ConceptScore]
    expanded: list[str] = field(default_factory=list)     # parents whose children were loaded
    loaded: list[str] = field(default_factory=list)       # concepts that entered a bank
    pruned: list[str] = field(default_factory=list)       # concepts sent back to the cache
    active: int = 0                                       # probes in banks after pruning
    ms: float = 0.0


class HierarchicalDetector:
    """Score a lens pack's concepts top-down on hidden states ``{layer: (d,)}``."""

    def __init__(
        self,
        pack: LensPack,
        *,
        device: str | torch.device = "cpu",
        threshold: float = 0.5,
        keep_top_k: int = 50,
        max_depth: int = 8,
        hot_mb: float = 256.0,
        warm_mb: float = 64.0,
        tepid_mb: float = 256.0,
        dtype: torch.dtype = torch.float32,
    ):
        if not 0 < threshold < 1:
            raise ConfigError(f"threshold={threshold} must be a probability in (0, 1).")
        if keep_top_k < 1 or max_depth < 0 or hot_mb <= 0:
            raise ConfigError(f"keep_top_k={keep_top_k} must be >= 1, max_depth={max_depth} >= 0, hot_mb={hot_mb} > 0.")
        self.pack = pack
        self.threshold = threshold
        self.logit_threshold = float(torch.logit(torch.tensor(threshold)))
        self.keep_top_k = keep_top_k
        self.max_depth = max_depth
        self.hot_budget = int(hot_mb * 2**20)
        self.layer_of = pack.concepts()
        hierarchy = pack.info.get("hierarchy", {})
        self.parents = {c: [p for p in hierarchy.get(c, []) if p in self.layer_of] for c in self.layer_of}
        self.children: dict[str, list[str]] = {c: [] for c in self.layer_of}
        for c, ps in self.parents.items():
            for p in ps:
                self.children[p].append(c)
        self.roots = sorted(c for c, ps in self.parents.items() if not ps)
        self.cache = TieredProbeCache(pack, device=device, warm_mb=warm_mb, tepid_mb=tepid_mb)
        self.banks = {
            layer: BatchedLensBank(pack.hidden_size, input_mean=lp.input_mean, input_std=lp.input_std,
                                   device=device, dtype=dtype)
            for layer, lp in pack.layers.items()
        }
        self.expanded: set[str] = set()
        self.base = set(self.roots)
        self._load(self.roots)

    @property
    def layers(self) -> list[int]:
        """Model layers whose hidden states :meth:`detect_and_expand` needs."""
        return sorted(self.banks)

    def active(self) -> list[str]:
        return [n for b in self.banks.values() for n in b.names]

    def _load(self, concepts: list[str]) -> list[str]:
        new = [c for c in dict.fromkeys(concepts) if c not in self.banks[self.layer_of[c]]]
        self.cache.note_hot(len(concepts) - len(new))
        by_layer: dict[int, list[str]] = {}
        for c in new:
            by_layer.setdefault(self.layer_of[c], []).append(c)
        for layer, names in by_layer.items():
            kind = self.pack.layers[layer].kind
            self.banks[layer].add_tensors(kind, names, self.cache.fetch(layer, names))
        return new

    def _unload(self, concepts: list[str]) -> None:
        by_layer: dict[int, list[str]] = {}
        for c in concepts:
            by_layer.setdefault(self.layer_of[c], []).append(c)
        for layer, names in by_layer.items():
            self.banks[layer].remove(names)
            self.cache.release(layer, names)
        for c in concepts:
            for p in self.parents[c]:
                self.expanded.discard(p)  # its children may be needed again later

    def _score(self, hidden: Mapping[int, torch.Tensor]) -> dict[str, tuple[float, int]]:
        out = {}
        for layer, bank in self.banks.items():
            if len(bank) == 0:
                continue
            if layer not in hidden:
                raise InputError(f"No hidden state for model layer {layer}; pass {{layer: (d,)}} for layers {self.layers}.")
            z = bank.logits(hidden[layer].reshape(-1)).tolist()
            out.update((n, (v, layer)) for n, v in zip(bank.names, z))
        return out

    @torch.no_grad()
    def detect_and_expand(self, hidden: Mapping[int, torch.Tensor], top_k: int = 10) -> Detection:
        """Score active concepts on ``hidden`` (``{model layer: (d,)}``), expanding fired parents."""
        t0 = time.perf_counter()
        det = Detection(top=[])
        scores = self._score(hidden)
        for _ in range(self.max_depth):
            fired = [c for c, (z, _) in scores.items()
                     if z >= self.logit_threshold and c not in self.expanded and self.children[c]]
            if not fired:
                break
            self.expanded.update(fired)
            det.expanded += fired
            new = self._load([k for c in fired for k in self.children[c]])
            det.loaded += new
            if not new:
                continue
            scores = self._score(hidden)
        ranked = sorted(scores.items(), key=lambda kv: -kv[1][0])
        det.top = [ConceptScore(c, float(torch.sigmoid(torch.tensor(z))), z, layer) for c, (z, layer) in ranked[:top_k]]
        # prune: keep the base concepts and the top-k others; then respect the hot budget
        others = [c for c, _ in ranked if c not in self.base]
        drop = others[self.keep_top_k:]
        keep = others[: self.keep_top_k]
        while keep and sum(b.nbytes() for b in self.banks.values()) - self._bytes_of(drop) > self.hot_budget:
            drop.append(keep.pop())
        if drop:
            self._unload(drop)
            det.pruned = drop
        det.active = sum(len(b) for b in self.banks.values())
        det.ms = (time.perf_counter() - t0) * 1e3
        return det

    def _bytes_of(self, concepts: list[str]) -> int:
        per = {layer: (b.nbytes() / max(1, len(b))) for layer, b in self.banks.items()}
        return int(sum(per[self.layer_of[c]] for c in concepts))

"""Hierarchical detection with closed-form linear probes: expansion, top-k pruning, cache tiers."""

from __future__ import annotations

import pytest
import torch

from cortex.errors import ConfigError
from cortex.lenses.hierarchy import HierarchicalDetector
from cortex.lenses.lens_pack import FORMAT, FORMAT_VERSION, LayerProbes, LensPack

D = 5
# concept -> (axis it reads, parent); logit = 10 * x[axis] - 5, so x[axis] = 1 fires (p≈0.99), 0 does not
TREE = {"Root": (0, None), "A": (1, "Root"), "B": (2, "Root"), "A1": (3, "A"), "A2": (4, "A")}


def _pack(tmp_path) -> LensPack:
    names = sorted(TREE)
    W = torch.zeros(len(names), D)
    for i, n in enumerate(names):
        W[i, TREE[n][0]] = 10.0
    tensors = {"W": W, "b": torch.full((len(names),), -5.0), "ln_w": torch.ones(len(names), D),
               "ln_b": torch.zeros(len(names), D), "has_ln": torch.zeros(len(names), dtype=torch.uint8)}
    # A1 and A2 live on another model layer than the rest, to exercise one bank per layer
    lay = {n: (3 if n in ("A1", "A2") else 1) for n in names}
    layers = {}
    for layer in (1, 3):
        sel = [i for i, n in enumerate(names) if lay[n] == layer]
        layers[layer] = LayerProbes(layer, "linear", [names[i] for i in sel], {k: v[sel] for k, v in tensors.items()},
                                    torch.zeros(D), torch.ones(D))
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"name": "m", "revision": "r"},
            "concept_pack": {"name": "c"}, "hidden_size": D, "layers": [1, 3], "probe": {"kind": "linear"},
            "concepts": lay, "hierarchy": {n: ([TREE[n][1]] if TREE[n][1] else []) for n in names}}
    LensPack(info, layers).save(tmp_path / "pack")
    return LensPack.load(tmp_path / "pack", lazy=True)


def _h(*axes: int) -> dict[int, torch.Tensor]:
    x = torch.zeros(D)
    x[list(axes)] = 1.0
    return {1: x, 3: x}


def test_children_load_only_when_the_parent_fires(tmp_path):
    det = HierarchicalDetector(_pack(tmp_path), keep_top_k=10)
    assert det.active() == ["Root"]
    quiet = det.detect_and_expand(_h())                       # nothing fires: nothing opens
    assert quiet.loaded == [] and det.active() == ["Root"]
    d = det.detect_and_expand(_h(0, 1, 3))                     # Root → A, B; A → A1, A2
    assert set(d.expanded) == {"Root", "A"} and set(d.loaded) == {"A", "B", "A1", "A2"}
    top = {c.concept: c.prob for c in d.top}
    assert top["A1"] > 0.99 and top["A2"] < 0.01 and top["B"] < 0.01 and d.top[0].prob > 0.99
    assert det.cache.stats()["hits"]["cold"] == 5             # every probe came from disk once


def test_keep_top_k_prunes_to_the_cache_and_reloads_from_warm(tmp_path):
    det = HierarchicalDetector(_pack(tmp_path), keep_top_k=2)
    d = det.detect_and_expand(_h(0, 1, 3))
    assert sorted(d.pruned) == ["A2", "B"] and sorted(det.active()) == ["A", "A1", "Root"]
    assert det.cache.stats()["entries"]["warm"] == 2
    det.detect_and_expand(_h(0, 2))                            # B fires now: Root is re-expanded, B comes warm
    stats = det.cache.stats()
    assert stats["hits"]["warm"] >= 1 and "B" in det.active()


def test_tiny_warm_budget_spills_to_tepid(tmp_path):
    det = HierarchicalDetector(_pack(tmp_path), keep_top_k=1, warm_mb=1e-6, tepid_mb=1.0)
    det.detect_and_expand(_h(0, 1, 3))
    stats = det.cache.stats()
    assert stats["entries"]["warm"] == 0 and stats["entries"]["tepid"] >= 2


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ConfigError, match="threshold"):
        HierarchicalDetector(_pack(tmp_path), threshold=1.5)

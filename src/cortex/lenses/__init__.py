"""Concept lenses: read which concepts a model represents, token by token, with small probes.

Public API (stable for steering / monitoring built on top):

Capture (:mod:`cortex.lenses.capture`)
    ``ActivationCapture(blocks, layers, on_output=None, store=True)`` — context manager of forward hooks on
    ``loaded.layers()``; always removes them. ``cap.steps(l)`` one ``(B, T, d)`` per forward call (during
    ``generate()`` with a KV cache: the prompt, then one call per token), ``cap.tokens(l)`` joined.
    ``hidden_from_output`` / ``replace_hidden`` read and rebuild a block output (tensor, tuple or
    dataclass) — what a steering hook edits. ``encode_texts`` pools texts (``mean``/``last``, padding
    masked); ``token_states`` gives one text's per-token states; ``forward_module`` skips an LM head.
Concept packs (:mod:`cortex.lenses.concepts`)
    ``ConceptPack``/``Concept`` (hierarchy, examples, opposites), ``read_concept_pack`` (HatCat or cortex
    format), ``import_concept_pack`` / ``load_concept_pack`` (registry kind ``concept_pack``),
    ``concept_examples`` (hints, definitions, templates, WordNet).
Probes (:mod:`cortex.lenses.probes`)
    ``MLPClassifier`` ([LayerNorm] → 128 → ReLU → Dropout → 64 → ReLU → Dropout → 1) and ``LinearProbe``;
    ``forward(x (..., d)) → (...)`` raw logits; ``to_tensors``/``from_tensors``; ``LinearProbe.direction``.
Training (:mod:`cortex.lenses.training`, :mod:`cortex.lenses.pipeline`)
    ``LensTrainingConfig``; ``train_lenses(acts, dataset, cfg, n_layers)`` trains every probe in batched
    runs; ``train_lens_pack(model, concepts, cfg)`` does it all and registers ``lens-<model>-<pack>``.
Lens packs (:mod:`cortex.lenses.lens_pack`)
    ``LensPack`` (``load``/``save``, ``concepts()`` → primary layer, ``primary(c)`` → ``(layer, probe)``,
    ``check_model(loaded)``), ``load_lens_pack(name_or_folder)``, ``register_lens_pack``, ``model_identity``.
Scoring (:mod:`cortex.lenses.bank`, :mod:`cortex.lenses.detection`, :mod:`cortex.lenses.hierarchy`)
    ``BatchedLensBank(d, input_mean, input_std)`` with ``add``/``add_tensors``/``remove``/``logits(x (T, d))
    → (T, N)``; ``LensRunner(pack, loaded)`` with ``detect(text)`` and ``logits({layer: (T, d)})``;
    ``GenerationMonitor(runner)`` scores each generated token; ``HierarchicalDetector(pack)`` with
    ``detect_and_expand({layer: (d,)})`` and a ``TieredProbeCache`` (hot / warm / tepid / cold).
Hub (:mod:`cortex.lenses.hub_sync`)
    ``pull_pack("hf://org/repo@rev", layers=...)``, ``push_pack(name, "hf://org/repo")``, ``pack_status``.

Heavy modules import lazily: ``import cortex.lenses`` itself loads nothing but this docstring's names.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ActivationCapture": "capture", "encode_texts": "capture", "token_states": "capture",
    "hidden_from_output": "capture", "replace_hidden": "capture", "forward_module": "capture",
    "mean_pool": "capture", "last_pool": "capture", "prefix_mean": "capture",
    "ActivationStore": "activation_cache",
    "Concept": "concepts", "ConceptPack": "concepts", "read_concept_pack": "concepts",
    "import_concept_pack": "concepts", "load_concept_pack": "concepts", "concept_examples": "concepts",
    "write_concept_pack": "concepts", "WordNet": "concepts",
    "MLPClassifier": "probes", "LinearProbe": "probes", "Probe": "probes", "probe_class": "probes",
    "LensTrainingConfig": "training", "train_lenses": "training", "LensTrainingResult": "training",
    "build_dataset": "dataset", "DatasetConfig": "dataset",
    "train_lens_pack": "pipeline", "select_concepts": "pipeline",
    "LensPack": "lens_pack", "LayerProbes": "lens_pack", "load_lens_pack": "lens_pack",
    "register_lens_pack": "lens_pack", "model_identity": "lens_pack",
    "BatchedLensBank": "bank",
    "LensRunner": "detection", "GenerationMonitor": "detection", "evaluate_lens_pack": "detection",
    "HierarchicalDetector": "hierarchy", "Detection": "hierarchy", "ConceptScore": "hierarchy",
    "TieredProbeCache": "cache",
    "pull_pack": "hub_sync", "push_pack": "hub_sync", "pack_status": "hub_sync", "list_packs": "hub_sync",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"cortex.lenses.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'cortex.lenses' has no attribute {name!r}")

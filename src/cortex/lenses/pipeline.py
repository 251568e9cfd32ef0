"""End to end: a registry model + a concept pack → a trained lens pack in the registry.

Used by ``cortex lens train``. Steps: load the model and the concept pack, select concepts, gather
sentences (:mod:`cortex.lenses.dataset`), run every sentence through the model once per layer (cached on
disk, :class:`~cortex.lenses.activation_cache.ActivationStore`), train all probes in batched runs
(:func:`~cortex.lenses.training.train_lenses`), write the pack and register it as
``lens-<model>-<conceptpack>`` with the model and the concept pack as parents.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cortex._fit import torch_threads
from cortex.errors import ConfigError, PackError
from cortex.hub.entry import RegistryEntry
from cortex.hub.registry import Registry
from cortex.lenses.activation_cache import ActivationStore
from cortex.lenses.concepts.model import ConceptPack
from cortex.lenses.lens_pack import (
    FORMAT,
    FORMAT_VERSION,
    LayerProbes,
    LensPack,
    fingerprint_name,
    model_identity,
    register_lens_pack,
)
from cortex.lenses.training import LensTrainingConfig, LensTrainingResult, train_lenses

Progress = Callable[[str, float], None]


def select_concepts(pack: ConceptPack, spec: str | None) -> list[str]:
    """Concepts named by a filter: ``examples`` (those with hand-written examples; the default), ``all``,
    ``re:<pattern>`` (terms matching a regular expression), ``layer:<a>-<b>`` (pack ontology layers), or
    a comma-separated list of terms (unknown terms raise :class:`PackError` with suggestions)."""
    spec = (spec or "examples").strip()
    if spec == "examples":
        terms = pack.with_examples()
    elif spec == "all":
        terms = pack.terms()
    elif spec.startswith("re:"):
        try:
            rx = re.compile(spec[3:])
        except re.error as e:
            raise ConfigError(f"--concept-filter {spec!r} is not a valid regular expression ({e}).") from e
        terms = [t for t in pack.terms() if rx.search(t)]
    elif spec.startswith("layer:"):
        lo, _, hi = spec[6:].partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(f"--concept-filter {spec!r}: use layer:<a>-<b>, e.g. layer:0-2.") from None
        terms = [c.term for c in pack if a <= c.layer <= b]
    else:
        terms = pack.select(t.strip() for t in spec.split(",") if t.strip())
    if not terms:
        raise ConfigError(f"--concept-filter {spec!r} selects no concept of pack {pack.name!r}.")
    return terms


def nearest_trained_ancestors(pack: ConceptPack, trained: set[str]) -> dict[str, list[str]]:
    """For each trained concept, its closest ancestors that are trained too (the detector's parents):
    the walk up the hierarchy passes through untrained concepts."""
    out = {}
    for t in sorted(trained):
        found: list[str] = []
        frontier, seen = list(pack.get(t).parents), set()
        while frontier and not found:
            nxt = []
            for p in frontier:
                if p in seen or p not in pack:
                    continue
                seen.add(p)
                if p in trained:
                    found.append(p)
                else:
                    nxt.extend(pack.get(p).parents)
            frontier = nxt
        out[t] = sorted(found)
    return out


def build_lens_pack(result: LensTrainingResult, *, model: str, revision: str, hidden_size: int,
                    n_model_layers: int, concept_pack: ConceptPack, cfg: LensTrainingConfig,
                    concept_pack_name: str | None = None, extra_info: dict[str, Any] | None = None) -> LensPack:
    """A :class:`LensPack` from a training result (probes stacked per layer in name order).

    ``concept_pack_name`` is the registry entry of the concept pack (default: the pack's own name)."""
    layers: dict[int, LayerProbes] = {}
    for layer, probes in result.probes.items():
        order = sorted(probes)
        stacked = {k: torch.stack([probes[n][k] for n in order]) for k in probes[order[0]]}
        mean, std = result.normalizers[layer]
        layers[layer] = LayerProbes(layer=layer, kind=result.kind, order=order, tensors=stacked,
                                    input_mean=mean, input_std=std,
                                    results={n: result.metrics[layer][n].to_dict() for n in order})
    primary = {m.concept: m.layer for m in result.primary_metrics()}
    f1s = [m.test_f1 for m in result.primary_metrics() if m.test_f1 is not None]
    info = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"name": model, "revision": revision, "n_layers": n_model_layers},
        "concept_pack": {"name": concept_pack_name or concept_pack.name, "pack_name": concept_pack.name,
                         "version": concept_pack.version, "source": concept_pack.source},
        "hidden_size": hidden_size,
        "layers": sorted(layers),
        "probe": {"kind": result.kind, "hidden": cfg.hidden, "layer_norm": cfg.layer_norm,
                  "input_norm": cfg.input_norm, "pool": cfg.pool, "dtype": cfg.dtype},
        "concepts": dict(sorted(primary.items())),
        "hierarchy": nearest_trained_ancestors(concept_pack, set(primary)),
        "training": cfg.to_dict(),
        "summary": {
            "n_concepts": len(primary),
            "median_test_f1": round(statistics.median(f1s), 4) if f1s else None,
            "mean_test_f1": round(statistics.mean(f1s), 4) if f1s else None,
            "graduated": sum(m.graduated for m in result.primary_metrics()),
            "train_seconds": round(result.seconds, 1),
        },
        **(extra_info or {}),
    }
    return LensPack(info, layers)


@dataclass
class TrainReport:
    """What :func:`train_lens_pack` produced: the registry entry, the pack, timings in seconds."""

    entry: RegistryEntry
    pack: LensPack
    n_texts: int
    seconds: dict[str, float]


def train_lens_pack(
    model: str,
    concepts: str,
    cfg: LensTrainingConfig | None = None,
    *,
    concept_filter: str | None = None,
    name: str | None = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
) -> TrainReport:
    """Train and register a lens pack for registry model ``model`` on registry concept pack ``concepts``.

    ``model`` may be ``minilm``, the packaged encoder (registered on first use).
    """
    with torch_threads(threads or None):
        return _train_lens_pack(model, concepts, cfg or LensTrainingConfig(), concept_filter, name,
                                registry or Registry(), progress)


def _train_lens_pack(model: str, concepts: str, cfg: LensTrainingConfig, concept_filter: str | None,
                     name: str | None, reg: Registry, progress: Progress | None) -> TrainReport:
    from cortex.hub.bundled import ensure_bundled
    from cortex.hub.loading import load_model
    from cortex.lenses.concepts.store import load_concept_pack
    from cortex.lenses.concepts.wordnet import WordNet
    from cortex.lenses.dataset import build_dataset

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    say = progress or (lambda msg, frac: None)
    say("loading model and concept pack", 0.0)
    ensure_bundled(model, reg)  # `minilm` names the packaged encoder until the registry holds its own
    loaded = load_model(model, registry=reg)
    pack = load_concept_pack(concepts, registry=reg)
    blocks = loaded.layers()
    n_layers = len(blocks)
    layers = sorted({int(l) % n_layers for l in cfg.layers}) if cfg.layers else list(range(n_layers))
    bad = [l for l in (cfg.layers or []) if not -n_layers <= int(l) < n_layers]
    if bad:
        raise ConfigError(f"--layers {bad} out of range: model {model!r} has layers 0..{n_layers - 1}.")
    terms = select_concepts(pack, concept_filter)
    wordnet = WordNet() if cfg.data.wordnet else None
    dataset = build_dataset(pack, terms, cfg.data, wordnet)
    times["prepare"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    name_, revision = model_identity(loaded)
    done = [0]

    def encoded(n: int) -> None:
        done[0] += n
        say(f"encoding {len(dataset.texts)} sentences", 0.05 + 0.35 * done[0] / max(1, len(dataset.texts)))

    acts = ActivationStore().encode(
        loaded.model, loaded.tokenizer, blocks, fingerprint_name(name_, revision), dataset.texts, layers,
        pool=cfg.pool, max_length=cfg.max_length, batch_size=cfg.encode_batch_size, progress=encoded,
    )
    times["encode"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    result = train_lenses(acts, dataset, cfg, n_layers, progress=lambda m, f: say(m, 0.4 + 0.55 * f))
    times["train"] = time.perf_counter() - t2
    hidden_size = next(iter(acts.values())).shape[1]
    lens = build_lens_pack(result, model=name_, revision=revision, hidden_size=hidden_size,
                           n_model_layers=n_layers, concept_pack=pack, cfg=cfg,
                           concept_pack_name=pack.name if Path(concepts).is_dir() else str(concepts))
    say("writing the lens pack", 0.97)
    entry = register_lens_pack(lens, name=name, registry=reg)
    times["total"] = time.perf_counter() - t0
    reg.update(entry.name, extra={**entry.extra, "seconds": {k: round(v, 1) for k, v in times.items()}})
    return TrainReport(entry=reg.get(entry.name), pack=lens, n_texts=len(dataset.texts), seconds=times)


def ensure_concepts_known(pack: LensPack, concepts: list[str]) -> None:
    known = pack.concepts()
    unknown = [c for c in concepts if c not in known]
    if unknown:
        from cortex.errors import closest

        near = closest(unknown[0], known)
        hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
        raise PackError(f"Unknown concept {unknown[0]!r} in lens pack {pack.info.get('name')!r}.{hint}")

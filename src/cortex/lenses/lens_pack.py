"""Lens packs: trained probes for one model and one concept pack, as a folder and a registry entry.

Layout (documented in docs/packs.md)::

    pack_info.json                  # format, model + revision, concept pack + version, hidden size,
                                    # probe kind/settings, layers, concepts (primary layer of each),
                                    # training config and summary
    layer<k>/results.json           # per concept: metrics (val/test F1, precision, recall, band,
                                    # primary, graduated, calibration on background text)
    layer<k>/probes.safetensors     # stacked probes of that layer: W1 (N, 128, d), b1, W2, b2, W3, b3
                                    # (or W (N, d), b for linear), ln_w, ln_b (N, d), has_ln (N,)
    layer<k>/normalizer.safetensors # input_mean (d,), input_std (d,) shared by the layer's probes

Probe order inside ``probes.safetensors`` is ``results.json``'s ``order``. Weights are safetensors only;
every path a pack names goes through :func:`cortex.hub.paths.safe_join`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cortex.errors import InvalidNameError, PackError
from cortex.hub.paths import safe_join, validate_name
from cortex.hub.registry import Registry, atomic_write_text
from cortex.lenses.probes import Probe, probe_class

FORMAT = "cortex.lens_pack"
FORMAT_VERSION = 1
INFO = "pack_info.json"


def model_identity(loaded: Any) -> tuple[str, str]:
    """``(name, revision)`` of a loaded model: the registry name and its Hub commit when it has one,
    else ``sha256:`` of its weight files' recorded hashes (a fingerprint that changes with the weights)."""
    entry = getattr(loaded, "entry", None)
    if entry is not None:
        weights = sorted((k, v) for k, v in entry.files.items() if k.endswith(".safetensors"))
        digest = hashlib.sha256(json.dumps(weights).encode()).hexdigest()[:16]
        return entry.name, entry.revision or f"sha256:{digest}"
    h = hashlib.sha256()
    for p in sorted(Path(loaded.path).glob("*.safetensors")):
        h.update(p.name.encode())
        h.update(str(p.stat().st_size).encode())
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
    return Path(loaded.path).name, f"sha256:{h.hexdigest()[:16]}"


def fingerprint_name(name: str, revision: str) -> str:
    """A folder-safe id for (model, revision), used to key activation caches."""
    rev = re.sub(r"[^A-Za-z0-9._+-]", "-", revision)[:40]
    return validate_name(f"{name}--{rev}"[:120], "model fingerprint")


def _safe(folder: Path, rel: str) -> Path:
    try:
        return safe_join(folder, rel)
    except InvalidNameError as e:
        raise PackError(f"Lens pack {folder}: {e}") from e


@dataclass
class LayerProbes:
    """One model layer of a pack: probe tensors stacked in ``order``, their metrics, input statistics."""

    layer: int
    kind: str
    order: list[str]
    tensors: dict[str, torch.Tensor]
    input_mean: torch.Tensor
    input_std: torch.Tensor
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None          # the layer folder; with lazy loading ``tensors`` stays empty

    def index(self, concept: str) -> int:
        try:
            return self.order.index(concept)
        except ValueError:
            raise PackError(f"Concept {concept!r} has no probe at layer {self.layer}.") from None

    def rows(self, concepts: Iterable[str]) -> list[dict[str, torch.Tensor]]:
        """Per-concept tensors of ``concepts``; a lazily loaded layer reads just those rows from disk."""
        idx = [self.index(c) for c in concepts]
        if self.tensors:
            return [{k: v[i].clone() for k, v in self.tensors.items()} for i in idx]
        from safetensors import safe_open

        with safe_open(str(Path(self.path) / "probes.safetensors"), framework="pt") as f:
            keys = list(f.keys())
            return [{k: f.get_slice(k)[i:i + 1][0] for k in keys} for i in idx]

    def probe(self, concept: str) -> Probe:
        """The probe module of ``concept`` (in eval mode)."""
        return probe_class(self.kind).from_tensors(self.rows([concept])[0], self.input_mean, self.input_std)

    def select(self, concepts: Iterable[str]) -> dict[str, torch.Tensor]:
        """Stacked tensors ``(k, …)`` of ``concepts`` (in that order)."""
        concepts = list(concepts)
        if self.tensors:  # one gather per tensor, not a copy per row (a 1,000-concept layer is ~100 MB)
            slot = {c: i for i, c in enumerate(self.order)}
            idx = torch.tensor([slot[c] if c in slot else self.index(c) for c in concepts], dtype=torch.long)
            return {k: v.index_select(0, idx) for k, v in self.tensors.items()}
        rows = self.rows(concepts)
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


class LensPack:
    """A lens pack in memory: ``info`` (pack_info.json) and ``layers`` (:class:`LayerProbes` by model layer).

    ``load(folder, layers=None)`` reads all or some layers; :meth:`check_model` refuses a model other than
    the one the pack was trained on.
    """

    def __init__(self, info: dict[str, Any], layers: dict[int, LayerProbes], folder: Path | None = None):
        self.info = info
        self.layers = layers
        self.folder = folder

    # ------------------------------------------------------------------ accessors
    @property
    def model(self) -> str:
        return self.info["model"]["name"]

    @property
    def hidden_size(self) -> int:
        return int(self.info["hidden_size"])

    def concepts(self) -> dict[str, int]:
        """``{concept: primary layer}``."""
        return {c: int(l) for c, l in self.info["concepts"].items()}

    def primary(self, concept: str) -> tuple[int, Probe]:
        """``(layer, probe)`` of ``concept``'s best layer."""
        concepts = self.concepts()
        if concept not in concepts:
            from cortex.errors import closest

            near = closest(concept, concepts)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise PackError(f"Unknown concept {concept!r} in lens pack {self.info.get('name')!r}.{hint}")
        layer = concepts[concept]
        return layer, self.layers[layer].probe(concept)

    def check_model(self, loaded: Any) -> None:
        """Raise :class:`PackError` unless ``loaded`` is the model (and revision) this pack was trained on."""
        name, revision = model_identity(loaded)
        want = self.info["model"]
        if (name, revision) != (want["name"], want["revision"]):
            raise PackError(
                f"Lens pack {self.info.get('name')!r} was trained on model {want['name']!r} revision "
                f"{want['revision']!r}, but the model in use is {name!r} revision {revision!r}. Use that model, "
                f"or train a pack for this one with: cortex lens train --model {name} --concepts "
                f"{self.info['concept_pack']['name']}"
            )
        width = getattr(getattr(loaded.model, "config", None), "hidden_size", None)
        if width is not None and int(width) != self.hidden_size:
            raise PackError(
                f"Lens pack {self.info.get('name')!r} has {self.hidden_size}-wide probes but model {name!r} is "
                f"{width} wide. Retrain the pack for this model."
            )

    # ------------------------------------------------------------------ disk
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the pack into ``folder`` (each file atomically)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for layer, lp in sorted(self.layers.items()):
            sub = folder / f"layer{layer}"
            sub.mkdir(exist_ok=True)
            for fname, tensors in (("probes.safetensors", lp.tensors),
                                   ("normalizer.safetensors", {"input_mean": lp.input_mean, "input_std": lp.input_std})):
                tmp = sub / f".{fname}.tmp"
                save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                          metadata={"format": FORMAT, "kind": lp.kind, "layer": str(layer)})
                os.replace(tmp, sub / fname)
            atomic_write_text(sub / "results.json",
                              json.dumps({"layer": layer, "kind": lp.kind, "order": lp.order, "concepts": lp.results},
                                         indent=1))
        atomic_write_text(folder / INFO, json.dumps(self.info, indent=1))
        self.folder = folder
        return folder

    @classmethod
    def read_info(cls, folder: str | os.PathLike) -> dict[str, Any]:
        folder = Path(folder)
        path = folder / INFO
        if not path.is_file():
            raise PackError(f"{folder} has no {INFO}; it is not a cortex lens pack.")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise PackError(f"{path} is not valid JSON ({e}). Re-pull or retrain the pack.") from e
        if info.get("format") != FORMAT:
            raise PackError(f"{path} has format={info.get('format')!r}; expected {FORMAT!r}.")
        if int(info.get("format_version", 0)) > FORMAT_VERSION:
            raise PackError(f"Lens pack {folder} uses format version {info['format_version']}; upgrade cortex.")
        for key in ("model", "concept_pack", "hidden_size", "layers", "concepts", "probe"):
            if key not in info:
                raise PackError(f"{path} lacks the {key!r} field; the pack is incomplete. Re-pull or retrain it.")
        for layer in info["layers"]:
            _safe(folder, info.get("layer_dirs", {}).get(str(layer), f"layer{int(layer)}"))
        return info

    @classmethod
    def load(cls, folder: str | os.PathLike, layers: Iterable[int] | None = None, lazy: bool = False) -> "LensPack":
        """Read a pack folder (all layers, or only ``layers``), checking paths and tensor shapes.

        ``lazy`` reads only headers, metrics and input statistics; probe rows are read from disk on demand
        (the cold tier of :class:`~cortex.lenses.cache.TieredProbeCache`)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        folder = Path(folder)
        info = cls.read_info(folder)
        wanted = [int(l) for l in (info["layers"] if layers is None else layers)]
        missing = [l for l in wanted if l not in [int(x) for x in info["layers"]]]
        if missing:
            raise PackError(f"Lens pack {folder} has no layers {missing}; it has {info['layers']}.")
        d = int(info["hidden_size"])
        out: dict[int, LayerProbes] = {}
        for layer in wanted:
            sub = _safe(folder, info.get("layer_dirs", {}).get(str(layer), f"layer{layer}"))
            paths = {n: _safe(folder, f"{sub.relative_to(folder.resolve()).as_posix()}/{n}")
                     for n in ("results.json", "probes.safetensors", "normalizer.safetensors")}
            absent = [n for n, p in paths.items() if not p.is_file()]
            if absent:
                raise PackError(
                    f"Lens pack {folder} layer {layer} lacks {', '.join(absent)} (a partial pull?). Pull that "
                    f"layer with: cortex packs pull <hf://repo> --layers {layer}"
                )
            results = json.loads(paths["results.json"].read_text(encoding="utf-8"))
            norm = load_file(str(paths["normalizer.safetensors"]))
            kind = results.get("kind", info["probe"]["kind"])
            order = list(results["order"])
            if lazy:
                with safe_open(str(paths["probes.safetensors"]), framework="pt") as f:
                    shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
                _check_shapes(folder, layer, kind, order, shapes, norm, d)
                tensors = {}
            else:
                tensors = load_file(str(paths["probes.safetensors"]))
                _check_shapes(folder, layer, kind, order, tensors, norm, d)
            out[layer] = LayerProbes(layer=layer, kind=kind, order=order, tensors=tensors,
                                     input_mean=norm["input_mean"], input_std=norm["input_std"],
                                     results=results.get("concepts", {}), path=paths["results.json"].parent)
        return cls(info, out, folder)


def _check_shapes(folder: Path, layer: int, kind: str, order: list[str], t: dict[str, torch.Tensor],
                  norm: dict[str, torch.Tensor], d: int) -> None:
    """Refuse probe files whose shapes do not fit the pack's hidden size or concept list."""
    n = len(order)
    probe_class(kind)  # unknown kinds raise ConfigError naming the choices
    expected = {"ln_w": (n, d), "ln_b": (n, d), "has_ln": (n,)}
    if kind == "mlp":
        h = t["W1"].shape[1] if "W1" in t and t["W1"].dim() == 3 else -1
        expected.update(W1=(n, h, d), b1=(n, h), W2=(n, h // 2, h), b2=(n, h // 2), W3=(n, 1, h // 2), b3=(n, 1))
    else:
        expected.update(W=(n, d), b=(n,))
    for k, shape in expected.items():
        if k not in t:
            raise PackError(f"Lens pack {folder} layer {layer}: probes.safetensors lacks tensor {k!r}. Retrain the pack.")
        if tuple(t[k].shape) != shape:
            raise PackError(
                f"Lens pack {folder} layer {layer}: tensor {k!r} has shape {tuple(t[k].shape)} but the pack's layer "
                f"width is {d} with {n} concepts (expected {shape}). The probe file does not match the layer; "
                "retrain or re-pull the pack."
            )
    for k in ("input_mean", "input_std"):
        if k not in norm or tuple(norm[k].shape) != (d,):
            raise PackError(
                f"Lens pack {folder} layer {layer}: normalizer {k!r} is missing or not ({d},). Retrain the pack."
            )


def lens_pack_name(model: str, concept_pack: str) -> str:
    """``lens-<model>-<conceptpack>``, the default registry name of a lens pack."""
    return validate_name(f"lens-{model}-{concept_pack}"[:128], "lens pack name")


def register_lens_pack(pack: LensPack, *, name: str | None = None, registry: Registry | None = None,
                       on_conflict: str = "replace", source: str = "custom", extra: dict[str, Any] | None = None):
    """Save ``pack`` into the registry as kind ``lens_pack`` with its model and concept pack as parents
    (those present in the registry)."""
    reg = registry or Registry()
    model, cpack = pack.info["model"]["name"], pack.info["concept_pack"]["name"]
    entry_name = name or lens_pack_name(model, cpack)
    pack.info["name"] = entry_name
    parents = [p for p in (model, cpack) if reg.exists(p)]
    with reg.stage() as tmp:
        pack.save(tmp)
        return reg.register(
            tmp, name=entry_name, kind="lens_pack", source=source, parents=parents,
            revision=pack.info["model"]["revision"], on_conflict=on_conflict,
            extra={"model": model, "concept_pack": cpack, "layers": pack.info["layers"],
                   "n_concepts": len(pack.info["concepts"]), "probe": pack.info["probe"]["kind"], **(extra or {})},
        )


def load_lens_pack(name_or_folder: str | os.PathLike, registry: Registry | None = None,
                   layers: Iterable[int] | None = None, lazy: bool = False) -> LensPack:
    """A lens pack from a registry name or a folder (optionally only some layers, optionally lazy)."""
    p = Path(name_or_folder)
    if p.is_dir():
        return LensPack.load(p, layers, lazy)
    reg = registry or Registry()
    entry = reg.get(str(name_or_folder), kind="lens_pack")
    if layers is None and entry.extra.get("layers_pulled") is not None:  # a partial pull has only these
        layers = entry.extra["layers_pulled"]
    pack = LensPack.load(reg.path(entry.name), layers, lazy)
    pack.info["name"] = entry.name
    return pack

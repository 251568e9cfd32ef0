"""Concept vectors: one unit direction per (concept, model layer), extracted three ways, stored in lens packs.

- :func:`mean_difference`: the mean of ``pos_i - neg_i`` over contrastive pairs (or the difference of class
  means when the two sides are not paired);
- :func:`pca_difference`: the first principal axis of the paired differences (uncentered, so a consistent
  shift dominates, as in representation engineering), signed so that positives project higher;
- :func:`probe_direction`: the mean input gradient of a probe's logit, in the model's raw hidden space
  (for a linear probe ``w / σ`` normalized: its standardization is undone so the vector acts on the layer).

Every vector carries an ``origin`` (a point of the layer's space) so that removal and clamping act on the
affine coordinate ``(h - origin) · v`` rather than on ``h · v``: with ``origin`` at the midpoint of the class
means (extraction) or the probe's input mean (probe), removing the direction puts a hidden state on the
concept's neutral point, where a linear probe reads its bias, its null value.

Storage: ``concept_vectors.safetensors`` in the lens-pack folder, beside ``pack_info.json`` (the lens-pack
writer has no slot for extra tensors), written atomically (temp file, fsync, ``os.replace``)::

    layer<k>.direction  (N, d)   unit vectors, rows in ``index[k].order``
    layer<k>.origin     (N, d)
    layer<k>.pos_proj   (N,)     mean projection (h - origin)·v of positives (NaN when unknown)
    layer<k>.neg_proj   (N,)     mean projection of negatives (NaN when unknown)
    metadata: format=cortex.concept_vectors, format_version=1,
              index={"<k>": {"order": [...], "methods": [...]}}, opposites={concept: [..]}
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cortex.errors import InputError, PackError

VECTORS_FILE = "concept_vectors.safetensors"
FORMAT = "cortex.concept_vectors"
FORMAT_VERSION = 1
METHODS = ("mean_diff", "pca", "probe")


@dataclass
class ConceptVector:
    """A unit concept direction ``(d,)`` at one model layer, with the point its coordinate is measured from.

    ``pos_proj``/``neg_proj`` are the mean coordinates ``(h - origin)·direction`` of the positive and negative
    activations it was extracted from (``nan`` when unknown, e.g. for a probe direction).
    """

    concept: str
    layer: int
    direction: torch.Tensor
    origin: torch.Tensor
    method: str
    pos_proj: float = float("nan")
    neg_proj: float = float("nan")

    def __post_init__(self) -> None:
        self.direction = self.direction.detach().float().reshape(-1).cpu()
        self.origin = self.origin.detach().float().reshape(-1).cpu()
        if self.direction.shape != self.origin.shape:
            raise InputError(
                f"Concept vector {self.concept!r}: direction {tuple(self.direction.shape)} and origin "
                f"{tuple(self.origin.shape)} differ in width; both must be (d,) of the same layer."
            )
        n = float(self.direction.norm())
        if not n > 0 or not torch.isfinite(self.direction).all():
            raise InputError(
                f"Concept vector {self.concept!r} at layer {self.layer} is zero or not finite; the positive and "
                "negative activations do not differ. Use more (or more distinct) contrastive examples."
            )
        if abs(n - 1.0) > 1e-6:  # stored vectors are unit already; renormalizing would change their bits
            self.direction = self.direction / n
        if self.method not in METHODS:
            raise InputError(f"Concept vector method {self.method!r} is not one of {', '.join(METHODS)}.")

    @property
    def dim(self) -> int:
        return self.direction.numel()

    def coordinate(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(h - origin)·direction`` for hidden states ``(..., d)`` → ``(...)``."""
        v = self.direction.to(hidden.device, hidden.dtype)
        return (hidden - self.origin.to(hidden.device, hidden.dtype)) @ v


def _pair_check(pos: torch.Tensor, neg: torch.Tensor, paired: bool) -> None:
    if pos.dim() != 2 or neg.dim() != 2 or pos.shape[1] != neg.shape[1]:
        raise InputError(
            f"Positive activations {tuple(pos.shape)} and negative activations {tuple(neg.shape)} must both be "
            "(N, d) of the same width d (pooled hidden states of one layer)."
        )
    if len(pos) == 0 or len(neg) == 0:
        raise InputError("Concept vectors need at least one positive and one negative activation.")
    if paired and len(pos) != len(neg):
        raise InputError(
            f"Contrastive pairs need as many positives as negatives (got {len(pos)} and {len(neg)}); pass "
            "paired=False for class means, or give one negative per positive."
        )


def _projections(direction: torch.Tensor, origin: torch.Tensor, pos: torch.Tensor,
                 neg: torch.Tensor) -> tuple[float, float]:
    v = direction / direction.norm()
    return float(((pos - origin) @ v).mean()), float(((neg - origin) @ v).mean())


def mean_difference(concept: str, layer: int, pos: torch.Tensor, neg: torch.Tensor, *,
                    paired: bool = True) -> ConceptVector:
    """Mean of ``pos_i - neg_i`` over pairs (``pos``, ``neg``: ``(N, d)``), normalized; origin at the
    midpoint of the two class means. Unpaired (``paired=False``, sizes may differ): ``mean(pos) - mean(neg)``."""
    pos, neg = pos.float(), neg.float()
    _pair_check(pos, neg, paired)
    mu_p, mu_n = pos.mean(0), neg.mean(0)
    direction = (pos - neg).mean(0) if paired else mu_p - mu_n
    origin = (mu_p + mu_n) / 2
    pp, nn_ = _projections(direction, origin, pos, neg) if direction.norm() > 0 else (float("nan"),) * 2
    return ConceptVector(concept, layer, direction, origin, "mean_diff", pp, nn_)


def pca_difference(concept: str, layer: int, pos: torch.Tensor, neg: torch.Tensor) -> ConceptVector:
    """First principal axis of the paired differences ``D = pos - neg`` (``(N, d)``), uncentered: the unit
    ``v`` maximizing ``Σ (D_i·v)²``, signed so that ``mean(D)·v ≥ 0``; origin at the midpoint of class means."""
    pos, neg = pos.float(), neg.float()
    _pair_check(pos, neg, paired=True)
    diffs = pos - neg
    # top right-singular vector of D (N, d); torch.linalg.svd is exact for these small matrices
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    v = vh[0]
    if float(diffs.mean(0) @ v) < 0:
        v = -v
    origin = (pos.mean(0) + neg.mean(0)) / 2
    pp, nn_ = _projections(v, origin, pos, neg)
    return ConceptVector(concept, layer, v, origin, "pca", pp, nn_)


def probe_direction(concept: str, layer: int, probe: torch.nn.Module, at: torch.Tensor | None = None) -> ConceptVector:
    """The mean gradient of ``probe``'s logit with respect to its raw input, at points ``at`` ``(N, d)``
    (default: the probe's input mean, the layer's average activation); origin at the probe's input mean.

    For a linear probe without LayerNorm this is ``w / σ`` normalized, whatever ``at`` is.
    """
    mean = getattr(probe, "input_mean", None)
    if mean is None:
        raise InputError("probe_direction needs a cortex probe (with input_mean/input_std); got "
                         f"{type(probe).__name__}.")
    points = (mean.detach().float().reshape(1, -1) if at is None else at.detach().float()).clone()
    was_training = probe.training
    probe.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = points.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(probe(x).sum(), x)
    finally:
        probe.train(was_training)
    return ConceptVector(concept, layer, grad.mean(0), mean.detach(), "probe")


def contrast_direction(toward: torch.Tensor, away: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """A unit direction that raises ``toward`` and lowers ``away`` (both ``(d,)`` or ``(B, d)``), orthogonalized.

    ``u_a`` is the part of ``â`` orthogonal to ``b̂`` (raises A without raising B), ``u_b`` the part of ``b̂``
    orthogonal to ``â``; the result is ``normalize(u_a/|u_a| - u_b/|u_b|)``. When the two are (anti)parallel
    the orthogonal parts vanish and it falls back to ``normalize(â - b̂)``; identical directions raise.
    For orthogonal unit ``a``, ``b`` it equals ``(a - b)/√2``.
    """
    a = toward.float() / toward.float().norm(dim=-1, keepdim=True)
    b = away.float() / away.float().norm(dim=-1, keepdim=True)
    c = (a * b).sum(-1, keepdim=True)
    ua, ub = a - c * b, b - c * a
    na, nb = ua.norm(dim=-1, keepdim=True), ub.norm(dim=-1, keepdim=True)
    ortho = ua / na.clamp_min(1e-12) - ub / nb.clamp_min(1e-12)
    fallback = a - b
    out = torch.where(na > eps, ortho, fallback)
    norm = out.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-6).any()):
        raise InputError(
            "The 'toward' and 'away' concept directions are identical, so no direction raises one and lowers "
            "the other. Contrast two different concepts (e.g. a concept and its opposite)."
        )
    return out / norm


def extract_vectors(loaded: Any, concept: str, positives: Sequence[str], negatives: Sequence[str],
                    layers: Iterable[int], *, method: str = "mean_diff", pool: str = "mean", max_length: int = 128,
                    batch_size: int = 32) -> list[ConceptVector]:
    """Concept vectors of ``concept`` at ``layers`` from texts run through ``loaded`` (a registry model).

    ``positives[i]``/``negatives[i]`` are contrastive pairs (same length: ``pca`` needs pairs; ``mean_diff``
    falls back to class means when the lengths differ). Texts are pooled per layer (``mean`` or ``last``).
    """
    from cortex.lenses.capture import encode_texts

    if method not in ("mean_diff", "pca"):
        raise InputError(f"method={method!r}: texts give 'mean_diff' or 'pca' vectors (use probe_direction for "
                         "'probe').")
    layers = sorted(set(int(l) for l in layers))
    texts = list(positives) + list(negatives)
    acts = encode_texts(loaded.model, loaded.tokenizer, loaded.layers(), texts, layers, pool=pool,
                        batch_size=batch_size, max_length=max_length)
    n = len(positives)
    out = []
    for layer in layers:
        pos, neg = acts[layer][:n], acts[layer][n:]
        if method == "pca":
            out.append(pca_difference(concept, layer, pos, neg))
        else:
            out.append(mean_difference(concept, layer, pos, neg, paired=len(pos) == len(neg)))
    return out


def probe_vectors(pack: Any, layers: Iterable[int] | None = None) -> "VectorSet":
    """A :class:`VectorSet` with the probe direction of every concept at every (or each given) pack layer."""
    vs = VectorSet()
    for layer in sorted(pack.layers if layers is None else (int(l) for l in layers)):
        if layer not in pack.layers:
            raise PackError(f"The lens pack has no layer {layer}; it has {sorted(pack.layers)}.")
        lp = pack.layers[layer]
        for concept in lp.order:
            vs.add(probe_direction(concept, layer, lp.probe(concept)))
    return vs


# ---------------------------------------------------------------------------------------------- storage
@dataclass
class VectorSet:
    """Concept vectors of a pack by ``(concept, layer)``, plus each concept's opposites."""

    vectors: dict[tuple[str, int], ConceptVector] = field(default_factory=dict)
    opposites: dict[str, list[str]] = field(default_factory=dict)

    def add(self, vector: ConceptVector) -> None:
        self.vectors[(vector.concept, vector.layer)] = vector

    def get(self, concept: str, layer: int) -> ConceptVector | None:
        return self.vectors.get((concept, int(layer)))

    def layers(self) -> list[int]:
        return sorted({layer for _, layer in self.vectors})

    def concepts(self) -> list[str]:
        return sorted({c for c, _ in self.vectors})

    def __len__(self) -> int:
        return len(self.vectors)


def _fsync_replace(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def save_vectors(folder: str | os.PathLike, vectors: VectorSet | Iterable[ConceptVector], *,
                 opposites: Mapping[str, Sequence[str]] | None = None, merge: bool = True) -> Path:
    """Write concept vectors into a lens-pack folder as ``concept_vectors.safetensors`` (atomically).

    With ``merge`` (default) vectors already in the file are kept unless the same ``(concept, layer)`` is given.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if not folder.is_dir():
        raise PackError(f"Lens pack folder {folder} does not exist; save the pack before adding vectors.")
    vs = load_vectors(folder) if merge and (folder / VECTORS_FILE).is_file() else VectorSet()
    items = vectors.vectors.values() if isinstance(vectors, VectorSet) else vectors
    for v in items:
        vs.add(v)
    if isinstance(vectors, VectorSet):
        vs.opposites.update(vectors.opposites)
    if opposites:
        vs.opposites.update({k: list(v) for k, v in opposites.items()})
    if not len(vs):
        raise InputError("No concept vectors to save; extract some first.")
    widths = {v.dim for v in vs.vectors.values()}
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, dict[str, list[str]]] = {}
    for layer in vs.layers():
        rows = sorted((v for v in vs.vectors.values() if v.layer == layer), key=lambda v: v.concept)
        if len({r.dim for r in rows}) != 1:
            raise InputError(f"Concept vectors at layer {layer} have different widths {sorted(widths)}.")
        index[str(layer)] = {"order": [r.concept for r in rows], "methods": [r.method for r in rows]}
        tensors[f"layer{layer}.direction"] = torch.stack([r.direction for r in rows]).contiguous()
        tensors[f"layer{layer}.origin"] = torch.stack([r.origin for r in rows]).contiguous()
        tensors[f"layer{layer}.pos_proj"] = torch.tensor([r.pos_proj for r in rows], dtype=torch.float32)
        tensors[f"layer{layer}.neg_proj"] = torch.tensor([r.neg_proj for r in rows], dtype=torch.float32)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "index": json.dumps(index),
            "opposites": json.dumps(vs.opposites)}
    tmp = folder / f".{VECTORS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    _fsync_replace(tmp, folder / VECTORS_FILE)
    return folder / VECTORS_FILE


def load_vectors(folder: str | os.PathLike) -> VectorSet:
    """Read ``concept_vectors.safetensors`` of a lens-pack folder (an empty set when the pack has none)."""
    from safetensors import safe_open

    path = Path(folder) / VECTORS_FILE
    if not path.is_file():
        return VectorSet()
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise PackError(f"{path} is not a readable safetensors file ({e}). Re-extract the vectors.") from e
    if meta.get("format") != FORMAT:
        raise PackError(f"{path} has format={meta.get('format')!r}; expected {FORMAT!r}.")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise PackError(f"{path} uses concept-vector format {meta['format_version']}; upgrade cortex.")
    try:
        index = json.loads(meta["index"])
        opposites = json.loads(meta.get("opposites", "{}"))
    except (KeyError, json.JSONDecodeError) as e:
        raise PackError(f"{path} has a missing or broken index ({e}). Re-extract the vectors.") from e
    vs = VectorSet(opposites={k: list(v) for k, v in opposites.items()})
    for layer_s, spec in index.items():
        layer = int(layer_s)
        keys = [f"layer{layer}.{n}" for n in ("direction", "origin", "pos_proj", "neg_proj")]
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise PackError(f"{path} lacks tensors {missing}. Re-extract the vectors.")
        d, o, pp, np_ = (tensors[k] for k in keys)
        n = len(spec["order"])
        if d.shape[0] != n or o.shape != d.shape or pp.shape != (n,) or np_.shape != (n,):
            raise PackError(f"{path} layer {layer}: tensor shapes do not match its {n} concepts. Re-extract.")
        for i, (concept, method) in enumerate(zip(spec["order"], spec["methods"])):
            vs.add(ConceptVector(concept, layer, d[i], o[i], method, float(pp[i]), float(np_[i])))
    return vs


def pack_folder(name_or_folder: str | os.PathLike, registry: Any = None) -> Path:
    """The folder of a lens pack given as a folder or a registry name."""
    p = Path(name_or_folder)
    if p.is_dir():
        return p
    from cortex.hub.registry import Registry

    reg = registry or Registry()
    return reg.path(str(name_or_folder), kind="lens_pack")


def attach_vectors(name_or_folder: str | os.PathLike, vectors: VectorSet | Iterable[ConceptVector], *,
                   opposites: Mapping[str, Sequence[str]] | None = None, registry: Any = None) -> Path:
    """Store concept vectors in a lens pack.

    A folder is written in place. A registry entry is copied to a staging folder, the vectors are added there,
    and the copy replaces the entry atomically (same name, metadata and parents), so the registry's recorded
    file hashes cover the new file.
    """
    p = Path(name_or_folder)
    if p.is_dir():
        return save_vectors(p, vectors, opposites=opposites)
    from cortex.hub.registry import METADATA_FILE, Registry

    reg = registry or Registry()
    entry = reg.get(str(name_or_folder), kind="lens_pack")
    src = reg.path(entry.name)
    keep = {k: v for k, v in entry.to_dict().items()
            if k not in ("name", "kind", "source", "created_at", "files", "file_stats", "size_bytes")}
    with reg.stage() as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        (tmp / METADATA_FILE).unlink(missing_ok=True)
        save_vectors(tmp, vectors, opposites=opposites)
        reg.register(tmp, name=entry.name, kind="lens_pack", source=entry.source, on_conflict="replace", **keep)
    return reg.path(entry.name) / VECTORS_FILE

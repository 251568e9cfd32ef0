"""BatchedLensBank: every loaded probe of one model layer scored in a few batched operations per token.

Probes are kept in groups by (kind, has LayerNorm). Inside a group, each weight is one tensor with a
leading probe axis (MLP: ``W1 (N, 128, d)``, ``W2 (N, 64, 128)``, ``W3 (N, 1, 64)``; linear: ``W (N, d)``),
dense in its first ``n`` slots, with spare capacity so adding probes copies only the new ones (capacity
doubles when full) and removing swaps the last probes into the holes. Nothing is rebuilt when the set
changes.

Scoring ``x (T, d)``: standardize once with the layer's statistics; compute the plain LayerNorm once
(``x̂``) for the groups that use it; each probe's LayerNorm affine ``x̂·g + β`` is folded into its first
weight when the probe is added (``W1·diag(g)``, ``b1 + W1·β``), so a mixed pack needs no per-probe step:

    MLP group:  h1 = relu(x @ W1ᵀ + b1)        one GEMM, (T, d) × (d, N·128)
                h2 = relu(h1 @ W2ᵀ + b2)       one batched matmul over N
                z  = h2 @ W3ᵀ + b3             one batched matmul over N        → (T, N) logits
    linear:     z  = x @ Wᵀ + b                one GEMM
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from cortex.errors import InputError, PackError
from cortex.lenses.probes import Probe


class _Group:
    """Dense, growable stacked storage for probes of one kind and LayerNorm setting."""

    kind: str = ""
    shapes: dict[str, tuple[int, ...]] = {}

    def __init__(self, dim: int, layer_norm: bool, device: torch.device, dtype: torch.dtype):
        self.dim = dim
        self.layer_norm = layer_norm
        self.device = device
        self.dtype = dtype
        self.names: list[str] = []
        self.capacity = 0
        self.store: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.names)

    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity, 8)
        n = len(self.names)
        new = {k: torch.zeros((cap, *shape), device=self.device, dtype=self.dtype) for k, shape in self.shapes.items()}
        for k, t in self.store.items():
            new[k][:n] = t[:n]
        self.store = new
        self.capacity = cap

    def fold(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-kind: stacked probe tensors ``(k, ...)`` → the group's stored (LayerNorm-folded) tensors."""
        raise TypeError(f"{type(self).__name__} must define fold()")

    def add(self, names: Sequence[str], t: dict[str, torch.Tensor]) -> None:
        folded = self.fold({k: v.to(device=self.device, dtype=torch.float32) for k, v in t.items()})
        n, k = len(self.names), len(names)
        self._grow(n + k)
        for key, value in folded.items():
            self.store[key][n:n + k] = value.to(self.dtype)
        self.names.extend(names)

    def remove(self, names: Iterable[str]) -> None:
        slot = {name: i for i, name in enumerate(self.names)}
        removed = sorted({slot[n] for n in names})
        if not removed:
            return
        n_after = len(self.names) - len(removed)
        gone = set(removed)
        holes = [s for s in removed if s < n_after]
        tail = [s for s in range(n_after, len(self.names)) if s not in gone]
        if holes:
            src = torch.tensor(tail, device=self.device)
            dst = torch.tensor(holes, device=self.device)
            for t in self.store.values():
                t[dst] = t[src]
            for h, s in zip(holes, tail):
                self.names[h] = self.names[s]
        del self.names[n_after:]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x (T, d)`` in the bank dtype → logits ``(T, n)``."""
        raise TypeError(f"{type(self).__name__} must define logits()")

    def nbytes(self) -> int:
        return sum(t[: len(self.names)].numel() * t.element_size() for t in self.store.values())


class _MLPGroup(_Group):
    kind = "mlp"

    def __init__(self, dim: int, layer_norm: bool, device: torch.device, dtype: torch.dtype, hidden: int = 128):
        super().__init__(dim, layer_norm, device, dtype)
        self.hidden = hidden
        h2 = hidden // 2
        self.shapes = {"W1": (hidden, dim), "b1": (hidden,), "W2": (h2, hidden), "b2": (h2,),
                       "W3": (1, h2), "b3": (1,)}

    def fold(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w1, b1 = t["W1"], t["b1"]
        if self.layer_norm:  # W1 (x̂·g + β) + b1 = (W1·diag g) x̂ + (b1 + W1 β)
            b1 = b1 + torch.einsum("khd,kd->kh", w1, t["ln_b"])
            w1 = w1 * t["ln_w"].unsqueeze(1)
        return {"W1": w1, "b1": b1, "W2": t["W2"], "b2": t["b2"], "W3": t["W3"].reshape(-1, 1, self.hidden // 2),
                "b3": t["b3"].reshape(-1, 1)}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        n, T, h = len(self.names), x.shape[0], self.hidden
        s = self.store
        w1 = s["W1"][:n].reshape(n * h, self.dim)                        # dense prefix: a view, no copy
        h1 = torch.addmm(s["b1"][:n].reshape(-1), x, w1.t()).relu_()      # (T, n·h)
        h1 = h1.view(T, n, h).transpose(0, 1)                             # (n, T, h)
        h2 = torch.baddbmm(s["b2"][:n].unsqueeze(1), h1, s["W2"][:n].transpose(1, 2)).relu_()  # (n, T, h/2)
        z = torch.baddbmm(s["b3"][:n].unsqueeze(1), h2, s["W3"][:n].transpose(1, 2))          # (n, T, 1)
        return z.view(n, T).t()


class _LinearGroup(_Group):
    kind = "linear"

    def __init__(self, dim: int, layer_norm: bool, device: torch.device, dtype: torch.dtype, hidden: int = 0):
        super().__init__(dim, layer_norm, device, dtype)
        self.shapes = {"W": (dim,), "b": ()}

    def fold(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w, b = t["W"], t["b"]
        if self.layer_norm:
            b = b + (w * t["ln_b"]).sum(-1)
            w = w * t["ln_w"]
        return {"W": w, "b": b}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.names)
        return torch.addmm(self.store["b"][:n], x, self.store["W"][:n].t())


GROUP_KINDS: dict[str, type[_Group]] = {"mlp": _MLPGroup, "linear": _LinearGroup}


class BatchedLensBank:
    """All probes of one model layer, scored together: ``logits(x (T, d)) → (T, N)``.

    >>> bank = BatchedLensBank(384, input_mean=mean, input_std=std)
    >>> bank.add({"Deception": probe_a, "Honesty": probe_b})
    >>> bank.logits(hidden)            # (T, 2), columns in bank.names order
    >>> bank.remove(["Honesty"])

    Scores equal per-probe evaluation ``probe(x)`` up to float rounding (about 1e-6 in float32).
    ``dtype=torch.bfloat16`` halves the memory read per token at bf16 precision.
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        input_mean: torch.Tensor | None = None,
        input_std: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        hidden: int = 128,
        ln_eps: float = 1e-5,
    ):
        self.dim = int(hidden_size)
        self.device = torch.device(device)
        self.dtype = dtype
        self.hidden = hidden
        self.ln_eps = ln_eps
        mean = torch.zeros(self.dim) if input_mean is None else input_mean
        std = torch.ones(self.dim) if input_std is None else input_std
        if mean.shape != (self.dim,) or std.shape != (self.dim,):
            raise PackError(
                f"Input statistics have shapes {tuple(mean.shape)}/{tuple(std.shape)}; this bank's layer is "
                f"{self.dim} wide. Use the normalizer saved with the same layer's probes."
            )
        self.input_mean = mean.to(self.device, torch.float32)
        self.input_std = std.to(self.device, torch.float32)
        self.groups: dict[tuple[str, bool], _Group] = {}
        self._where: dict[str, tuple[str, bool]] = {}

    # ------------------------------------------------------------------ membership
    @property
    def names(self) -> list[str]:
        """Concept names in column order of :meth:`logits`."""
        return [n for g in self.groups.values() for n in g.names]

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def nbytes(self) -> int:
        """Bytes of probe weights held (the active slots)."""
        return sum(g.nbytes() for g in self.groups.values())

    def _group(self, kind: str, layer_norm: bool) -> _Group:
        key = (kind, layer_norm)
        if key not in self.groups:
            if kind not in GROUP_KINDS:
                raise PackError(f"Probe kind {kind!r} cannot go in a bank; known kinds: {', '.join(GROUP_KINDS)}.")
            self.groups[key] = GROUP_KINDS[kind](self.dim, layer_norm, self.device, self.dtype, self.hidden)
        return self.groups[key]

    def add(self, probes: Mapping[str, Probe]) -> None:
        """Add probe modules (each must match this layer's width and statistics)."""
        by_kind: dict[str, tuple[list[str], list[dict[str, torch.Tensor]]]] = {}
        for name, probe in probes.items():
            if probe.input_dim != self.dim:
                raise PackError(
                    f"Probe {name!r} reads {probe.input_dim}-wide hidden states but this bank's layer is {self.dim} "
                    "wide; it was trained for another model or layer."
                )
            if not (torch.equal(probe.input_mean.cpu(), self.input_mean.cpu())
                    and torch.equal(probe.input_std.cpu(), self.input_std.cpu())):
                raise PackError(
                    f"Probe {name!r} standardizes its input with other statistics than this bank's layer; load "
                    "probes of one lens-pack layer into one bank."
                )
            if probe.norm is not None and probe.norm.eps != self.ln_eps:
                raise PackError(f"Probe {name!r} uses LayerNorm eps={probe.norm.eps}; this bank uses {self.ln_eps}.")
            names, tensors = by_kind.setdefault(probe.kind, ([], []))
            names.append(name)
            tensors.append(probe.to_tensors())
        for kind, (names, tensors) in by_kind.items():
            self.add_tensors(kind, names, {k: torch.stack([t[k] for t in tensors]) for k in tensors[0]})

    def add_tensors(self, kind: str, names: Sequence[str], stacked: Mapping[str, torch.Tensor]) -> None:
        """Add probes given as stacked tensors ``(k, ...)`` (the lens-pack file layout); replaces same names."""
        names = list(names)
        if len(set(names)) != len(names):
            raise InputError(f"Duplicate concept names in one add: {sorted({n for n in names if names.count(n) > 1})}.")
        if not names:
            return
        stacked = dict(stacked)
        width = stacked["W1" if kind == "mlp" else "W"].shape[-1]
        if width != self.dim:
            raise PackError(
                f"{kind} probes {names[:3]}... read {width}-wide hidden states but this bank's layer is {self.dim} "
                "wide: the probe file does not match the model. Retrain or pull the lens pack for this model."
            )
        present = [n for n in names if n in self._where]
        if present:
            self.remove(present)
        has_ln = stacked["has_ln"].reshape(-1).bool()
        for flag in (False, True):
            sel = (has_ln == flag).nonzero().reshape(-1)
            if len(sel) == 0:
                continue
            group = self._group(kind, flag)
            group.add([names[i] for i in sel.tolist()], {k: v[sel] for k, v in stacked.items()})
            for i in sel.tolist():
                self._where[names[i]] = (kind, flag)

    def remove(self, names: Iterable[str]) -> None:
        """Drop probes by name; unknown names raise :class:`PackError`."""
        names = list(names)
        unknown = [n for n in names if n not in self._where]
        if unknown:
            raise PackError(f"Concepts {unknown[:5]} are not in this bank; loaded: {len(self)} probes.")
        by_group: dict[tuple[str, bool], list[str]] = {}
        for n in names:
            by_group.setdefault(self._where.pop(n), []).append(n)
        for key, group_names in by_group.items():
            self.groups[key].remove(group_names)

    def clear(self) -> None:
        self.groups.clear()
        self._where.clear()

    # ------------------------------------------------------------------ scoring
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits of every probe: ``x (T, d)`` → ``(T, N)``, or ``(d,)`` → ``(N,)``; float32."""
        single = x.dim() == 1
        x2 = x.reshape(1, -1) if single else x
        if x2.dim() != 2 or x2.shape[-1] != self.dim:
            raise InputError(f"Hidden states of shape {tuple(x.shape)} do not match this {self.dim}-wide bank; "
                             "pass (T, d) or (d,).")
        if not self._where:
            out = torch.zeros(x2.shape[0], 0, device=x2.device)
            return out[0] if single else out
        z = (x2.to(self.device, torch.float32) - self.input_mean) / self.input_std
        inputs: dict[bool, torch.Tensor] = {False: z.to(self.dtype)}
        if any(flag for _, flag in self.groups):
            inputs[True] = torch.nn.functional.layer_norm(z, (self.dim,), eps=self.ln_eps).to(self.dtype)
        parts = [g.logits(inputs[flag]) for (_, flag), g in self.groups.items() if len(g)]
        out = torch.cat(parts, dim=1).float()
        return out[0] if single else out

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid of :meth:`logits`."""
        return torch.sigmoid(self.logits(x))

    def scores(self, x: torch.Tensor) -> dict[str, float]:
        """``{concept: probability}`` for one hidden state ``(d,)``."""
        p = self.probs(x.reshape(-1)).tolist()
        return dict(zip(self.names, p))

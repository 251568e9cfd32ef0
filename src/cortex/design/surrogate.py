"""The design surrogate: a small NeuralTree over an alphabet, and a compact fine-tuning loop.

:func:`design_tree_config` builds the tree LaMBO-2 needs for a design problem: one char root over the
problem's alphabet, a value branch carrying ensemble regressor leaves (one per objective) and an
optional feasibility classifier, and a denoising-LM leaf on its own branch.

:func:`fit_surrogate` trains (or fine-tunes, warm-started) every leaf with the leaf's own loss:
regressors on the feasible designs' values (NaN targets of infeasible or failed designs are
missing values the loss skips), the feasibility classifier on feasible vs infeasible, and the
denoising LM on masked feasible designs (so it learns what feasible sequences look like). Each
Adam step is one forward pass over a minibatch that is part clean, part masked: on masked rows the
value heads learn the expected value given the visible tokens (no label smoothing), which is what
saliency and guidance read. A fit is a fixed number of steps on uniformly drawn minibatches, so a
design round's cost stays fixed as the data grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cortex._fit import BestWeights, optimizer_step
from cortex.design.acquisition import DesignObjective, _split
from cortex.errors import DesignError


@dataclass(frozen=True)
class SurrogateSettings:
    """How the tree is trained before the first round and fine-tuned after each one.

    Args:
        initial_steps: Adam steps of the first fit (and of a resumed run's first fit).
        finetune_steps: Adam steps after each round, warm-started from the previous weights.
        batch_size: designs per minibatch.
        lr: Adam learning rate.
        weight_decay: AdamW weight decay.
        target_transform: ``identity`` or ``log`` (``log(y + log_offset)``, for positive objectives
            spanning orders of magnitude, such as Ehrlich products of motif presences).
        log_offset: the offset of the ``log`` transform.
        lm_data: which feasible designs teach the denoising LM: ``all``, or ``seeds`` (round 0 only). An
            LM fitted on the optimizer's own population learns to copy the incumbent and stops proposing
            anything new; one fitted on a diverse seed set models the feasible space instead.
        corrupt_prob: fraction of each minibatch drawn from the LM's designs and masked (the rest is
            drawn from every design and stays clean).
        max_corrupt_frac: masked fractions are the root schedule's draws scaled into ``(0, max]``:
            design masks a few positions at a time, so the LM trains where it is used.
        finetune_epochs: 0: each round fine-tunes a fixed ``finetune_steps`` (as published); > 0: each
            round trains up to this many passes over every evaluated design (at most
            ``max_finetune_steps`` steps), checking a held-out ``val_fraction`` of the designs once per
            pass and stopping after ``patience`` checks without improvement (the best weights are kept).
        max_finetune_steps: cap on a round's steps with ``finetune_epochs > 0`` (bounds the cost late in a run).
        patience: checks without a better validation loss before a fit stops.
        val_fraction: share of the evaluated designs held out for early stopping.
    """

    initial_steps: int = 300
    finetune_steps: int = 50
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.0
    target_transform: str = "identity"
    log_offset: float = 0.01
    corrupt_prob: float = 0.5
    lm_data: str = "all"
    max_corrupt_frac: float = 0.5
    finetune_epochs: float = 0.0
    max_finetune_steps: int = 200
    patience: int = 1
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.finetune_epochs, (int, float)) and self.finetune_epochs >= 0):
            raise DesignError(f"surrogate.finetune_epochs={self.finetune_epochs!r} must be >= 0 (0: fixed steps).")
        if not (isinstance(self.val_fraction, (int, float)) and 0.0 < self.val_fraction < 1.0):
            raise DesignError(f"surrogate.val_fraction={self.val_fraction!r} must be in (0, 1).")
        for name in ("max_finetune_steps", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DesignError(f"surrogate.{name}={value!r} must be an integer >= 1.")
        for name in ("initial_steps", "finetune_steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "batch_size" else 0):
                raise DesignError(f"surrogate.{name}={value!r} must be an integer >= {1 if name == 'batch_size' else 0}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise DesignError(f"surrogate.lr={self.lr!r} must be a positive number, e.g. 3e-3.")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise DesignError(f"surrogate.weight_decay={self.weight_decay!r} must be >= 0.")
        if self.target_transform not in TARGET_TRANSFORMS:
            raise DesignError(
                f"surrogate.target_transform={self.target_transform!r} is not one of {', '.join(TARGET_TRANSFORMS)}."
            )
        if self.lm_data not in ("all", "seeds"):
            raise DesignError(f"surrogate.lm_data={self.lm_data!r} is not one of all, seeds.")
        for name in ("corrupt_prob", "max_corrupt_frac"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
                raise DesignError(f"surrogate.{name}={value!r} must be in (0, 1].")
        if not (isinstance(self.log_offset, (int, float)) and self.log_offset > 0):
            raise DesignError(f"surrogate.log_offset={self.log_offset!r} must be > 0.")

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        """Training targets from black-box values (non-finite stay non-finite)."""
        return TARGET_TRANSFORMS[self.target_transform](values, self.log_offset)


def _identity(y: torch.Tensor, offset: float) -> torch.Tensor:
    return y


def _log(y: torch.Tensor, offset: float) -> torch.Tensor:
    # values below -offset have no log: they are treated as missing rather than clipped silently
    return torch.where(y > -offset, torch.log((y + offset).clamp(min=1e-12)), torch.full_like(y, math.nan))


TARGET_TRANSFORMS = {"identity": _identity, "log": _log}


def design_tree_config(
    alphabet: str,
    length: int,
    *,
    objectives: tuple[str, ...] = ("value",),
    feasibility_leaf: str | None = "feasible",
    ensemble_size: int = 4,
    width: int = 32,
    root_kind: str = "conv1d",
    kernel_size: int = 5,
    num_blocks: int = 2,
    pooling: str = "mean",
):
    """A :class:`~cortex.models.neural_tree.NeuralTreeConfig` for designing ``length``-long sequences over ``alphabet``.

    Root ``sequence`` (char tokenizer over ``alphabet``, ``conv1d`` or ``transformer``), branch
    ``value`` (conv1d, ``ensemble_size`` members) with one regressor leaf per objective and the
    classifier ``feasibility_leaf`` (``None`` for none), branch ``lm`` with the denoising leaf ``mlm``.
    """
    from cortex.design.alphabet import check_alphabet
    from cortex.models.neural_tree import NeuralTreeConfig

    check_alphabet(alphabet)
    if root_kind == "conv1d":
        root = {"kind": "conv1d", "embed_dim": width, "hidden_dim": width, "out_dim": width,
                "num_blocks": num_blocks, "kernel_size": kernel_size}
    elif root_kind == "transformer":
        root = {"kind": "transformer", "hidden_dim": width, "num_layers": num_blocks, "num_heads": 2}
    else:
        raise DesignError(f"root_kind={root_kind!r} is not one of conv1d, transformer.")
    root.update({"tokenizer": "char", "chars": alphabet, "max_len": int(length)})
    leaves = {
        name: {"kind": "regressor", "branch": "value", "ensemble_size": ensemble_size} for name in objectives
    }
    if feasibility_leaf is not None:
        leaves[feasibility_leaf] = {"kind": "classifier", "branch": "value", "ensemble_size": ensemble_size}
    leaves["mlm"] = {"kind": "denoising_lm", "branch": "lm", "root": "sequence"}
    return NeuralTreeConfig(
        roots={"sequence": root},
        branches={
            "value": {"kind": "conv1d", "out_dim": width, "hidden_dim": width, "num_layers": 1,
                      "kernel_size": kernel_size, "pooling": pooling},
            "lm": {"kind": "mlp", "out_dim": width, "hidden_dim": width, "num_layers": 1},
        },
        leaves=leaves,
    )


@dataclass
class DesignData:
    """Evaluated designs as the surrogate sees them.

    Attributes:
        ids: ``(N, L)`` token ids of the tree's root.
        values: ``(N, M)`` black-box objective values (``-inf`` infeasible, NaN failed).
        rounds: ``(N,)`` the round each design was evaluated in (0 = seeds), or ``None``.
    """

    ids: torch.Tensor
    values: torch.Tensor
    rounds: torch.Tensor | None = None

    @property
    def failed(self) -> torch.Tensor:
        """``(N,)`` designs whose evaluation failed (left out of every loss)."""
        return torch.isnan(self.values).any(-1)

    @property
    def feasible(self) -> torch.Tensor:
        """``(N,)`` designs with finite values in every objective."""
        return torch.isfinite(self.values).all(-1)


@dataclass
class FitReport:
    """What a fit did: steps run and the mean loss of its last tenth of steps, per leaf."""

    steps: int
    losses: dict[str, float] = field(default_factory=dict)


def fit_surrogate(
    tree,
    data: DesignData,
    objective: DesignObjective,
    *,
    steps: int,
    settings: SurrogateSettings,
    lm_leaf: str,
    root: str,
    generator: torch.Generator | None = None,
    check_every: int | None = None,
) -> FitReport:
    """Train every leaf the design reads for up to ``steps`` Adam steps (see the module docstring).

    ``objective.objectives[i]`` is trained on ``data.values[:, i]`` (transformed by
    ``settings.target_transform``); each constraint leaf on feasible (its named class) vs infeasible.
    With ``check_every``, a ``settings.val_fraction`` of the designs is held out and their clean loss
    checked every ``check_every`` steps; training stops after ``settings.patience`` checks without
    improvement and the best weights are restored.
    """
    usable = ~data.failed
    if steps == 0 or not bool(usable.any()):
        return FitReport(steps=0)
    if data.values.shape[1] != objective.num_objectives:
        raise DesignError(
            f"data has {data.values.shape[1]} objective columns but the objective names {objective.num_objectives}."
        )
    leaf_targets = _standardized_targets(tree, data, objective, settings)
    feasible = data.feasible & usable
    rows, val, lm_rows, lm_pool = _split_rows(data, usable, feasible, settings, generator, check_every)
    constraint_leaves = [_split(c, "")[0] for c in objective.constraints]
    leaf_keys = list(dict.fromkeys([*leaf_targets, *constraint_leaves, lm_leaf]))
    batch = _Batcher(tree, data, objective, settings, leaf_targets, feasible, lm_rows, leaf_keys, lm_leaf, root)
    done, history = _train(tree, batch, settings, steps, rows, val, lm_pool, generator, check_every)
    tail = max(1, done // 10)
    return FitReport(steps=done, losses={k: sum(v[-tail:]) / len(v[-tail:]) for k, v in history.items()})


def _standardized_targets(tree, data: DesignData, objective: DesignObjective,
                          settings: SurrogateSettings) -> dict[str, torch.Tensor]:
    """Regressor leaf -> transformed targets (NaN where infeasible or failed); fits each leaf's standardization."""
    targets = settings.transform(data.values.float())  # (N, M), NaN/-inf where infeasible
    targets = torch.where(torch.isfinite(targets), targets, torch.full_like(targets, math.nan))
    leaf_targets = _leaf_targets(tree, objective, targets)
    for leaf, y in leaf_targets.items():
        if bool(torch.isfinite(y).any()):
            tree.fit_target_standardization(leaf, y[torch.isfinite(y).all(-1)])
    return leaf_targets


def _split_rows(data: DesignData, usable: torch.Tensor, feasible: torch.Tensor, settings: SurrogateSettings,
                generator, check_every: int | None):
    """``(rows, val, lm_rows, lm_pool)``: training rows, held-out rows (empty without ``check_every`` or
    with fewer than 20 designs), the LM's designs (mask) and the LM's training rows (indices)."""
    rows = torch.nonzero(usable).flatten()
    val = rows[:0]
    if check_every is not None and len(rows) >= 20:
        perm = rows[torch.randperm(len(rows), generator=generator)]
        n_val = max(2, int(settings.val_fraction * len(rows)))
        val, rows = perm[:n_val], perm[n_val:]
    lm_rows = feasible.clone()
    if settings.lm_data == "seeds" and data.rounds is not None and bool((lm_rows & (data.rounds == 0)).any()):
        lm_rows &= data.rounds == 0
    lm_train = lm_rows.clone()
    lm_train[val] = False
    return rows, val, lm_rows, torch.nonzero(lm_train).flatten()


def _train(tree, batch: "_Batcher", settings: SurrogateSettings, steps: int, rows: torch.Tensor,
           val: torch.Tensor, lm_pool: torch.Tensor, generator,
           check_every: int | None) -> tuple[int, dict[str, list[float]]]:
    """The Adam steps of a fit, early-stopped on ``val`` when it is not empty; returns (steps run, loss history).

    The best weights seen at a check are restored at the end; the tree is left in eval mode.
    """
    # foreach: one fused update over the many small tensors of a tree, much faster on CPU
    optimizer = torch.optim.AdamW(tree.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, foreach=True)
    history: dict[str, list[float]] = {}
    best, done = BestWeights(settings.patience), 0
    tree.train()
    n_masked = round(settings.corrupt_prob * settings.batch_size)
    n_lm = (n_masked + 1) // 2 if len(lm_pool) else 0
    n_clean = settings.batch_size - n_masked
    for step in range(steps):
        # one forward serves every leaf. Rows: clean ones from every evaluated design; masked ones
        # from the LM's designs (the LM learns from those) and from every design (so the value heads
        # learn to read partly masked versions of any design, as guidance needs)
        picks = [rows[torch.randint(len(rows), (n_clean + n_masked - n_lm,), generator=generator)]]
        if n_lm:
            picks.append(lm_pool[torch.randint(len(lm_pool), (n_lm,), generator=generator)])
        losses = batch.losses(torch.cat(picks), n_clean, generator)
        optimizer_step(sum(losses.values()), optimizer)
        done = step + 1
        for k, v in losses.items():
            history.setdefault(k, []).append(float(v.detach()))
        if len(val) and done % check_every == 0:
            if best.update(batch.validation_loss(val), tree):
                break
            tree.train()
    best.restore(tree)
    tree.eval()
    return done, history


class _Batcher:
    """The per-minibatch forward and leaf losses of :func:`fit_surrogate`."""

    def __init__(self, tree, data, objective, settings, leaf_targets, feasible, lm_rows, leaf_keys, lm_leaf, root):
        from cortex.corruption import kind_weights

        self.tree, self.data, self.objective, self.settings = tree, data, objective, settings
        self.leaf_targets, self.feasible, self.lm_rows = leaf_targets, feasible, lm_rows
        self.leaf_keys, self.lm_leaf, self.root = leaf_keys, lm_leaf, root
        self.mask_kind = kind_weights("mask")
        self.schedule = tree.roots[root].schedule

    def losses(self, batch: torch.Tensor, n_clean: int, generator, masked: bool = True) -> dict[str, torch.Tensor]:
        from cortex.corruption import CorruptionParams

        tree, root = self.tree, self.root
        ids = self.data.ids[batch]
        frac = self.schedule.sample_corrupt_frac(len(batch), generator) * self.settings.max_corrupt_frac
        frac = torch.where((torch.arange(len(batch)) >= n_clean) & masked, frac, torch.zeros_like(frac))
        params = CorruptionParams(frac=frac, kind=self.mask_kind)
        out = tree({root: {"input_ids": ids, "attention_mask": torch.ones_like(ids)}},
                   leaf_keys=self.leaf_keys, corruption={root: params})
        # no label smoothing: on a masked row a value head learns E[y | visible tokens], so masking a
        # position that does not matter leaves the prediction unchanged and saliency means something
        losses: dict[str, torch.Tensor] = {}
        for leaf, y in self.leaf_targets.items():
            losses[leaf] = tree.leaf_loss(leaf, out, y[batch], alpha=0.0)
        for name in self.objective.constraints:
            leaf, c = _split(name, "")
            good = 1 if c is None else c  # feasibility leaves are two-class: the other class is infeasible
            labels = torch.where(self.feasible[batch], good, 1 - good)
            losses[leaf] = tree.leaf_loss(leaf, out, labels, alpha=0.0)
        if masked:
            # the LM learns what feasible sequences look like: masked positions of feasible rows only
            lm_mask = out.root_outputs[root].is_corrupted & self.lm_rows[batch][:, None]
            losses[self.lm_leaf] = tree.leaf_loss(self.lm_leaf, out, mask=lm_mask, alpha=0.0)
        return losses

    @torch.no_grad()
    def validation_loss(self, val: torch.Tensor) -> float:
        """Clean loss of the value and constraint leaves on the held-out designs (what ranking reads)."""
        self.tree.eval()
        keys, self.leaf_keys = self.leaf_keys, [k for k in self.leaf_keys if k != self.lm_leaf]
        try:
            losses = self.losses(val, len(val), None, masked=False)
        finally:
            self.leaf_keys = keys
        return float(sum(v for v in losses.values() if torch.isfinite(v)))


def _leaf_targets(tree, objective: DesignObjective, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Regressor leaf → ``(N, out_dim)`` targets, NaN where an output is not an objective."""
    specs = tree.config.leaf_specs()
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(objective.objectives):
        leaf, k = _split(name, "objectives")
        if leaf not in out:
            out[leaf] = torch.full((targets.shape[0], specs[leaf].out_dim), math.nan)
        # minimized objectives are trained on their raw values; DesignObjective negates predictions
        out[leaf][:, 0 if k is None else k] = targets[:, i]
    return out

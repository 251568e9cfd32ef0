"""Design objectives read from a NeuralTree's leaves, and botorch acquisitions over its ensemble.

A :class:`DesignObjective` names the regressor leaves whose predicted means are the objectives
(maximized unless listed in ``minimize``) and the classifier leaves whose class probabilities are
constraints. The ensemble members of those leaves are the posterior samples: the tree's outputs
``(E, B, ...)`` become objective samples ``(E, B, M)``.

:class:`EnsembleAcquisition` turns samples into one log-acquisition value per design ``(B,)``:

* one objective: botorch's ``qLogExpectedImprovement`` (``q = 1``), with ``best_f`` per member: the
  best predicted value among the baseline designs under that same member (as the original cortex
  did), so a member's bias cancels in its own improvement;
* several objectives: botorch's ``qLogExpectedHypervolumeImprovement`` with a reference point
  inferred from the baseline designs' predicted Pareto front and one box partitioning per member.

Constraint probabilities are multiplied into each member's improvement (added in log space) before
the average over members, so the result is ``log mean_e[ improvement_e(x) * prod_c p_e,c(x) ]``:
expected improvement times probability of feasibility, per posterior sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cortex._extras import require
from cortex.errors import DesignError

LOG_PROB_FLOOR = 1e-6  # a constraint probability never fully zeroes a gradient


def _split(name: str, what: str) -> tuple[str, int | None]:
    """``"leaf"`` or ``"leaf:k"`` → (leaf, k)."""
    if not isinstance(name, str) or not name:
        raise DesignError(f"{what} entry {name!r} must be a leaf name such as 'value' or 'value:0'.")
    leaf, _, index = name.partition(":")
    if not index:
        return leaf, None
    if not index.isdigit():
        raise DesignError(f"{what} entry {name!r}: the part after ':' must be an output/class index, e.g. '{leaf}:0'.")
    return leaf, int(index)


@dataclass(frozen=True)
class DesignObjective:
    """Which tree outputs are objectives and which are constraints.

    Args:
        objectives: regressor leaf names (``"leaf"`` for a one-output leaf, ``"leaf:k"`` for output ``k``).
            One name gives expected improvement, several give expected hypervolume improvement.
        minimize: the subset of ``objectives`` to minimize (their predictions are negated).
        constraints: classifier leaf names whose probability of the feasible class multiplies the
            improvement; ``"leaf"`` means class 1, ``"leaf:c"`` class ``c``.
    """

    objectives: tuple[str, ...]
    minimize: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("objectives", "minimize", "constraints"):
            value = getattr(self, field)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, field, tuple(value))
        if not self.objectives:
            raise DesignError("objectives is empty; name at least one regressor leaf, e.g. objectives=('value',).")
        if len(set(self.objectives)) != len(self.objectives):
            raise DesignError(f"objectives {list(self.objectives)} repeat a name; list each objective once.")
        stray = [m for m in self.minimize if m not in self.objectives]
        if stray:
            raise DesignError(f"minimize names {stray}, which are not objectives {list(self.objectives)}.")
        for name in self.objectives:
            _split(name, "objectives")
        for name in self.constraints:
            _split(name, "constraints")

    @property
    def num_objectives(self) -> int:
        return len(self.objectives)

    @property
    def leaf_keys(self) -> list[str]:
        """Every leaf the objective reads (objectives first), without repeats."""
        keys: list[str] = []
        for name in (*self.objectives, *self.constraints):
            leaf = _split(name, "")[0]
            if leaf not in keys:
                keys.append(leaf)
        return keys

    def validate(self, tree) -> None:
        """Check every named leaf exists with the right kind and index; raises :class:`DesignError`."""
        leaves = tree.config.leaf_specs()
        problems = []
        sizes = set()
        for name in self.objectives:
            leaf, k = _split(name, "objectives")
            spec = leaves.get(leaf)
            if spec is None:
                problems.append(f"objective {name!r} names no leaf of the tree; its leaves are {sorted(leaves)}")
                continue
            if spec.kind != "regressor":
                problems.append(f"objective {name!r} is a {spec.kind} leaf; objectives must be regressor leaves")
                continue
            if k is None and spec.out_dim != 1:
                problems.append(
                    f"objective {name!r} has out_dim={spec.out_dim}; pick one output as "
                    f"'{leaf}:0'..'{leaf}:{spec.out_dim - 1}'"
                )
            if k is not None and k >= spec.out_dim:
                problems.append(f"objective {name!r} asks output {k} but the leaf has out_dim={spec.out_dim}")
            sizes.add(spec.ensemble_size)
        for name in self.constraints:
            leaf, c = _split(name, "constraints")
            spec = leaves.get(leaf)
            if spec is None:
                problems.append(f"constraint {name!r} names no leaf of the tree; its leaves are {sorted(leaves)}")
                continue
            if spec.kind != "classifier":
                problems.append(f"constraint {name!r} is a {spec.kind} leaf; constraints must be classifier leaves")
                continue
            if (1 if c is None else c) >= spec.num_classes:
                problems.append(f"constraint {name!r} asks class {1 if c is None else c} of a {spec.num_classes}-class leaf")
            sizes.add(spec.ensemble_size)
        if len(sizes - {1}) > 1:
            problems.append(
                f"the objective and constraint leaves have ensemble sizes {sorted(sizes)}; give them the same "
                "ensemble_size (or 1, which is shared by every member)"
            )
        if problems:
            raise DesignError("DesignObjective does not fit the tree: " + "; ".join(problems) + ".")

    # ------------------------------------------------------------------------------------- samples
    def samples(self, outputs) -> torch.Tensor:
        """Objective samples ``(E, B, M)`` from a tree output (minimized objectives negated)."""
        columns = []
        for name in self.objectives:
            leaf, k = _split(name, "objectives")
            loc = outputs.leaf_outputs[leaf].loc  # (E, B, O)
            value = loc[..., 0 if k is None else k]
            columns.append(-value if name in self.minimize else value)
        return _stack_members(columns)

    def log_feasibility(self, outputs) -> torch.Tensor | None:
        """``(E, B)`` sum over constraints of ``log p(feasible class)``, or ``None`` without constraints."""
        if not self.constraints:
            return None
        terms = []
        for name in self.constraints:
            leaf, c = _split(name, "constraints")
            logp = torch.log_softmax(outputs.leaf_outputs[leaf].logits.float(), dim=-1)[..., 1 if c is None else c]
            terms.append(logp.clamp(min=math.log(LOG_PROB_FLOOR)))
        return _stack_members(terms).sum(-1)


def _stack_members(columns: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``(E_i, B)`` columns into ``(E, B, len)``, broadcasting single-member leaves."""
    E = max(c.shape[0] for c in columns)
    return torch.stack([c.expand(E, -1) for c in columns], dim=-1).float()


class EnsembleAcquisition:
    """Log expected (hypervolume) improvement with the tree ensemble as posterior samples.

    Args:
        objective: the :class:`DesignObjective`.
        baseline: objective samples of the baseline designs ``(E, N, M)`` (e.g. every evaluated
            feasible design, predicted by the current tree), which set ``best_f`` (one objective) or the
            reference point and Pareto front (several objectives) per member.

    Call it on a tree output to get ``(B,)`` log-acquisition values, differentiable with respect to
    whatever produced the output (token embeddings, trunk features).
    """

    def __init__(self, objective: DesignObjective, baseline: torch.Tensor):
        require("botorch", "design")  # a missing extra is named, not a bare ModuleNotFoundError
        from botorch.acquisition.objective import IdentityMCObjective

        if baseline.dim() != 3 or baseline.shape[-1] != objective.num_objectives or baseline.shape[1] == 0:
            raise DesignError(
                f"baseline samples must be (E, N>0, {objective.num_objectives}); got {tuple(baseline.shape)}. "
                "Predict at least one evaluated design."
            )
        self.objective = objective
        baseline = baseline.detach().double()
        self.num_members = baseline.shape[0]
        if objective.num_objectives == 1:
            from botorch.acquisition.logei import qLogExpectedImprovement

            best_f = baseline[..., 0].max(dim=1).values  # (E,)
            # model=None: we hand botorch the posterior samples ourselves (the identity objective
            # stops it from asking a model how many outputs it has)
            self._ei = qLogExpectedImprovement(model=None, best_f=best_f[:, None], objective=IdentityMCObjective())
            self.best_f = best_f
        else:
            from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
            from botorch.utils.multi_objective.box_decompositions import FastNondominatedPartitioning
            from botorch.utils.multi_objective.hypervolume import infer_reference_point
            from botorch.utils.multi_objective.pareto import is_non_dominated

            flat = baseline.reshape(-1, objective.num_objectives)
            self.ref_point = infer_reference_point(flat[is_non_dominated(flat)])
            self._ehvi = []
            for member in baseline:
                front = member[is_non_dominated(member)]
                partitioning = FastNondominatedPartitioning(ref_point=self.ref_point, Y=front)
                self._ehvi.append(qLogExpectedHypervolumeImprovement(
                    model=None, ref_point=self.ref_point, partitioning=partitioning,
                ))

    def member_log_improvement(self, samples: torch.Tensor) -> torch.Tensor:
        """``(E, B)`` log improvement of each design under each member, from samples ``(E, B, M)``."""
        if samples.shape[0] not in (1, self.num_members):
            raise DesignError(f"samples have {samples.shape[0]} members; the acquisition was built for {self.num_members}.")
        samples = samples.double().expand(self.num_members, -1, -1)
        if self.objective.num_objectives == 1:
            return self._ei._sample_forward(samples)[..., 0]  # obj (E, B, q=1) -> (E, B)
        # each member alone: an mc dimension of 1 (so botorch's mean over samples is the member itself)
        return torch.stack([
            fn._compute_log_qehvi(samples[e][None, :, None, :])  # (1, B, q=1, M) -> (B,)
            for e, fn in enumerate(self._ehvi)
        ])

    def from_samples(self, samples: torch.Tensor, log_feasibility: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` ``log mean_e exp(log_improvement_e + log_feasibility_e)``."""
        member = self.member_log_improvement(samples)
        if log_feasibility is not None:
            member = member + log_feasibility.double().expand_as(member)
        return (torch.logsumexp(member, dim=0) - math.log(member.shape[0])).float()

    def __call__(self, outputs) -> torch.Tensor:
        return self.from_samples(self.objective.samples(outputs), self.objective.log_feasibility(outputs))

"""``NeuralTreeConfig``: the architecture of a NeuralTree, saved as ``config.json`` beside its weights."""

from __future__ import annotations

import copy
from typing import Any

from transformers import PreTrainedConfig

from cortex.models.neural_tree.specs import (
    BranchSpec,
    LeafSpec,
    Problems,
    RootSpec,
    TrunkSpec,
    check_node_name,
    parse_branch,
    parse_leaf,
    parse_root,
    parse_trunk,
)

DEFAULT_ROOTS = {"protein": {"kind": "conv1d", "tokenizer": "protein"}}
DEFAULT_TRUNK = {"kind": "sum"}
DEFAULT_BRANCHES = {"branch": {"kind": "conv1d"}}
DEFAULT_LEAVES = {"regression": {"kind": "regressor", "branch": "branch"}}


class NeuralTreeConfig(PreTrainedConfig):
    """Roots → trunk → branches → leaves, each node a plain dict with a ``kind``.

    ``NeuralTreeConfig()`` is a small valid tree: one protein ``conv1d`` root, a ``sum`` trunk, one
    ``conv1d`` branch and one ``regressor`` leaf. Every node dict is validated when the config is
    made (unknown keys and kinds, ranges, a leaf naming a missing branch or root, a denoising leaf
    whose vocabulary differs from its root's...) and all problems are reported in one
    :class:`~cortex.errors.ConfigError`, each naming its field. Defaults are filled in, so the
    saved ``config.json`` is complete.

    Args:
        roots: name → root dict. ``kind`` is ``conv1d`` | ``transformer`` (built-in, with
            ``tokenizer`` ``protein`` | ``char``) or ``hf`` (``source``: registry name or folder of
            any ``AutoModel``; ``pooling``, ``freeze``, ``hidden_layer``). See
            :mod:`cortex.models.neural_tree.specs` for every field.
        trunk: ``{"kind": "sum" | "concat", "out_dim": ..., "project": ...}``.
        branches: name → ``{"kind": "conv1d" | "mlp" | "transformer", "pooling": "mean" | "max" | "weighted_mean" | "attention", ...}``.
        leaves: name → ``{"kind": "regressor" | "classifier" | "denoising_lm" | "sequence_regressor",
            "branch": ..., "ensemble_size": ..., ...}``.
        initializer_range: std of the normal init of linear and embedding weights.

    Example::

        NeuralTreeConfig(
            roots={"protein": {"kind": "transformer", "tokenizer": "protein", "max_len": 128}},
            branches={"seq": {"kind": "mlp", "pooling": "attention"}},
            leaves={"stability": {"kind": "regressor", "branch": "seq", "ensemble_size": 5},
                    "mlm": {"kind": "denoising_lm", "branch": "seq", "root": "protein"}},
        )
    """

    model_type = "neural_tree"
    # what HF's Trainer leaves out of the predictions it gathers in evaluation: per-node features
    # (ragged across batches); the leaf outputs remain
    keys_to_ignore_at_inference = ["leaf_losses", "root_outputs", "trunk_outputs", "branch_outputs"]

    roots: dict | None = None
    trunk: dict | None = None
    branches: dict | None = None
    leaves: dict | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        problems = Problems()
        roots = copy.deepcopy(DEFAULT_ROOTS if self.roots is None else self.roots)
        trunk = copy.deepcopy(DEFAULT_TRUNK if self.trunk is None else self.trunk)
        branches = copy.deepcopy(DEFAULT_BRANCHES if self.branches is None else self.branches)
        leaves = copy.deepcopy(DEFAULT_LEAVES if self.leaves is None else self.leaves)
        root_specs = _parse_group("roots", roots, parse_root, problems)
        trunk_spec = parse_trunk(trunk, problems)
        branch_specs = _parse_group("branches", branches, parse_branch, problems)
        leaf_specs = _parse_group("leaves", leaves, parse_leaf, problems)
        if not root_specs and isinstance(roots, dict) and not roots:
            problems.add("roots is empty; a tree needs at least one root, e.g. {'protein': {'kind': 'conv1d'}}.")
        if isinstance(leaves, dict) and not leaves:
            problems.add("leaves is empty; a tree needs at least one leaf, e.g. {'y': {'kind': 'regressor', 'branch': ...}}.")
        _check_links(root_specs, trunk_spec, branch_specs, leaf_specs, problems)
        problems.raise_if_any()
        self.roots = {n: s.to_dict() for n, s in root_specs.items()}
        self.trunk = trunk_spec.to_dict()
        self.branches = {n: s.to_dict() for n, s in branch_specs.items()}
        self.leaves = {n: s.to_dict() for n, s in leaf_specs.items()}
        super().__post_init__(**kwargs)

    # typed views ---------------------------------------------------------------------------------
    def root_specs(self) -> dict[str, RootSpec]:
        """Name → typed root spec (validated, defaults filled)."""
        return _view("roots", self.roots, parse_root)

    def trunk_spec(self) -> TrunkSpec:
        problems = Problems()
        spec = parse_trunk(self.trunk, problems)
        problems.raise_if_any()
        return spec

    def branch_specs(self) -> dict[str, BranchSpec]:
        return _view("branches", self.branches, parse_branch)

    def leaf_specs(self) -> dict[str, LeafSpec]:
        return _view("leaves", self.leaves, parse_leaf)

    def trunk_dim(self) -> int:
        """Width of the trunk features: ``trunk.out_dim`` or the widest root."""
        spec = self.trunk_spec()
        return spec.out_dim or max(r.out_dim for r in self.root_specs().values())

    def branch_ensemble_sizes(self) -> dict[str, int]:
        """Branch → number of copies: the largest ``ensemble_size`` among the leaves that read it."""
        sizes = {name: 1 for name in self.branches}
        for leaf in self.leaf_specs().values():
            sizes[leaf.branch] = max(sizes[leaf.branch], leaf.ensemble_size)
        return sizes


def _view(group: str, data: Any, parse) -> dict[str, Any]:
    """Typed specs of one group; a dict edited into an invalid state after construction raises."""
    problems = Problems()
    specs = _parse_group(group, data, parse, problems)
    problems.raise_if_any()
    return specs


def _parse_group(group: str, data: Any, parse, problems: Problems) -> dict[str, Any]:
    if not isinstance(data, dict):
        problems.add(f"{group} must be a dict of name -> node dict; got {type(data).__name__}.")
        return {}
    out = {}
    for name, node in data.items():
        check_node_name(f"{group}.{name}", name, problems)
        spec = parse(name, node, problems)
        if spec is not None:
            out[name] = spec
    return out


def _check_links(
    roots: dict[str, RootSpec], trunk: TrunkSpec, branches: dict[str, BranchSpec],
    leaves: dict[str, LeafSpec], problems: Problems,
) -> None:
    """Cross-node rules: references exist, widths and vocabularies agree."""
    widths = {n: r.out_dim for n, r in roots.items() if r.out_dim}
    if trunk.kind == "sum" and not trunk.project and len(set(widths.values())) > 1:
        problems.add(
            f"trunk.project=False but the roots have different widths {widths}; set trunk.project=True "
            "or give the roots the same out_dim."
        )
    if trunk.out_dim is not None and trunk.kind == "sum" and not trunk.project:
        off = {n: w for n, w in widths.items() if w != trunk.out_dim}
        if off:
            problems.add(f"trunk.out_dim={trunk.out_dim} differs from root widths {off} and trunk.project=False.")
    for name, leaf in leaves.items():
        where = f"leaves.{name}"
        if leaf.branch not in branches:
            problems.add(
                f"{where}.branch={leaf.branch!r} names no branch; branches are {sorted(branches) or 'none'}. "
                f"Add it under branches or point the leaf at an existing one."
            )
        if leaf.root is not None and leaf.root not in roots:
            problems.add(f"{where}.root={leaf.root!r} names no root; roots are {sorted(roots) or 'none'}.")
            continue
        if leaf.kind in ("denoising_lm", "sequence_regressor") and leaf.root is not None and roots[leaf.root].pooled:
            problems.add(
                f"{where} predicts per position but roots.{leaf.root}.pooling={roots[leaf.root].pooling!r} "
                "leaves one vector per example; use pooling='none' for that root."
            )
        if leaf.kind == "denoising_lm" and leaf.root is not None:
            root_vocab = roots[leaf.root].vocab_size
            if root_vocab is None:
                problems.add(f"{where}: roots.{leaf.root} has no known vocab_size, so it cannot have a denoising leaf.")
            elif leaf.vocab_size is not None and leaf.vocab_size != root_vocab:
                problems.add(
                    f"{where}.vocab_size={leaf.vocab_size} does not match roots.{leaf.root} vocabulary of "
                    f"{root_vocab} tokens; remove vocab_size or set it to {root_vocab}."
                )
            else:
                leaf.vocab_size = root_vocab

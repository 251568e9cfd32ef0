"""``NeuralTreeModel``: roots → trunk → branches → leaves as one HF ``PreTrainedModel``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cortex.corruption import CorruptionParams
from cortex.errors import ConfigError, ModelInputError, UnsafeWeightsError
from cortex.models.neural_tree.branches import EnsembleBranch
from cortex.models.neural_tree.configuration import NeuralTreeConfig
from cortex.models.neural_tree.leaves import LEAVES, Leaf
from cortex.models.neural_tree.inputs import TreeInputs
from cortex.models.neural_tree.outputs import BranchOutput, NeuralTreeOutput, RootOutput, TrunkOutput
from cortex.models.neural_tree.remote_code import set_auto_map, write_remote_code
from cortex.models.neural_tree.roots import ROOTS, Root
from cortex.models.neural_tree.tokenizers import find_root_tokenizer, root_tokenizer, tokenizer_dir
from cortex.models.neural_tree.trunks import TRUNKS


def weighted_loss_sum(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """``sum_k weights[k] * losses[k]`` (weight 1 where none is given): the one way cortex combines
    leaf or task losses, in ``forward(targets=...)``, the HF Trainer and the Lightning module alike."""
    weights = weights or {}
    return sum(float(weights.get(name, 1.0)) * loss for name, loss in losses.items())


class NeuralTreePreTrainedModel(PreTrainedModel):
    """HF plumbing shared by NeuralTree models: config class, weight init, safetensors-only loading.

    ``main_input_name`` is ``"inputs"``, the nested ``{root: {"input_ids", "attention_mask"}}``
    batch; :meth:`estimate_tokens` counts the tokens of every root in it, so transformers' FLOP and
    token counts work on a tree.
    """

    config_class = NeuralTreeConfig
    base_model_prefix = "neural_tree"
    main_input_name = "inputs"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, allow_pickle: bool = False, **kwargs):
        """``PreTrainedModel.from_pretrained`` that reads safetensors only unless ``allow_pickle=True``.

        A folder or Hub repo holding only pickle weights (``pytorch_model.bin``, ``.pt``) raises
        :class:`~cortex.errors.UnsafeWeightsError` naming the folder and the flag; so does
        ``use_safetensors=False`` without the flag (it is never silently ignored). With
        ``allow_pickle=True`` transformers' own choice applies (safetensors first, then pickle).
        """
        from cortex.hub.loading import refuse_pickle_only

        if kwargs.get("use_safetensors") is False and not allow_pickle:
            raise UnsafeWeightsError(
                f"use_safetensors=False asks to load pickle weights for {pretrained_model_name_or_path}; cortex "
                "loads pickle only when you also pass allow_pickle=True (CLI: --allow-pickle)."
            )
        # for a Hub repo the check lists its files, which local_files_only forbids
        if os.path.isdir(pretrained_model_name_or_path) or not kwargs.get("local_files_only"):
            refuse_pickle_only(pretrained_model_name_or_path, allow_pickle, "NeuralTree", kwargs.get("revision"))
        if not allow_pickle:
            kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def estimate_tokens(self, input_dict: Mapping) -> int:
        """Tokens in a batch: the ``(B, T)`` positions of every root in ``input_dict["inputs"]``."""
        return TreeInputs(input_dict.get(self.main_input_name) or {}).numel()


class NeuralTreeModel(NeuralTreePreTrainedModel):
    """A multi-task model: one root per input, a shared trunk, branches per task family, leaves per task.

    Attributes:
        roots: ``nn.ModuleDict`` name → :class:`~cortex.models.neural_tree.roots.Root`.
        trunk: the trunk module (``sum`` or ``concat``).
        branches: name → :class:`~cortex.models.neural_tree.branches.EnsembleBranch` (``E`` members).
        leaves: name → :class:`~cortex.models.neural_tree.leaves.Leaf`.

    See :mod:`cortex.models.neural_tree` for the full interface contract.
    """

    def __init__(self, config: NeuralTreeConfig):
        # None unless the caller asked for one (from_pretrained(attn_implementation=...)); PreTrainedModel
        # fills in its own default below, which must not be forced onto backbones that lack it
        requested_attn = config._attn_implementation_internal
        super().__init__(config)
        root_specs = config.root_specs()
        trunk_spec = config.trunk_spec()
        trunk_dim = config.trunk_dim()
        self.trunk_dim = trunk_dim
        self.roots = nn.ModuleDict({name: ROOTS[spec.kind](spec) for name, spec in root_specs.items()})
        self.trunk = TRUNKS[trunk_spec.kind](trunk_spec, root_specs, trunk_dim)
        sizes = config.branch_ensemble_sizes()
        self.branches = nn.ModuleDict(
            {name: EnsembleBranch(spec, trunk_dim, sizes[name]) for name, spec in config.branch_specs().items()}
        )
        branch_dims = {name: b.out_dim for name, b in self.branches.items()}
        self.leaves = nn.ModuleDict(
            {name: LEAVES[spec.kind](spec, branch_dims[spec.branch]) for name, spec in config.leaf_specs().items()}
        )
        self._tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        self.post_init()
        # post_init collects tied weights and no-split modules from direct children only; HF backbones
        # sit deeper (roots.<name>.model), and without their ties a saved lm_head would reload random
        self.all_tied_weights_keys.update(self.get_expanded_tied_weights_keys(all_submodels=True))
        for module in self.modules():
            if isinstance(module, PreTrainedModel) and module is not self:
                self._no_split_modules.update(module._no_split_modules or [])
        if requested_attn is not None:
            # transformers dispatches the choice to every PreTrainedModel inside (the HF roots' backbones);
            # built-in roots and branches always use SDPA, which computes the same attention as eager
            self.set_attn_implementation(requested_attn)

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        leaf_keys: Iterable[str] | None = None,
        corruption: Mapping[str, CorruptionParams] | None = None,
        targets: Mapping[str, torch.Tensor | None] | None = None,
        loss_weights: Mapping[str, float] | None = None,
    ) -> NeuralTreeOutput:
        """Run the tree on tensors the dataloader prepared.

        Args:
            inputs: root name → ``{"input_ids": (B, T) long, "attention_mask": (B, T)}`` or
                ``{"inputs_embeds": (B, T, E), "attention_mask": (B, T)}``. Every root is required.
            leaf_keys: leaves to compute (default: the leaves in ``targets`` if given, else all); only
                their branches run.
            corruption: root name → :class:`~cortex.corruption.CorruptionParams` for the roots to
                corrupt (others run clean).
            targets: leaf name → that leaf's targets (classifier ``(B,)`` ids, regressor ``(B, O)``,
                sequence regressor ``(B, T, O)``; ``None`` for a denoising leaf, whose targets are its
                root's clean ids). Given, the output carries ``loss`` and ``leaf_losses``.
            loss_weights: leaf name → weight of its loss in ``loss`` (default 1 each).

        Returns:
            :class:`NeuralTreeOutput`; leaf outputs have a leading ensemble axis ``E``. ``loss`` is
            ``sum_leaf loss_weights[leaf] * tree.leaves[leaf].loss(...)`` (:meth:`loss`).
        """
        if isinstance(targets, Mapping) and leaf_keys is None:
            leaf_keys = list(targets)
        leaf_keys = self._check_call(inputs, leaf_keys, corruption)
        self._check_targets(targets, loss_weights, leaf_keys)
        root_outputs: dict[str, RootOutput] = {}
        for name, root in self.roots.items():
            params = corruption.get(name) if corruption is not None else None
            root_outputs[name] = root(**inputs[name], corruption=params)
        trunk_outputs = self.trunk(root_outputs)
        branch_outputs, leaf_outputs = self._heads(trunk_outputs, leaf_keys)
        loss = leaf_losses = None
        if targets is not None:
            leaf_losses = {leaf: self._leaf_loss(leaf, leaf_outputs, root_outputs, y) for leaf, y in targets.items()}
            loss = weighted_loss_sum(leaf_losses, loss_weights)
        return NeuralTreeOutput(
            loss=loss, leaf_losses=leaf_losses, root_outputs=root_outputs, trunk_outputs=trunk_outputs,
            branch_outputs=branch_outputs, leaf_outputs=leaf_outputs,
        )

    def call_from_trunk(
        self,
        trunk_features: torch.Tensor,
        leaf_keys: Iterable[str] | None = None,
        attention_mask: torch.Tensor | None = None,
        root_spans: Mapping[str, tuple[int, int]] | None = None,
    ) -> NeuralTreeOutput:
        """Rerun branches and leaves from (perturbed) trunk features ``(B, T, D)``.

        ``attention_mask`` ``(B, T)`` defaults to all positions; ``root_spans`` (from
        ``outputs.trunk_outputs.root_spans``) tells per-position leaves where their root is and
        defaults to every root spanning all ``T`` positions. ``root_outputs`` of the result is empty.
        """
        leaf_keys = self._check_leaf_keys(leaf_keys)
        if trunk_features.dim() != 3 or trunk_features.shape[-1] != self.trunk_dim:
            raise ModelInputError(
                f"trunk_features must be (B, T, {self.trunk_dim}); got {tuple(trunk_features.shape)}."
            )
        B, T = trunk_features.shape[:2]
        mask = torch.ones(B, T, dtype=torch.bool, device=trunk_features.device) if attention_mask is None else attention_mask.bool()
        spans = dict(root_spans) if root_spans is not None else {name: (0, T) for name in self.roots}
        trunk_outputs = TrunkOutput(features=trunk_features, attention_mask=mask, root_spans=spans)
        branch_outputs, leaf_outputs = self._heads(trunk_outputs, leaf_keys)
        return NeuralTreeOutput(
            root_outputs={}, trunk_outputs=trunk_outputs, branch_outputs=branch_outputs, leaf_outputs=leaf_outputs
        )

    def _heads(self, trunk_outputs: TrunkOutput, leaf_keys: list[str]) -> tuple[dict[str, BranchOutput], dict]:
        branch_outputs: dict[str, BranchOutput] = {}
        leaf_outputs = {}
        for name in leaf_keys:
            leaf = self.leaves[name]
            if leaf.branch not in branch_outputs:
                branch_outputs[leaf.branch] = self.branches[leaf.branch](trunk_outputs)
            leaf_outputs[name] = leaf(branch_outputs[leaf.branch], trunk_outputs)
        return branch_outputs, leaf_outputs

    def _check_leaf_keys(self, leaf_keys: Iterable[str] | None) -> list[str]:
        if leaf_keys is None:
            return list(self.leaves.keys())
        keys = [leaf_keys] if isinstance(leaf_keys, str) else list(leaf_keys)
        unknown = [k for k in keys if k not in self.leaves]
        if unknown:
            raise ModelInputError(f"leaf_keys {unknown} are not leaves of this tree; leaves are {list(self.leaves.keys())}.")
        return keys

    def _check_call(self, inputs, leaf_keys, corruption) -> list[str]:
        """Every input check, before any root runs."""
        missing = [n for n in self.roots.keys() if n not in inputs]
        extra = [n for n in inputs if n not in self.roots]
        if missing or extra:
            raise ModelInputError(
                f"inputs must have one entry per root {list(self.roots.keys())}; missing {missing}, unknown {extra}. "
                "Tokenize each root's column with tree.root_tokenizers() (see cortex.data.tokenize_dataset)."
            )
        batch = {name: self.roots[name].validate(name, dict(inputs[name])) for name in self.roots.keys()}
        if len(set(batch.values())) > 1:
            raise ModelInputError(f"Roots have different batch sizes {batch}; collate all roots of an example together.")
        if corruption is not None:
            unknown = [n for n in corruption if n not in self.roots]
            if unknown:
                raise ModelInputError(f"corruption names roots {unknown} that the tree lacks; roots are {list(self.roots.keys())}.")
        return self._check_leaf_keys(leaf_keys)

    def _check_targets(self, targets, loss_weights, leaf_keys: list[str]) -> None:
        if targets is None:
            if loss_weights is not None:
                raise ModelInputError("loss_weights were given without targets; pass targets={leaf: tensor} too.")
            return
        if not isinstance(targets, Mapping) or not targets:
            raise ModelInputError(
                f"targets must map leaf names to target tensors, e.g. {{{next(iter(self.leaves))!r}: y}}; "
                f"got {targets if isinstance(targets, Mapping) else type(targets).__name__}."
            )
        missing = [k for k in targets if k not in leaf_keys]
        if missing:
            raise ModelInputError(
                f"targets name leaves {missing} that this call does not compute (leaf_keys={leaf_keys}); "
                f"leaves are {list(self.leaves.keys())}."
            )
        extra = [k for k in (loss_weights or {}) if k not in targets]
        if extra:
            raise ModelInputError(f"loss_weights name leaves {extra} that have no targets; targets are {list(targets)}.")

    # ------------------------------------------------------------------------- embeddings & losses
    def embed(self, root: str, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T, E)`` of ``root`` for ``input_ids``; feed them back as
        ``inputs[root] = {"inputs_embeds": ..., "attention_mask": ...}`` (e.g. to take gradients)."""
        return self._root(root).embed(input_ids)

    def root_embeddings(self, root: str) -> nn.Module:
        """The token-embedding module of ``root``."""
        return self._root(root).token_embedding

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding of the tree's only root (HF API); several roots raise
        :class:`~cortex.errors.ConfigError` (use :meth:`root_embeddings`)."""
        return self._only_root("get_input_embeddings").token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the token embedding of the tree's only root (HF API, e.g. ``resize_token_embeddings``)."""
        self._only_root("set_input_embeddings").set_token_embedding(value)

    def _only_root(self, method: str) -> Root:
        if len(self.roots) != 1:
            raise ConfigError(
                f"{method}() is defined for single-root trees; this tree has roots {list(self.roots.keys())}. "
                "Use tree.root_embeddings(root) to get one root's token embedding."
            )
        return next(iter(self.roots.values()))

    def _root(self, name: str) -> Root:
        if name not in self.roots:
            raise ModelInputError(f"No root named {name!r}; roots are {list(self.roots.keys())}.")
        return self.roots[name]

    def leaf_loss(
        self, leaf: str, outputs: NeuralTreeOutput, targets: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """``leaves[leaf].loss`` with its root's output filled in (for ``corrupt_frac`` smoothing and denoising)."""
        if leaf not in self.leaves or leaf not in (outputs.leaf_outputs or {}):
            raise ModelInputError(f"Leaf {leaf!r} is not in this output; run forward with it in leaf_keys.")
        return self._leaf_loss(leaf, outputs.leaf_outputs, outputs.root_outputs or {}, targets, **kwargs)

    def _leaf_loss(self, leaf: str, leaf_outputs: Mapping, root_outputs: Mapping, targets, **kwargs) -> torch.Tensor:
        node: Leaf = self.leaves[leaf]
        kwargs.setdefault("root_output", root_outputs.get(node.root) if node.root is not None else None)
        return node.loss(leaf_outputs[leaf], targets, **kwargs)

    def loss(
        self, outputs: NeuralTreeOutput, targets: Mapping[str, torch.Tensor | None],
        loss_weights: Mapping[str, float] | None = None,
    ) -> torch.Tensor:
        """The training loss of ``outputs``: ``sum_leaf loss_weights[leaf] * leaf_loss(leaf, outputs, targets[leaf])``.

        The same definition ``forward(targets=...)`` returns as ``loss`` (and so the HF Trainer
        trains on), and that cortex's tasks and Lightning module call.
        """
        return weighted_loss_sum({leaf: self.leaf_loss(leaf, outputs, y) for leaf, y in targets.items()}, loss_weights)

    def fit_target_standardization(self, leaf: str, targets: torch.Tensor) -> None:
        """Fit the target mean/std of a regression leaf on its training targets (saved with the model)."""
        node = self.leaves[leaf]
        if not hasattr(node, "fit_standardization"):
            raise ModelInputError(f"Leaf {leaf!r} is a {node.kind} leaf; only regression leaves standardize targets.")
        node.fit_standardization(targets)

    # ---------------------------------------------------------------------------------- tokenizers
    def root_tokenizers(self) -> dict[str, PreTrainedTokenizerBase]:
        """Root name → tokenizer: attached or saved copies first, else built-in / HF-source ones.

        Raises :class:`~cortex.errors.ConfigError` for an HF root whose source has no tokenizer and
        that has none attached (:meth:`set_root_tokenizer`).
        """
        specs = self.config.root_specs()
        missing = [name for name in specs if name not in self._tokenizers]
        folder = self._own_folder() if missing else None
        for name in missing:
            self._tokenizers[name] = root_tokenizer(name, specs[name], folder)
        return {name: self._tokenizers[name] for name in specs}

    def _own_folder(self) -> str | None:
        """The folder this tree was loaded from: a local folder, or the Hub repo's tokenizer files
        (``tokenizer_*/``) fetched through huggingface_hub's cache; ``None`` if neither is available."""
        source = self.config.name_or_path or None
        if source is None or os.path.isdir(source):
            return source
        if "/" not in source:
            return None
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            return snapshot_download(source, allow_patterns=["tokenizer_*/*"])
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
            return None

    def set_root_tokenizer(self, root: str, tokenizer: PreTrainedTokenizerBase) -> None:
        """Attach a tokenizer to ``root`` (saved by :meth:`save_pretrained`)."""
        self._root(root)
        self._tokenizers[root] = tokenizer

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """HF ``save_pretrained`` (safetensors) plus each root's tokenizer in ``tokenizer_<root>/`` and the
        ``auto_map`` module that lets ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` load
        the tree in a process that never ran ``import cortex``.

        ``safe_serialization=False`` raises :class:`~cortex.errors.UnsafeWeightsError`: trees are
        written as safetensors only.
        """
        if kwargs.pop("safe_serialization", True) is False:
            raise UnsafeWeightsError(
                "save_pretrained(safe_serialization=False) would ask for pickle weights; NeuralTrees are saved as "
                "safetensors only. Drop the argument."
            )
        set_auto_map(self.config)
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        write_remote_code(save_directory)
        specs = self.config.root_specs()
        folder = self._own_folder() if any(n not in self._tokenizers for n in specs) else None
        for name, spec in specs.items():
            tok = self._tokenizers.get(name) or find_root_tokenizer(name, spec, folder)
            if tok is not None:
                tok.save_pretrained(tokenizer_dir(save_directory, name))

    @classmethod
    def from_pretrained_roots(
        cls,
        config: NeuralTreeConfig,
        *,
        allow_pickle: bool = False,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        **kwargs,
    ) -> "NeuralTreeModel":
        """A new tree whose HF roots hold their pretrained weights (from each root's ``source``).

        ``NeuralTreeModel(config)`` initialises every node randomly, as HF models built from a config
        do; this loads the backbones' own weights (safetensors only, no network) into HF roots. A
        source folder with only pickle weights raises :class:`~cortex.errors.UnsafeWeightsError`
        unless ``allow_pickle=True``. ``dtype`` casts the whole tree; ``attn_implementation``
        (``"eager"``, ``"sdpa"``...) is set on every HF backbone.
        """
        from transformers import AutoModel

        from cortex.hub.loading import refuse_pickle_only
        from cortex.hub.registry import resolve_model_path

        model = cls(config, **kwargs)
        for name, spec in config.root_specs().items():
            if spec.builtin:
                continue
            path = resolve_model_path(spec.source)
            refuse_pickle_only(path, allow_pickle, f"roots.{name}.source")
            pretrained = AutoModel.from_pretrained(
                path, trust_remote_code=spec.trust_remote_code, use_safetensors=None if allow_pickle else True
            )
            model.roots[name].model.load_state_dict(pretrained.state_dict())
            tok = find_root_tokenizer(name, spec)
            if tok is not None:
                model._tokenizers[name] = tok
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        return model.to(dtype) if dtype is not None else model

    # ------------------------------------------------------------------------------------- HF bits
    @property
    def dummy_inputs(self) -> dict[str, dict[str, torch.Tensor]]:
        """A small valid batch: 2 examples of 7 tokens per root (ids of ordinary tokens)."""
        out = {}
        for name, root in self.roots.items():
            allowed = torch.nonzero(root.corruption.corruptible).flatten()
            length = min(7, root.max_len or 7)
            ids = allowed[torch.arange(2 * length).reshape(2, length) % allowed.numel()]
            out[name] = {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids, device=self.device)}
        return out

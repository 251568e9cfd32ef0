"""``NeuralTreeModel``: roots → trunk → branches → leaves as one HF ``PreTrainedModel``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cortex.corruption import CorruptionParams
from cortex.errors import ModelInputError
from cortex.models.neural_tree.branches import EnsembleBranch
from cortex.models.neural_tree.configuration import NeuralTreeConfig
from cortex.models.neural_tree.leaves import LEAVES, Leaf
from cortex.models.neural_tree.outputs import BranchOutput, NeuralTreeOutput, RootOutput, TrunkOutput
from cortex.models.neural_tree.roots import ROOTS, Root
from cortex.models.neural_tree.tokenizers import find_root_tokenizer, root_tokenizer, tokenizer_dir
from cortex.models.neural_tree.trunks import TRUNKS


class NeuralTreePreTrainedModel(PreTrainedModel):
    """HF plumbing shared by NeuralTree models: config class and weight init."""

    config_class = NeuralTreeConfig
    base_model_prefix = "neural_tree"
    main_input_name = "inputs"
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Conv1d):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


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

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        leaf_keys: Iterable[str] | None = None,
        corruption: Mapping[str, CorruptionParams] | None = None,
    ) -> NeuralTreeOutput:
        """Run the tree on tensors the dataloader prepared.

        Args:
            inputs: root name → ``{"input_ids": (B, T) long, "attention_mask": (B, T)}`` or
                ``{"inputs_embeds": (B, T, E), "attention_mask": (B, T)}``. Every root is required.
            leaf_keys: leaves to compute (default all); only their branches run.
            corruption: root name → :class:`~cortex.corruption.CorruptionParams` for the roots to
                corrupt (others run clean).

        Returns:
            :class:`NeuralTreeOutput`; leaf outputs have a leading ensemble axis ``E``.
        """
        leaf_keys = self._check_call(inputs, leaf_keys, corruption)
        root_outputs: dict[str, RootOutput] = {}
        for name, root in self.roots.items():
            params = corruption.get(name) if corruption is not None else None
            root_outputs[name] = root(**inputs[name], corruption=params)
        trunk_outputs = self.trunk(root_outputs)
        branch_outputs, leaf_outputs = self._heads(trunk_outputs, leaf_keys)
        return NeuralTreeOutput(root_outputs, trunk_outputs, branch_outputs, leaf_outputs)

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
        return NeuralTreeOutput({}, trunk_outputs, branch_outputs, leaf_outputs)

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

    # ------------------------------------------------------------------------- embeddings & losses
    def embed(self, root: str, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T, E)`` of ``root`` for ``input_ids``; feed them back as
        ``inputs[root] = {"inputs_embeds": ..., "attention_mask": ...}`` (e.g. to take gradients)."""
        return self._root(root).embed(input_ids)

    def root_embeddings(self, root: str) -> nn.Module:
        """The token-embedding module of ``root``."""
        return self._root(root).token_embedding

    def _root(self, name: str) -> Root:
        if name not in self.roots:
            raise ModelInputError(f"No root named {name!r}; roots are {list(self.roots.keys())}.")
        return self.roots[name]

    def leaf_loss(
        self, leaf: str, outputs: NeuralTreeOutput, targets: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """``leaves[leaf].loss`` with its root's output filled in (for ``corrupt_frac`` smoothing and denoising)."""
        if leaf not in self.leaves or leaf not in outputs.leaf_outputs:
            raise ModelInputError(f"Leaf {leaf!r} is not in this output; run forward with it in leaf_keys.")
        node: Leaf = self.leaves[leaf]
        root_output = outputs.root_outputs.get(node.root) if node.root is not None else None
        kwargs.setdefault("root_output", root_output)
        return node.loss(outputs.leaf_outputs[leaf], targets, **kwargs)

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
        """HF ``save_pretrained`` plus each root's tokenizer in ``tokenizer_<root>/`` (roots that have one)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        specs = self.config.root_specs()
        folder = self._own_folder() if any(n not in self._tokenizers for n in specs) else None
        for name, spec in specs.items():
            tok = self._tokenizers.get(name) or find_root_tokenizer(name, spec, folder)
            if tok is not None:
                tok.save_pretrained(tokenizer_dir(save_directory, name))

    @classmethod
    def from_pretrained_roots(cls, config: NeuralTreeConfig, **kwargs) -> "NeuralTreeModel":
        """A new tree whose HF roots hold their pretrained weights (from each root's ``source``).

        ``NeuralTreeModel(config)`` initialises every node randomly, as HF models built from a config
        do; this loads the backbones' own weights (safetensors only, no network) into HF roots.
        """
        from transformers import AutoModel

        from cortex.hub.registry import resolve_model_path

        model = cls(config, **kwargs)
        for name, spec in config.root_specs().items():
            if spec.builtin:
                continue
            path = resolve_model_path(spec.source)
            pretrained = AutoModel.from_pretrained(path, trust_remote_code=spec.trust_remote_code, use_safetensors=True)
            model.roots[name].model.load_state_dict(pretrained.state_dict())
            tok = find_root_tokenizer(name, spec)
            if tok is not None:
                model._tokenizers[name] = tok
        return model

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

"""The pipeline every root shares: ids → token embedding → corruption → kind-specific encoder.

A root kind only says how to embed ids (``token_embedding``) and how to encode embeddings
(``encode``); corruption, input checks and the :class:`RootOutput` are the same for all kinds.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from cortex.corruption import CorruptionLayer, CorruptionParams, NoiseSchedule, build_substitution
from cortex.errors import ModelInputError
from cortex.models.neural_tree.outputs import RootOutput
from cortex.models.neural_tree.specs import RootSpec

INPUT_KEYS = ("input_ids", "attention_mask", "inputs_embeds")


class Root(nn.Module, abc.ABC):
    """Base of all roots. Subclasses provide ``token_embedding`` and ``encode``.

    Inputs (one dict per root, prepared by the dataloader): exactly one of ``input_ids`` ``(B, T)``
    or ``inputs_embeds`` ``(B, T, E)``, and ``attention_mask`` ``(B, T)`` (1 = real token).
    """

    def __init__(self, spec: RootSpec, vocab: dict[str, int] | None = None):
        super().__init__()
        self.kind = spec.kind
        self.vocab_size = spec.vocab_size
        self.max_len = spec.limit
        self.pad_token_id = spec.pad_token_id
        self.mask_token_id = spec.mask_token_id
        # tables are built on the CPU explicitly: from_pretrained constructs the model under a meta device
        corruptible = torch.ones(self.vocab_size or 0, dtype=torch.bool, device="cpu")
        special = [i for i in spec.special_token_ids if 0 <= i < len(corruptible)]
        corruptible[special] = False
        cspec = spec.corruption_spec
        self.corruption = CorruptionLayer(
            corruptible,
            self.mask_token_id,
            build_substitution(cspec.substitution, vocab or {}, self.vocab_size or 0, corruptible),
            gaussian_scale=cspec.gaussian_scale,
            kind=cspec.kind,
        )
        # a plain object, not a module: the schedule holds no weights and is rebuilt from the config
        self.schedule = NoiseSchedule(cspec.schedule, cspec.num_steps)

    @property
    @abc.abstractmethod
    def token_embedding(self) -> nn.Module:
        """The module mapping ids ``(B, T)`` to embeddings ``(B, T, E)``."""

    @abc.abstractmethod
    def set_token_embedding(self, value: nn.Module) -> None:
        """Replace the token embedding (``tree.set_input_embeddings`` on a single-root tree)."""

    @property
    def embedding_dim(self) -> int:
        return self.token_embedding.weight.shape[-1]

    @abc.abstractmethod
    def encode(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(B, T_r, D)`` and their mask ``(B, T_r)`` from embeddings ``(B, T, E)``."""

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, T, E)`` of ``input_ids`` ``(B, T)``, differentiable w.r.t. the table."""
        return self.token_embedding(input_ids)

    def validate(self, name: str, inputs: dict[str, torch.Tensor]) -> int:
        """Check one root's input dict before any heavy work; returns the batch size."""
        unknown = sorted(set(inputs) - set(INPUT_KEYS))
        if unknown:
            raise ModelInputError(
                f"inputs[{name!r}] has unexpected keys {unknown}; a root takes {', '.join(INPUT_KEYS)}."
            )
        ids, embeds, mask = inputs.get("input_ids"), inputs.get("inputs_embeds"), inputs.get("attention_mask")
        if (ids is None) == (embeds is None):
            raise ModelInputError(
                f"inputs[{name!r}] must hold exactly one of input_ids or inputs_embeds; get token embeddings "
                f"with tree.embed({name!r}, input_ids) if you need to feed embeddings."
            )
        if ids is not None:
            if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
                raise ModelInputError(
                    f"inputs[{name!r}]['input_ids'] must be an integer tensor (B, T); got {tuple(ids.shape)} "
                    f"{ids.dtype}. Tokenize with tree.root_tokenizers()[{name!r}] and pad with the collator."
                )
            shape = tuple(ids.shape)
        else:
            if embeds.dim() != 3 or embeds.shape[-1] != self.embedding_dim:
                raise ModelInputError(
                    f"inputs[{name!r}]['inputs_embeds'] must be (B, T, {self.embedding_dim}); got {tuple(embeds.shape)}."
                )
            shape = tuple(embeds.shape[:2])
        if mask is not None and tuple(mask.shape) != shape:
            raise ModelInputError(
                f"inputs[{name!r}]['attention_mask'] has shape {tuple(mask.shape)} but the tokens are {shape}."
            )
        if self.max_len is not None and shape[1] > self.max_len:
            raise ModelInputError(
                f"inputs[{name!r}] has sequences of {shape[1]} tokens but root {name!r} takes at most "
                f"{self.max_len}; truncate or filter longer sequences when tokenizing (max_length={self.max_len})."
            )
        # value checks read the data, which a compiled graph must not branch on; the data pipeline
        # guarantees them there, eager calls check here
        if ids is not None and ids.numel() and not torch.compiler.is_compiling():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or (self.vocab_size is not None and hi >= self.vocab_size):
                raise ModelInputError(
                    f"inputs[{name!r}]['input_ids'] holds ids in [{lo}, {hi}] but root {name!r} has a vocabulary of "
                    f"{self.vocab_size}; tokenize with this root's tokenizer (tree.root_tokenizers()[{name!r}])."
                )
        return shape[0]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        corruption: CorruptionParams | None = None,
    ) -> RootOutput:
        embeds = self.embed(input_ids) if input_ids is not None else inputs_embeds  # (B, T, E)
        B, T = embeds.shape[:2]
        mask = attention_mask.bool() if attention_mask is not None else torch.ones(B, T, dtype=torch.bool, device=embeds.device)
        if corruption is not None:
            c = self.corruption(embeds, input_ids, self.embed, mask, corruption)
            embeds, corrupted_ids, is_corrupted, frac = c.embeddings, c.corrupted_ids, c.is_corrupted, c.frac
        else:
            corrupted_ids = input_ids
            is_corrupted = torch.zeros(B, T, dtype=torch.bool, device=embeds.device)
            frac = torch.zeros(B, device=embeds.device)
        features, feature_mask = self.encode(embeds, mask)
        return RootOutput(
            features=features,
            attention_mask=feature_mask,
            token_embeddings=embeds,
            input_ids=input_ids,
            corrupted_ids=corrupted_ids,
            is_corrupted=is_corrupted,
            corrupt_frac=frac,
            input_mask=mask,
        )

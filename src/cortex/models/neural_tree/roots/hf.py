"""A root made of any HF ``AutoModel`` encoder or decoder, rebuilt from the config saved in the tree.

The backbone is built with ``AutoModel.from_config`` from ``spec.backbone_config`` (captured from
``source`` when the tree config was made), so a saved tree loads with its own safetensors only: the
original folder or registry entry is not needed, and nothing is fetched from the network.
Pretrained backbone weights are copied in by :meth:`NeuralTreeModel.from_pretrained_roots`.
"""

from __future__ import annotations

import torch
from torch import nn

from cortex.errors import ConfigError
from cortex.models.neural_tree.roots.base import Root
from cortex.models.neural_tree.specs import HFRootSpec
from cortex.models.pooling import masked_mean


def _pool_none(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return h, mask


def _pool_mean(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return masked_mean(h, mask, keepdim=True), torch.ones(h.shape[0], 1, dtype=torch.bool, device=h.device)


def _pool_cls(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return h[:, :1], torch.ones(h.shape[0], 1, dtype=torch.bool, device=h.device)


def _pool_last(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # last real token of right-padded rows: what a decoder has read the whole input at
    last = (mask.long().sum(1) - 1).clamp(min=0)
    pooled = h[torch.arange(h.shape[0], device=h.device), last][:, None]
    return pooled, torch.ones(h.shape[0], 1, dtype=torch.bool, device=h.device)


HF_POOLING = {"none": _pool_none, "mean": _pool_mean, "cls": _pool_cls, "last": _pool_last}


class HFRoot(Root):
    """Any HF backbone as a root; features are ``hidden_states[hidden_layer]``, optionally pooled.

    Attributes:
        model: the backbone (``AutoModel.from_config``), with its own HF submodule layout.
    """

    def __init__(self, spec: HFRootSpec):
        super().__init__(spec)
        from transformers import AutoConfig, AutoModel

        backbone = dict(spec.backbone_config or {})
        model_type = backbone.pop("model_type", None)
        try:
            cfg = AutoConfig.for_model(model_type, **backbone)
        except ValueError as e:
            raise ConfigError(
                f"HF root backbone has model_type={model_type!r}, which transformers does not know ({e}). "
                "Install the library that defines it, or use a different source."
            ) from e
        # the backbone config carries the dtype it was saved in; the tree's own dtype wins, which is the
        # default dtype while from_pretrained(dtype=...) builds the tree, so the whole tree has one dtype
        self.model = AutoModel.from_config(cfg, trust_remote_code=spec.trust_remote_code, dtype=torch.get_default_dtype())
        self.hidden_layer = spec.hidden_layer
        self.freeze = spec.freeze
        self.pool = HF_POOLING[spec.pooling]
        if self.freeze:
            self.model.requires_grad_(False)

    @property
    def token_embedding(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_token_embedding(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def train(self, mode: bool = True) -> "HFRoot":
        super().train(mode)
        if self.freeze:
            self.model.eval()  # a frozen backbone is a fixed feature map: no dropout noise either
        return self

    def encode(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(
            inputs_embeds=embeddings, attention_mask=attention_mask.long(), output_hidden_states=True, return_dict=True
        )
        if self.hidden_layer == -1:
            # decoders exposed through AutoModel may be *ForCausalLM classes without last_hidden_state
            last = getattr(out, "last_hidden_state", None)
            h = last if last is not None else out.hidden_states[-1]
        else:
            h = out.hidden_states[self.hidden_layer]
        return self.pool(h, attention_mask)

"""``TreeInputs``: the nested ``{root: {"input_ids", "attention_mask"}}`` batch, as HF's Trainer can count it."""

from __future__ import annotations

import torch


class TreeInputs(dict):
    """``root → {"input_ids": (B, T), "attention_mask": (B, T)}`` (or ``inputs_embeds``), a plain dict that
    also answers :meth:`numel`.

    A tree's ``main_input_name`` is ``"inputs"``; transformers' Trainer estimates FLOPs and counts
    tokens with ``batch[main_input_name].numel()``, which a nested dict lacks. Collators that feed
    the Trainer wrap their inputs in this class (the Trainer keeps Mapping types when it moves a
    batch to the device); ``forward`` takes any mapping.
    """

    def numel(self) -> int:
        """Token positions over all roots: ``sum_root B * T_root``."""
        total = 0
        for root_inputs in self.values():
            ids = root_inputs.get("input_ids")
            total += (ids if ids is not None else root_inputs["inputs_embeds"][..., 0]).numel()
        return total

    def to(self, device: torch.device | str) -> "TreeInputs":
        """A copy with every tensor on ``device``."""
        return TreeInputs({root: {k: v.to(device) for k, v in d.items()} for root, d in self.items()})

"""Qwen2, Qwen2.5 and Qwen3 causal LMs through transformers."""

from __future__ import annotations

from typing import Any

from torch import nn

from cortex.hub.families import FamilyAdapter, register_family, stream_generate


@register_family
class QwenFamily(FamilyAdapter):
    name = "qwen"
    model_types = ("qwen2", "qwen3")
    task = "causal_lm"
    description = "Qwen2 / Qwen2.5 / Qwen3 causal LMs (transformers AutoModelForCausalLM)"

    def auto_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.model.layers)

    def generate(self, model, tokenizer, prompt, settings, on_text=None) -> str:
        return stream_generate(model, tokenizer, prompt, settings, on_text)

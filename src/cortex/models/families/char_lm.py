"""cortex's built-in char-level causal transformer (``cortex_char_lm``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from cortex.hub.families import FamilyAdapter, register_family, stream_generate


@register_family
class CharLMFamily(FamilyAdapter):
    name = "char_lm"
    model_types = ("cortex_char_lm",)
    task = "causal_lm"
    description = "cortex's built-in char-level causal transformer, trainable from scratch"

    def auto_class(self) -> Any:
        from transformers import AutoModelForCausalLM  # cortex_char_lm is registered by cortex.models.families

        return AutoModelForCausalLM

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.transformer.layers)

    def generate(self, model, tokenizer, prompt, settings, on_text=None) -> str:
        return stream_generate(model, tokenizer, prompt, settings, on_text)

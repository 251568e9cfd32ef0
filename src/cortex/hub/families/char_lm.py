"""cortex's built-in char-level causal transformer (``cortex_char_lm``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from cortex.hub.families.base import FamilyAdapter, stream_generate


class CharLMFamily(FamilyAdapter):
    name = "char_lm"
    model_types = ("cortex_char_lm",)
    task = "causal_lm"
    description = "cortex's built-in char-level causal transformer, trainable from scratch"

    def auto_class(self) -> Any:
        import cortex.models  # noqa: F401  (registers the model type)
        from transformers import AutoModelForCausalLM

        cortex.models.register_auto_classes()
        return AutoModelForCausalLM

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.transformer.layers)

    def generate(self, model, tokenizer, prompt, settings, on_text=None) -> str:
        return stream_generate(model, tokenizer, prompt, settings, on_text)

"""cortex's own HF model types. Importing this module registers them with the Auto classes."""

from __future__ import annotations

_REGISTERED = False


def register_auto_classes() -> None:
    """Register cortex model types with ``AutoConfig``/``AutoModel``/``AutoModelForCausalLM`` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from cortex.models.char_lm import CharLMConfig, CharLMForCausalLM
    from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel

    AutoConfig.register(CharLMConfig.model_type, CharLMConfig, exist_ok=True)
    AutoModelForCausalLM.register(CharLMConfig, CharLMForCausalLM, exist_ok=True)
    AutoModel.register(CharLMConfig, CharLMForCausalLM, exist_ok=True)
    AutoConfig.register(NeuralTreeConfig.model_type, NeuralTreeConfig, exist_ok=True)
    AutoModel.register(NeuralTreeConfig, NeuralTreeModel, exist_ok=True)
    _REGISTERED = True

"""The built-in char-level causal transformer: a small GPT trainable from scratch."""

from cortex.models.char_lm.configuration import CharLMConfig
from cortex.models.char_lm.modeling import CharLMForCausalLM

__all__ = ["CharLMConfig", "CharLMForCausalLM"]

"""Roots: one per input. Built from a config string through :data:`ROOTS`."""

from cortex.models.neural_tree.roots.base import INPUT_KEYS, Root
from cortex.models.neural_tree.roots.builtin import Conv1dRoot, TransformerRoot, builtin_vocab_map
from cortex.models.neural_tree.roots.hf import HFRoot

ROOTS: dict[str, type[Root]] = {"conv1d": Conv1dRoot, "transformer": TransformerRoot, "hf": HFRoot}

__all__ = ["INPUT_KEYS", "ROOTS", "Conv1dRoot", "HFRoot", "Root", "TransformerRoot", "builtin_vocab_map"]

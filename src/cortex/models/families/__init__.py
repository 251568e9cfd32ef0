"""Family adapters: how cortex loads, inspects and generates with each kind of HF model.

Each module defines one :class:`~cortex.hub.families.FamilyAdapter` subclass and registers it with
:func:`~cortex.hub.families.register_family`; the registry in :mod:`cortex.hub.families` imports
the built-in ones on first lookup. Importing this package also registers cortex's own model types
(``cortex_char_lm``, ``neural_tree``) with transformers' Auto classes, which the families load through.
"""

from __future__ import annotations

from cortex.models import register_auto_classes
from cortex.models.families.char_lm import CharLMFamily
from cortex.models.families.encoder import EncoderFamily
from cortex.models.families.qwen import QwenFamily

register_auto_classes()

__all__ = ["CharLMFamily", "EncoderFamily", "QwenFamily"]

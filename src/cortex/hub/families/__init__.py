"""Family adapters, registered by name. A new family is one module here plus one line in FAMILIES."""

from __future__ import annotations

import os
from typing import Any

from cortex.errors import UnsupportedArchitectureError, closest
from cortex.hub.families.base import FamilyAdapter, GenerationSettings, stream_generate
from cortex.hub.families.char_lm import CharLMFamily
from cortex.hub.families.encoder import EncoderFamily
from cortex.hub.families.qwen import QwenFamily

FAMILIES: dict[str, FamilyAdapter] = {f.name: f for f in (QwenFamily(), EncoderFamily(), CharLMFamily())}


def get_family(name: str) -> FamilyAdapter:
    """The adapter registered as ``name``."""
    if name not in FAMILIES:
        near = closest(name, FAMILIES)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise UnsupportedArchitectureError(
            f"Unknown family {name!r}.{hint} Known families: {', '.join(FAMILIES)} (cortex models families)."
        )
    return FAMILIES[name]


def family_for_config(config: Any) -> FamilyAdapter:
    """The adapter whose ``model_types`` include ``config.model_type``."""
    for fam in FAMILIES.values():
        if fam.matches(config):
            return fam
    mt = getattr(config, "model_type", None)
    supported = "; ".join(f"{f.name}: {', '.join(f.model_types)}" for f in FAMILIES.values())
    raise UnsupportedArchitectureError(
        f"Architecture model_type={mt!r} is not supported. Supported families — {supported}. "
        "Add a family module under cortex/hub/families/ to support it."
    )


def family_for_folder(path: str | os.PathLike, trust_remote_code: bool = False) -> FamilyAdapter:
    """Read ``config.json`` in ``path`` and pick its family."""
    from transformers import AutoConfig

    import cortex.models

    cortex.models.register_auto_classes()
    return family_for_config(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))


__all__ = [
    "FAMILIES",
    "FamilyAdapter",
    "GenerationSettings",
    "family_for_config",
    "family_for_folder",
    "get_family",
    "stream_generate",
]

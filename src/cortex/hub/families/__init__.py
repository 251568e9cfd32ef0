"""The family registry: adapters registered by name, found by name or by a config's ``model_type``.

The adapters themselves live with the models (:mod:`cortex.models.families`) and register
themselves with :func:`register_family` when their module is imported. As transformers' Auto
classes do with their model families, this registry names the built-in modules and imports them on
first lookup, so ``hub`` never imports ``models`` and a new family is one module under
``cortex/models/families/`` (plus one line below, or an ``import`` of the user's own module).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, TypeVar

from cortex.errors import UnsupportedArchitectureError, closest
from cortex.hub.families.base import FamilyAdapter, GenerationSettings, stream_generate

# family name -> module that defines and registers it (imported on first lookup)
BUILTIN_FAMILY_MODULES: dict[str, str] = {
    "qwen": "cortex.models.families.qwen",
    "encoder": "cortex.models.families.encoder",
    "char_lm": "cortex.models.families.char_lm",
}
_REGISTRY: dict[str, FamilyAdapter] = {}

A = TypeVar("A", bound=type)


def register_family(cls: A) -> A:
    """Class decorator: register an instance of adapter class ``cls`` under ``cls.name``."""
    _REGISTRY[cls.name] = cls()
    return cls


def families() -> dict[str, FamilyAdapter]:
    """Every registered adapter by name (the built-in ones are imported on first call)."""
    for module in BUILTIN_FAMILY_MODULES.values():
        importlib.import_module(module)
    builtin = {name: _REGISTRY[name] for name in BUILTIN_FAMILY_MODULES}  # listed in this order
    return {**builtin, **_REGISTRY}


def get_family(name: str) -> FamilyAdapter:
    """The adapter registered as ``name``."""
    known = families()
    if name not in known:
        near = closest(name, known)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise UnsupportedArchitectureError(
            f"Unknown family {name!r}.{hint} Known families: {', '.join(known)} (cortex models families)."
        )
    return known[name]


def family_for_config(config: Any) -> FamilyAdapter:
    """The adapter whose ``model_types`` include ``config.model_type``."""
    known = families()
    for fam in known.values():
        if fam.matches(config):
            return fam
    mt = getattr(config, "model_type", None)
    supported = "; ".join(f"{f.name}: {', '.join(f.model_types)}" for f in known.values())
    raise UnsupportedArchitectureError(
        f"Architecture model_type={mt!r} is not supported. Supported families — {supported}. "
        "Add a family module under cortex/models/families/ to support it."
    )


def family_for_folder(path: str | os.PathLike, trust_remote_code: bool = False) -> FamilyAdapter:
    """Read ``config.json`` in ``path`` and pick its family."""
    families()  # the built-in families register cortex's own model types with AutoConfig
    from transformers import AutoConfig

    return family_for_config(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))


__all__ = [
    "BUILTIN_FAMILY_MODULES",
    "FamilyAdapter",
    "GenerationSettings",
    "families",
    "family_for_config",
    "family_for_folder",
    "get_family",
    "register_family",
    "stream_generate",
]

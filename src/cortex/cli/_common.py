"""Helpers shared by CLI modules: console, registry from --home, human sizes."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)


def registry():
    """The registry at ``--home`` / ``$CORTEX_HOME`` / ``~/.cortex`` (the root callback exports --home)."""
    from cortex.hub.registry import Registry

    return Registry()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"

"""Helpers shared by CLI modules: console, registry from --home, human sizes, plain tables."""

from __future__ import annotations

import sys
from collections.abc import Sequence

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


def print_columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a left-aligned, space-separated table (the ``ollama list`` look) in one write.

    Plain text rather than a rich ``Table``: cells are never truncated or wrapped (names must stay
    copyable), and 1,000 rows print in milliseconds instead of seconds.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    sys.stdout.write("\n".join([line(headers), *map(line, rows)]) + "\n")
    sys.stdout.flush()

"""One registry entry: what a thing is, where it came from, and the files that make it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

KINDS = ("model", "tree", "lens_pack", "concept_pack", "router")


@dataclass
class RegistryEntry:
    """Metadata of one registry entry, stored as ``metadata.json`` in its folder and in the index.

    ``source`` is ``hf://<repo>@<commit>`` for Hub imports, an absolute local path, or ``custom``
    for things cortex made (trained trees, fine-tunes, packs). ``files`` maps each relative file
    path to its sha256. ``parents`` lists every entry this one was built from (roots of a tree,
    the model and concept pack of a lens pack); ``fine_tuned_from`` is the single parent of a
    fine-tune. ``extra`` holds kind-specific metadata (run settings, final loss, metrics).
    """

    name: str
    kind: str
    source: str
    model_id: str | None = None
    family: str | None = None
    revision: str | None = None
    created_at: str = ""
    fine_tuned_from: str | None = None
    parents: list[str] = field(default_factory=list)
    license: str | None = None
    license_accepted: bool = False
    size_bytes: int = 0
    files: dict[str, str] = field(default_factory=dict)
    file_stats: dict[str, list[int]] = field(default_factory=dict)  # rel path -> [size, mtime_ns]
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RegistryEntry":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def all_parents(self) -> list[str]:
        """``fine_tuned_from`` followed by the other parents, without repeats."""
        out = [self.fine_tuned_from] if self.fine_tuned_from else []
        return out + [p for p in self.parents if p not in out]

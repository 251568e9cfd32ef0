"""cortex's own concept-pack format, and concept packs as registry entries.

Format (documented in docs/packs.md)::

    concept_pack.json   # {"format": "cortex.concept_pack", "format_version": 1, "name", "version",
                        #  "description", "source", "license", "concepts_file": "concepts.jsonl",
                        #  "n_concepts", "n_with_examples"}
    concepts.jsonl      # one Concept per line (term, layer, domain, definition, parents, children,
                        #  aliases, lemmas, synsets, positive_examples, negative_examples, opposites,
                        #  related, safety, extra)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cortex.errors import InvalidNameError, PackError
from cortex.hub.entry import RegistryEntry
from cortex.hub.paths import safe_join, validate_name
from cortex.hub.registry import Registry, atomic_write_text
from cortex.lenses.concepts.hatcat import is_hatcat_pack, read_hatcat_pack
from cortex.lenses.concepts.model import Concept, ConceptPack

FORMAT = "cortex.concept_pack"
FORMAT_VERSION = 1
MANIFEST = "concept_pack.json"


def write_concept_pack(pack: ConceptPack, folder: str | os.PathLike) -> Path:
    """Write ``pack`` in cortex format into ``folder`` (each file atomically); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(json.dumps(c.to_dict(), ensure_ascii=False) for c in pack) + "\n"
    atomic_write_text(folder / "concepts.jsonl", lines)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": pack.name, "version": pack.version,
        "description": pack.description, "source": pack.source, "license": pack.license,
        "concepts_file": "concepts.jsonl", "n_concepts": len(pack),
        "n_with_examples": len(pack.with_examples()),
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    return folder


def read_cortex_pack(folder: str | os.PathLike) -> ConceptPack:
    """Read a cortex-format concept pack folder."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PackError(f"{folder / MANIFEST} is missing or not JSON ({e}); it is not a cortex concept pack.") from e
    if manifest.get("format") != FORMAT:
        raise PackError(f"{folder / MANIFEST} has format={manifest.get('format')!r}; expected {FORMAT!r}.")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise PackError(
            f"Concept pack {folder} uses format version {manifest['format_version']}, newer than this cortex "
            f"reads ({FORMAT_VERSION}). Upgrade cortex."
        )
    try:
        concepts_path = safe_join(folder, manifest.get("concepts_file", "concepts.jsonl"))
    except InvalidNameError as e:
        raise PackError(f"Concept pack {folder}: {e}") from e
    pack = ConceptPack(
        name=manifest.get("name") or folder.name, version=str(manifest.get("version", "0")),
        description=manifest.get("description", ""), source=manifest.get("source", ""),
        license=manifest.get("license"),
    )
    with open(concepts_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                concept = Concept.from_dict(json.loads(line))
            except json.JSONDecodeError as e:
                raise PackError(f"{concepts_path}:{n} is not JSON ({e}).") from e
            if concept.term in pack.concepts:
                raise PackError(f"{concepts_path}:{n} defines {concept.term!r} a second time; keep one.")
            pack.concepts[concept.term] = concept
    pack.validate()
    return pack


def read_concept_pack(folder: str | os.PathLike) -> ConceptPack:
    """Read a concept pack folder in cortex format or HatCat format (detected from its files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PackError(f"Concept pack folder {folder} does not exist. Pass a folder or a registry name.")
    if (folder / MANIFEST).is_file():
        return read_cortex_pack(folder)
    if is_hatcat_pack(folder):
        return read_hatcat_pack(folder)
    raise PackError(
        f"{folder} is neither a cortex concept pack ({MANIFEST}) nor a HatCat pack (pack.json + concepts/)."
    )


def import_concept_pack(
    source: str | os.PathLike,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    on_conflict: str = "version",
) -> RegistryEntry:
    """Read a concept pack folder (either format), rewrite it in cortex format and register it.

    The registry entry is of kind ``concept_pack``; ``extra`` records the pack's version, source and counts.
    """
    pack = read_concept_pack(source)
    reg = registry or Registry()
    entry_name = validate_name(name or pack.name)
    with reg.stage() as tmp:
        write_concept_pack(pack, tmp)
        return reg.register(
            tmp, name=entry_name, kind="concept_pack", source=str(Path(source).resolve()),
            license=pack.license, revision=pack.version, on_conflict=on_conflict,
            extra={"pack_name": pack.name, "pack_version": pack.version, "spec": pack.source,
                   "n_concepts": len(pack), "n_with_examples": len(pack.with_examples())},
        )


def load_concept_pack(name_or_folder: str | os.PathLike, registry: Registry | None = None) -> ConceptPack:
    """A concept pack from a registry name or a folder."""
    p = Path(name_or_folder)
    if p.is_dir():
        return read_concept_pack(p)
    reg = registry or Registry()
    return read_concept_pack(reg.path(str(name_or_folder), kind="concept_pack"))

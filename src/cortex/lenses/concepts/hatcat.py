"""Read a HatCat-format concept pack (``pack.json``, ``hierarchy.json``, ``concepts/layerN/*.json``).

The published layout (e.g. ``org.hatcat/first-light@1.0.1``)::

    pack.json                   # pack_id, version, spec_id, description, distribution.license, ...
    hierarchy.json              # child_to_parent / parent_to_children keyed "Term:layer"; when present
                                # it and each file's parent_concepts define the hierarchy
    concepts/layer0/<term>.json # term, layer, domain, parent_concepts, children, definition, aliases,
    ...                         # wordnet{synsets,lemmas}, relationships{opposite,related,...},
                                # safety_tags, training_hints{positive_examples,negative_examples}

Every file is reached through :func:`cortex.hub.paths.safe_join`, so a path or symlink that leads
outside the pack folder is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cortex.errors import InvalidNameError, PackError
from cortex.hub.paths import safe_join
from cortex.lenses.concepts.model import Concept, ConceptPack


def is_hatcat_pack(folder: Path) -> bool:
    return (folder / "pack.json").is_file() and (folder / "concepts").is_dir()


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{what} {path} is not readable JSON ({e}). Re-download or fix the file.") from e


def _safe(folder: Path, rel: str) -> Path:
    try:
        return safe_join(folder, rel)
    except InvalidNameError as e:
        raise PackError(f"Concept pack {folder}: {e}") from e


def _strip_layer(key: str) -> str:
    """``"Deception:2"`` → ``"Deception"`` (hierarchy.json keys carry the ontology layer)."""
    term, sep, layer = key.rpartition(":")
    return term if sep and layer.isdigit() else key


def _str_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and v.strip()] if isinstance(value, list) else []


def concept_from_hatcat(data: dict[str, Any], where: str) -> Concept:
    """One HatCat concept JSON object as a :class:`Concept`."""
    term = data.get("term")
    if not isinstance(term, str) or not term:
        raise PackError(f"{where} has no 'term'; every HatCat concept file needs one.")
    layer = data.get("layer", 0)
    if not isinstance(layer, int):
        raise PackError(f"{where}: 'layer' must be an integer, got {layer!r}.")
    wordnet = data.get("wordnet") or {}
    rel = data.get("relationships") or {}
    hints = data.get("training_hints") or {}
    extra = {k: data[k] for k in ("role", "is_category_lens", "definition_source", "simplex_mapping") if k in data}
    for k in ("canonical_synset", "pos"):
        if wordnet.get(k):
            extra[k] = wordnet[k]
    for k in ("antonyms", "has_part", "part_of"):
        if rel.get(k):
            extra[k] = _str_list(rel[k])
    if hints.get("disambiguation"):
        extra["disambiguation"] = hints["disambiguation"]
    return Concept(
        term=term,
        layer=layer,
        domain=data.get("domain"),
        definition=data.get("definition") or "",
        parents=_str_list(data.get("parent_concepts")),
        children=_str_list(data.get("children")),
        aliases=_str_list(data.get("aliases")),
        lemmas=_str_list(wordnet.get("lemmas")),
        synsets=_str_list(wordnet.get("synsets")),
        positive_examples=_str_list(hints.get("positive_examples")),
        negative_examples=_str_list(hints.get("negative_examples")),
        opposites=_str_list(rel.get("opposite")),
        related=_str_list(rel.get("related")),
        safety=data.get("safety_tags") or {},
        extra=extra,
    )


def read_hatcat_pack(folder: str | Path) -> ConceptPack:
    """Read and validate a HatCat concept pack folder (see the module docstring for the layout)."""
    folder = Path(folder).resolve()
    if not is_hatcat_pack(folder):
        raise PackError(
            f"{folder} is not a HatCat concept pack: it needs pack.json and a concepts/ folder."
        )
    meta = _load_json(_safe(folder, "pack.json"), "pack.json")
    for key in ("hierarchy_file",):  # paths a pack names must stay inside it, used or not
        ref = (meta.get("concept_metadata") or {}).get(key)
        if isinstance(ref, str):
            _safe(folder, ref)
    concepts_dir = _safe(folder, "concepts")
    pack = ConceptPack(
        name=str(meta.get("pack_id") or folder.name),
        version=str(meta.get("version", "0")),
        description=str(meta.get("description", "")),
        source=str(meta.get("spec_id") or meta.get("pack_id") or folder.name),
        license=(meta.get("distribution") or {}).get("license"),
    )
    for path in sorted(concepts_dir.rglob("*.json")):
        rel = path.relative_to(folder).as_posix()
        concept = concept_from_hatcat(_load_json(_safe(folder, rel), "Concept file"), rel)
        if concept.term in pack.concepts:
            raise PackError(
                f"Concept {concept.term!r} is defined twice in {folder} ({rel} and another file); keep one."
            )
        pack.concepts[concept.term] = concept
    if not pack.concepts:
        raise PackError(f"{concepts_dir} holds no concept files (*.json); nothing to import.")
    hierarchy_path = folder / "hierarchy.json"
    if hierarchy_path.exists():
        # hierarchy.json agrees with every file's parent_concepts, while the files' own "children" lists
        # carry stale links (first-light has 340, some forming cycles): with a hierarchy file those
        # lists are kept for reference only.
        for c in pack:
            if c.children:
                c.extra["listed_children"] = c.children
            c.children = []
        hierarchy = _load_json(_safe(folder, "hierarchy.json"), "hierarchy.json")
        for child, parent in (hierarchy.get("child_to_parent") or {}).items():
            c, p = _strip_layer(child), _strip_layer(parent)
            if c in pack.concepts and p not in pack.concepts[c].parents:
                pack.concepts[c].parents.append(p)
        for parent, kids in (hierarchy.get("parent_to_children") or {}).items():
            p = _strip_layer(parent)
            if p in pack.concepts:
                for k in kids:
                    if _strip_layer(k) not in pack.concepts[p].children:
                        pack.concepts[p].children.append(_strip_layer(k))
    pack.validate()
    return pack

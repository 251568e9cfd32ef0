"""Concepts and concept packs: terms with definitions, examples and a parent/child hierarchy."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cortex.errors import PackError, closest


@dataclass
class Concept:
    """One concept of a pack.

    ``layer`` is the concept's depth in the pack's own ontology (0 = root categories), not a model layer.
    ``positive_examples``/``negative_examples`` are hand-written sentences (HatCat's ``training_hints``);
    ``lemmas`` and ``synsets`` (WordNet ids like ``deception.n.01`` or ``00012071.s``) feed templated and
    WordNet example sentences. ``opposites`` names concepts at the other pole (used by steering).
    """

    term: str
    layer: int = 0
    domain: str | None = None
    definition: str = ""
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    lemmas: list[str] = field(default_factory=list)
    synsets: list[str] = field(default_factory=list)
    positive_examples: list[str] = field(default_factory=list)
    negative_examples: list[str] = field(default_factory=list)
    opposites: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)
    safety: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Concept":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PackError(
                f"Concept {data.get('term')!r} has unknown fields {sorted(unknown)}; cortex concept packs "
                f"allow {sorted(known)} (put anything else under 'extra')."
            )
        if not isinstance(data.get("term"), str) or not data["term"]:
            raise PackError(f"A concept has no 'term' (got {data.get('term')!r}); every concept needs a name.")
        return cls(**data)

    @property
    def has_examples(self) -> bool:
        return bool(self.positive_examples) and bool(self.negative_examples)


@dataclass
class ConceptPack:
    """A named, versioned set of concepts with a hierarchy (``parents`` / ``children`` of each concept).

    Build one with :func:`cortex.lenses.concepts.read_concept_pack` (HatCat or cortex format) or directly;
    :meth:`validate` checks references and refuses cycles.
    """

    name: str
    version: str = "0"
    description: str = ""
    source: str = ""
    license: str | None = None
    concepts: dict[str, Concept] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ancestors: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts.values())

    def __contains__(self, term: object) -> bool:
        return term in self.concepts

    def get(self, term: str) -> Concept:
        """The concept called ``term``; :class:`PackError` with suggestions when unknown."""
        try:
            return self.concepts[term]
        except KeyError:
            near = closest(term, self.concepts)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise PackError(
                f"Unknown concept {term!r} in concept pack {self.name!r}.{hint} List concepts with: "
                f"cortex packs show {self.name}"
            ) from None

    def terms(self) -> list[str]:
        return list(self.concepts)

    def with_examples(self) -> list[str]:
        """Terms that carry hand-written positive and negative examples."""
        return [c.term for c in self if c.has_examples]

    def roots(self) -> list[str]:
        return [c.term for c in self if not c.parents]

    def children_of(self, term: str) -> list[str]:
        return list(self.get(term).children)

    def parents_of(self, term: str) -> list[str]:
        return list(self.get(term).parents)

    def ancestors(self, term: str) -> frozenset[str]:
        """Every concept above ``term`` (parents, their parents, ...)."""
        if term not in self._ancestors:
            seen: set[str] = set()
            stack = list(self.get(term).parents)
            while stack:
                p = stack.pop()
                if p not in seen and p in self.concepts:
                    seen.add(p)
                    stack.extend(self.concepts[p].parents)
            self._ancestors[term] = frozenset(seen)
        return self._ancestors[term]

    def descendants(self, term: str) -> frozenset[str]:
        """Every concept below ``term``."""
        seen: set[str] = set()
        stack = list(self.get(term).children)
        while stack:
            c = stack.pop()
            if c not in seen and c in self.concepts:
                seen.add(c)
                stack.extend(self.concepts[c].children)
        return frozenset(seen)

    def siblings(self, term: str) -> list[str]:
        """Concepts sharing a parent with ``term`` (the hardest negatives for its probe)."""
        out: dict[str, None] = {}
        for p in self.get(term).parents:
            for s in self.concepts[p].children if p in self.concepts else []:
                if s != term and s in self.concepts:
                    out[s] = None
        return list(out)

    def select(self, terms: Iterable[str]) -> list[str]:
        """Check that every term exists (raising :class:`PackError` naming the first unknown one)."""
        return [self.get(t).term for t in terms]

    def validate(self) -> None:
        """Make parent/child links symmetric, drop links to absent concepts, and refuse cycles."""
        for c in self:
            c.parents = [p for p in dict.fromkeys(c.parents) if p in self.concepts and p != c.term]
            c.children = [k for k in dict.fromkeys(c.children) if k in self.concepts and k != c.term]
        for c in self:
            for p in c.parents:
                if c.term not in self.concepts[p].children:
                    self.concepts[p].children.append(c.term)
            for k in c.children:
                if c.term not in self.concepts[k].parents:
                    self.concepts[k].parents.append(c.term)
        cycle = find_cycle({c.term: c.children for c in self})
        if cycle:
            raise PackError(
                f"Concept pack {self.name!r} has a cycle in its hierarchy: {' -> '.join(cycle)}. A concept "
                "cannot be its own ancestor; remove one of these parent links."
            )
        self._ancestors.clear()


def find_cycle(children: dict[str, list[str]]) -> list[str] | None:
    """A cycle in a directed graph given as ``node -> children`` (iterative DFS), or ``None``."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(children, white)
    for start in children:
        if color[start] != white:
            continue
        path: list[str] = [start]
        iters = [iter(children.get(start, []))]
        color[start] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                color[path.pop()] = black
                iters.pop()
                continue
            state = color.get(nxt, black)
            if state == grey:
                return path[path.index(nxt):] + [nxt]
            if state == white:
                color[nxt] = grey
                path.append(nxt)
                iters.append(iter(children.get(nxt, [])))
    return None

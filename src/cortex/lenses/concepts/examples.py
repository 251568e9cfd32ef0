"""Training sentences for a concept: hand-written hints, templates from definitions and lemmas, WordNet.

Sources (each example remembers where it came from):

- ``hint``: the pack's hand-written ``positive_examples`` / ``negative_examples``;
- ``definition``: the definition itself, and "<name> is <definition>";
- ``template``: the concept's name and lemmas placed in a few neutral frames. Distant concepts go
  through the same frames as negatives, so a probe cannot learn the frame itself;
- ``wordnet``: usage examples of the concept's synsets (optional; needs a WordNet database).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cortex.lenses.concepts.model import Concept
from cortex.lenses.concepts.wordnet import WordNet

LEMMA_FRAMES = (
    "The discussion turned to {x}.",
    "This passage is mainly about {x}.",
    "She wrote a short report on {x}.",
    "Everyone in the room was thinking about {x}.",
)
SOURCES = ("hint", "definition", "template", "wordnet")


def humanize(term: str) -> str:
    """``DeceptionSignal`` → ``deception signal``; ``AI_Safety`` → ``ai safety``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", term.replace("_", " "))
    return re.sub(r"\s+", " ", spaced).strip().lower()


@dataclass
class ConceptExamples:
    """Positive and negative sentences of one concept, with the source of each positive."""

    term: str
    positives: list[str] = field(default_factory=list)
    positive_sources: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)

    def add_positive(self, text: str, source: str) -> None:
        if text and text not in self.positives:
            self.positives.append(text)
            self.positive_sources.append(source)

    def by_source(self, source: str) -> list[str]:
        return [t for t, s in zip(self.positives, self.positive_sources) if s == source]


def lemma_phrases(concept: Concept, limit: int = 3) -> list[str]:
    """Readable names for a concept: its humanized term, then lemmas and aliases (underscores removed)."""
    names = [humanize(concept.term)]
    for lemma in [*concept.lemmas, *concept.aliases]:
        phrase = lemma.replace("_", " ").strip()
        if phrase and phrase.lower() not in (n.lower() for n in names):
            names.append(phrase)
    return names[:limit]


def template_sentences(concept: Concept, n_frames: int = 2, n_names: int = 2) -> list[str]:
    """Sentences placing the concept's names in :data:`LEMMA_FRAMES` (deterministic)."""
    out = []
    for i, name in enumerate(lemma_phrases(concept, n_names)):
        for j in range(n_frames):
            out.append(LEMMA_FRAMES[(i + j) % len(LEMMA_FRAMES)].format(x=name))
    return out


def definition_sentences(concept: Concept) -> list[str]:
    d = " ".join(concept.definition.split()).rstrip(".")
    if not d:
        return []
    lowered = d[0].lower() + d[1:] if d else d
    name = humanize(concept.term)
    return [f"{d}.", f"{name[0].upper() + name[1:]} is {lowered}."]


def concept_examples(
    concept: Concept,
    *,
    hints: bool = True,
    definitions: bool = True,
    templates: bool = True,
    wordnet: WordNet | None = None,
    max_wordnet: int = 4,
) -> ConceptExamples:
    """All example sentences of ``concept`` from the chosen sources."""
    ex = ConceptExamples(concept.term)
    if hints:
        for t in concept.positive_examples:
            ex.add_positive(t.strip(), "hint")
        ex.negatives = list(dict.fromkeys(t.strip() for t in concept.negative_examples if t.strip()))
    if definitions:
        for t in definition_sentences(concept):
            ex.add_positive(t, "definition")
    if templates:
        for t in template_sentences(concept):
            ex.add_positive(t, "template")
    if wordnet is not None:
        n = 0
        for sid in concept.synsets[:8]:  # the first synsets are the canonical ones; later ones drift
            gloss = wordnet.gloss(sid)
            if gloss is None:
                continue
            definition, usages = gloss
            for t in [definition, *usages]:
                if n < max_wordnet and len(t.split()) >= 3:
                    ex.add_positive(t[0].upper() + t[1:] + ("" if t.endswith((".", "!", "?")) else "."), "wordnet")
                    n += 1
    return ex

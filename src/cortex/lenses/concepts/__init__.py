"""Concept packs: read HatCat or cortex format, register them, and make training sentences."""

from cortex.lenses.concepts.examples import (
    ConceptExamples,
    concept_examples,
    definition_sentences,
    humanize,
    template_sentences,
)
from cortex.lenses.concepts.hatcat import read_hatcat_pack
from cortex.lenses.concepts.model import Concept, ConceptPack, find_cycle
from cortex.lenses.concepts.store import (
    import_concept_pack,
    load_concept_pack,
    read_concept_pack,
    write_concept_pack,
)
from cortex.lenses.concepts.wordnet import WordNet

__all__ = [
    "Concept",
    "ConceptExamples",
    "ConceptPack",
    "WordNet",
    "concept_examples",
    "definition_sentences",
    "find_cycle",
    "humanize",
    "import_concept_pack",
    "load_concept_pack",
    "read_concept_pack",
    "read_hatcat_pack",
    "template_sentences",
    "write_concept_pack",
]

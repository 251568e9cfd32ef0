"""Training, validation and test sentences for many concepts, as index lists into one list of texts.

Every unique sentence appears once in ``texts`` (so it goes through the model once). Per concept:

- hand-written examples are split (deterministically, per concept) into test / validation / train;
  every test or validation sentence of any concept is kept out of every concept's training pools;
- train positives: the train hints, the definition sentences, templated sentences, WordNet examples,
  and (for parents) a few train hints of descendants;
- train negatives: own train negative hints, positives of siblings (hard negatives) and of distant
  concepts (neither ancestors nor descendants), plus background definitions of other pack concepts;
- validation / test: own held-out positives vs own held-out negatives plus as many held-out
  sentences of distant concepts.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from cortex.errors import DataError
from cortex.lenses.concepts.examples import concept_examples, definition_sentences
from cortex.lenses.concepts.model import ConceptPack
from cortex.lenses.concepts.wordnet import WordNet


@dataclass
class ConceptSplit:
    """Index lists (into :attr:`LensDataset.texts`) of one concept's train / val / test sentences."""

    term: str
    train_pos: list[int] = field(default_factory=list)
    train_neg: list[int] = field(default_factory=list)
    val_pos: list[int] = field(default_factory=list)
    val_neg: list[int] = field(default_factory=list)
    test_pos: list[int] = field(default_factory=list)
    test_neg: list[int] = field(default_factory=list)
    hint_rows: set[int] = field(default_factory=set)   # train rows that are the concept's own hand-written ones
    val_hint_rows: set[int] = field(default_factory=set)  # validation rows that are its own hand-written ones


@dataclass
class LensDataset:
    """Unique ``texts`` and one :class:`ConceptSplit` per concept; ``calibration`` indexes background text."""

    texts: list[str]
    splits: list[ConceptSplit]
    calibration: list[int]

    @property
    def terms(self) -> list[str]:
        return [s.term for s in self.splits]


@dataclass
class DatasetConfig:
    """How sentences are gathered; validated by :class:`cortex.lenses.training.LensTrainingConfig`."""

    test_fraction: float = 1 / 3
    val_per_concept: int = 1
    definitions: bool = True
    templates: bool = True
    wordnet: bool = False
    descendant_positives: int = 6
    sibling_negatives: int = 24
    distant_negatives: int = 48
    background: int = 256
    hint_weight: float = 3.0      # loss weight of own hand-written examples relative to other sentences
    seed: int = 0
    fold: int | None = None       # k-fold evaluation: which fold of the hand-written examples is the test set
    n_folds: int = 3


# Neutral everyday sentences: the negatives of last resort (a root concept whose every other concept is
# its descendant has no distant sentences) and part of the calibration background.
NEUTRAL_SENTENCES = (
    "The meeting was moved to Thursday afternoon.", "Please close the window before you leave.",
    "The numbers in the second column add up to forty.", "It rained for most of the weekend.",
    "He put the keys on the kitchen table.", "The report is due at the end of the month.",
    "She turned left at the second traffic light.", "The shop opens at nine every morning.",
    "They painted the fence a pale shade of green.", "The file was saved in the shared folder.",
    "Our train arrived ten minutes early.", "The lamp in the hallway needs a new bulb.",
    "A list of names was pinned to the board.", "The package was left at the front door.",
    "He read the instructions twice before starting.", "The room was quiet except for the clock.",
)


def _rng(seed: int, *parts: str) -> random.Random:
    h = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def _split_hints(items: list[str], cfg: DatasetConfig, rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    """(test, val, train) of one concept's hand-written sentences of one polarity."""
    items = list(dict.fromkeys(items))
    rng.shuffle(items)
    if cfg.fold is not None:
        test = [t for i, t in enumerate(items) if i % cfg.n_folds == cfg.fold]
        rest = [t for i, t in enumerate(items) if i % cfg.n_folds != cfg.fold]
    else:
        n_test = round(len(items) * cfg.test_fraction) if len(items) >= 3 else 0
        test, rest = items[:n_test], items[n_test:]
    n_val = min(cfg.val_per_concept, max(0, len(rest) - 2))
    return test, rest[:n_val], rest[n_val:]


def _hold_out(examples: dict, cfg: DatasetConfig) -> tuple[dict[str, dict[str, list[str]]], set[str]]:
    """Each concept's hand-written positives and negatives split into test / validation / train, and the
    set of every held-out sentence (never used for training by any concept)."""
    held: dict[str, dict[str, list[str]]] = {}
    heldout_texts: set[str] = set()
    for t, ex in examples.items():
        rng = _rng(cfg.seed, t)
        p_test, p_val, p_train = _split_hints(ex.by_source("hint"), cfg, rng)
        n_test, n_val, n_train = _split_hints(ex.negatives, cfg, rng)
        held[t] = {"p_test": p_test, "p_val": p_val, "p_train": p_train,
                   "n_test": n_test, "n_val": n_val, "n_train": n_train}
        heldout_texts.update(p_test + p_val + n_test + n_val)
    return held, heldout_texts


def _background(pack: ConceptPack, chosen: set[str], cfg: DatasetConfig,
                heldout_texts: set[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Definitions of pack concepts outside the selection: half become ``(owner, sentence)`` negatives,
    half calibration sentences."""
    others = sorted(c.term for c in pack if c.term not in chosen and c.definition.strip())
    if len(others) < 2 * cfg.background:
        others += sorted(chosen)
    bg_rng = _rng(cfg.seed, "background")
    bg_terms = bg_rng.sample(others, min(len(others), 2 * cfg.background))
    bg_sentences = [(c, definition_sentences(pack.get(c))[0]) for c in bg_terms if definition_sentences(pack.get(c))]
    bg_train = [(c, s) for c, s in bg_sentences[: len(bg_sentences) // 2] if s not in heldout_texts]
    return bg_train, [s for _, s in bg_sentences[len(bg_sentences) // 2:]]


def build_dataset(
    pack: ConceptPack, terms: list[str], cfg: DatasetConfig, wordnet: WordNet | None = None
) -> LensDataset:
    """Gather and split sentences for ``terms`` of ``pack`` (see the module docstring)."""
    if not terms:
        raise DataError("No concepts selected for training; widen --concept-filter.")
    pack.select(terms)
    texts: dict[str, int] = {}

    def ix(t: str) -> int:
        return texts.setdefault(t, len(texts))

    examples = {t: concept_examples(pack.get(t), definitions=cfg.definitions, templates=cfg.templates,
                                    wordnet=wordnet if cfg.wordnet else None) for t in terms}
    held, heldout_texts = _hold_out(examples, cfg)

    def usable(items: list[str]) -> list[str]:
        return [s for s in items if s not in heldout_texts]

    train_pos: dict[str, list[str]] = {}
    for t in terms:
        generated = [s for s, src in zip(examples[t].positives, examples[t].positive_sources) if src != "hint"]
        train_pos[t] = usable(list(dict.fromkeys(held[t]["p_train"] + generated)))
    chosen = set(terms)
    bg_train, bg_calibration = _background(pack, chosen, cfg, heldout_texts)
    calibration = [ix(s) for s in bg_calibration]
    neutral = [s for s in NEUTRAL_SENTENCES if s not in heldout_texts]
    calibration += [ix(s) for s in neutral[len(neutral) // 2:]]
    distant_pool = [(t, s) for t in terms for s in train_pos[t]] + bg_train
    test_pool = [(t, s) for t in terms for s in held[t]["p_test"]]
    val_pool = [(t, s) for t in terms for s in held[t]["p_val"]]

    splits = []
    for t in terms:
        rng = _rng(cfg.seed, "negatives", t)
        related = pack.ancestors(t) | pack.descendants(t) | {t}
        own = set(train_pos[t]) | set(held[t]["p_test"]) | set(held[t]["p_val"])
        pos = list(train_pos[t])
        if cfg.descendant_positives:
            kids = [s for d in sorted(pack.descendants(t) & chosen) for s in held[d]["p_train"] if s not in heldout_texts]
            pos += rng.sample(kids, min(len(kids), cfg.descendant_positives))
        neg = [s for s in usable(held[t]["n_train"]) if s not in own]
        sib = [s for sb in pack.siblings(t) if sb in chosen for s in train_pos[sb] if s not in own]
        neg += rng.sample(sib, min(len(sib), cfg.sibling_negatives))
        far = [s for owner, s in distant_pool if owner not in related and s not in own]
        neg += rng.sample(far, min(len(far), cfg.distant_negatives))
        if len(neg) < 4:
            neg += neutral[: len(neutral) // 2]

        def far_heldout(pool: list[tuple[str, str]], n: int) -> list[str]:
            cands = [s for owner, s in pool if owner not in related and s not in own]
            return rng.sample(cands, min(len(cands), n))

        split = ConceptSplit(t)
        split.train_pos = [ix(s) for s in dict.fromkeys(pos)]
        split.train_neg = [ix(s) for s in dict.fromkeys(neg)]
        split.val_pos = [ix(s) for s in held[t]["p_val"]]
        split.val_neg = [ix(s) for s in held[t]["n_val"] + far_heldout(val_pool, len(held[t]["n_val"]))]
        split.test_pos = [ix(s) for s in held[t]["p_test"]]
        split.test_neg = [ix(s) for s in held[t]["n_test"] + far_heldout(test_pool, len(held[t]["n_test"]))]
        split.hint_rows = {ix(s) for s in held[t]["p_train"] + held[t]["n_train"] if s not in heldout_texts}
        split.val_hint_rows = {ix(s) for s in held[t]["p_val"] + held[t]["n_val"]}
        if not split.train_pos or not split.train_neg:
            raise DataError(
                f"Concept {t!r} has no usable training positives (no examples, definition or lemmas). Add "
                "training_hints or a definition to the pack, or exclude it with --concept-filter."
            )
        splits.append(split)
    ordered = sorted(texts, key=texts.__getitem__)
    return LensDataset(texts=ordered, splits=splits, calibration=calibration)

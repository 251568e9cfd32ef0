"""Sequence design: the black-box budget API, Ehrlich test functions and baseline optimizers.

LaMBO-2 (``cortex.design.lambo2``) builds on the same :class:`BlackBox`.
"""

from cortex.design.alphabet import (
    AMINO_ACIDS,
    alphabet_tokenizer,
    default_alphabet,
    state_token_ids,
    states_to_strings,
    strings_to_states,
)
from cortex.design.baselines import GeneticAlgorithm, GeneticConfig, GeneticResult, random_search
from cortex.design.blackbox import BatchResult, BlackBox, Evaluation, SequenceFunction, sequence_keys
from cortex.design.test_functions import Ehrlich, EhrlichConfig

__all__ = [
    "AMINO_ACIDS",
    "BatchResult",
    "BlackBox",
    "Ehrlich",
    "EhrlichConfig",
    "Evaluation",
    "GeneticAlgorithm",
    "GeneticConfig",
    "GeneticResult",
    "SequenceFunction",
    "alphabet_tokenizer",
    "default_alphabet",
    "random_search",
    "sequence_keys",
    "state_token_ids",
    "states_to_strings",
    "strings_to_states",
]

"""Closed-form test functions for sequence design: Ehrlich functions and their Markov feasibility model."""

from cortex.design.test_functions.ehrlich import Ehrlich, EhrlichConfig, cubic_response
from cortex.design.test_functions.markov import (
    banded_square_matrix,
    dmp_log_likelihood,
    is_primitive,
    sample_dmp,
    sample_sparse_ergodic_transition_matrix,
    stationary_distribution,
)

__all__ = [
    "Ehrlich",
    "EhrlichConfig",
    "banded_square_matrix",
    "cubic_response",
    "dmp_log_likelihood",
    "is_primitive",
    "sample_dmp",
    "sample_sparse_ergodic_transition_matrix",
    "stationary_distribution",
]

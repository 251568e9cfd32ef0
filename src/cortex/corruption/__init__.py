"""Noise processes for denoising training and guided design, written to compile.

- :mod:`~cortex.corruption.processes`: mask, substitution (uniform / BLOSUM62) and Gaussian processes,
  each usable on its own, with per-example fractions and a ``corruption_allowed`` mask.
- :mod:`~cortex.corruption.schedules`: noise schedules (linear, cosine, sqrt, mask_linear) and the
  uniform timestep distribution, with ``corrupt_frac(t) = 1 - alpha_bar(t)``.
- :mod:`~cortex.corruption.layer`: :class:`CorruptionLayer`, all three processes at once selected by
  a tensor of kind weights, so a forward pass never branches on the kind.
- :mod:`~cortex.corruption.blosum`: BLOSUM62 scores and substitution probabilities.
"""

from cortex.corruption.blosum import BLOSUM62_ORDER, blosum62_scores, blosum62_transition_matrix
from cortex.corruption.layer import (
    CorruptionLayer,
    CorruptionNoise,
    CorruptionOutput,
    CorruptionParams,
    kind_weights,
)
from cortex.corruption.processes import (
    CORRUPTION_KINDS,
    SUBSTITUTIONS,
    CorruptionResult,
    GaussianCorruption,
    MaskCorruption,
    MatrixSubstitution,
    SubstitutionCorruption,
    UniformSubstitution,
    build_substitution,
    select_positions,
)
from cortex.corruption.schedules import SCHEDULES, NoiseSchedule

__all__ = [
    "BLOSUM62_ORDER", "CORRUPTION_KINDS", "SCHEDULES", "SUBSTITUTIONS", "CorruptionLayer", "CorruptionNoise",
    "CorruptionOutput", "CorruptionParams", "CorruptionResult", "GaussianCorruption", "MaskCorruption",
    "MatrixSubstitution", "NoiseSchedule", "SubstitutionCorruption", "UniformSubstitution",
    "blosum62_scores", "blosum62_transition_matrix", "build_substitution", "kind_weights", "select_positions",
]

"""Leaves: one per task; each owns its loss. Built from a config string through :data:`LEAVES`."""

from cortex.models.neural_tree.leaves.base import Leaf
from cortex.models.neural_tree.leaves.classifier import ClassifierLeaf
from cortex.models.neural_tree.leaves.denoising_lm import DenoisingLMLeaf
from cortex.models.neural_tree.leaves.losses import (
    gaussian_log_partition,
    moment_average,
    natural_gaussian_kl,
    natural_gaussian_nll,
    smoothed_cross_entropy,
)
from cortex.models.neural_tree.leaves.regressor import GaussianLeaf, RegressorLeaf, SequenceRegressorLeaf

LEAVES: dict[str, type[Leaf]] = {
    "regressor": RegressorLeaf,
    "classifier": ClassifierLeaf,
    "denoising_lm": DenoisingLMLeaf,
    "sequence_regressor": SequenceRegressorLeaf,
}

__all__ = [
    "LEAVES", "ClassifierLeaf", "DenoisingLMLeaf", "GaussianLeaf", "Leaf", "RegressorLeaf", "SequenceRegressorLeaf",
    "gaussian_log_partition", "moment_average", "natural_gaussian_kl", "natural_gaussian_nll", "smoothed_cross_entropy",
]

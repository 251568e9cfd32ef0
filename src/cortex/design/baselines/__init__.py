"""Baseline optimizers that spend the same black-box budget as LaMBO-2."""

from cortex.design.baselines.genetic import GeneticAlgorithm, GeneticConfig, GeneticResult
from cortex.design.baselines.random_search import random_search

__all__ = ["GeneticAlgorithm", "GeneticConfig", "GeneticResult", "random_search"]

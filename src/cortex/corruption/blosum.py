"""BLOSUM62 and the substitution probabilities derived from it.

BLOSUM scores are half-bit log-odds, ``S_ij = 2 * log2(p_ij / (q_i q_j))``, so
``2 ** (S_ij / 2)`` is the odds ratio of seeing ``j`` aligned with ``i``. We turn a row of odds
ratios into a distribution over the 19 *other* amino acids, taking the background ``q`` as uniform
(the matrix is used as a proposal for plausible substitutions, not as an evolutionary model):

    P(j | i) = 2 ** (S_ij / 2) / sum_{k != i} 2 ** (S_ik / 2)    for j != i,   P(i | i) = 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cortex.errors import ConfigError

BLOSUM62_ORDER = "ARNDCQEGHILKMFPSTWYV"

# NCBI BLOSUM62, rows and columns in BLOSUM62_ORDER
_BLOSUM62_ROWS = """
 4 -1 -2 -2  0 -1 -1  0 -2 -1 -1 -1 -1 -2 -1  1  0 -3 -2  0
-1  5  0 -2 -3  1  0 -2  0 -3 -2  2 -1 -3 -2 -1 -1 -3 -2 -3
-2  0  6  1 -3  0  0  0  1 -3 -3  0 -2 -3 -2  1  0 -4 -2 -3
-2 -2  1  6 -3  0  2 -1 -1 -3 -4 -1 -3 -3 -1  0 -1 -4 -3 -3
 0 -3 -3 -3  9 -3 -4 -3 -3 -1 -1 -3 -1 -2 -3 -1 -1 -2 -2 -1
-1  1  0  0 -3  5  2 -2  0 -3 -2  1  0 -3 -1  0 -1 -2 -1 -2
-1  0  0  2 -4  2  5 -2  0 -3 -3  1 -2 -3 -1  0 -1 -3 -2 -2
 0 -2  0 -1 -3 -2 -2  6 -2 -4 -4 -2 -3 -3 -2  0 -2 -2 -3 -3
-2  0  1 -1 -3  0  0 -2  8 -3 -3 -1 -2 -1 -2 -1 -2 -2  2 -3
-1 -3 -3 -3 -1 -3 -3 -4 -3  4  2 -3  1  0 -3 -2 -1 -3 -1  3
-1 -2 -3 -4 -1 -2 -3 -4 -3  2  4 -2  2  0 -3 -2 -1 -2 -1  1
-1  2  0 -1 -3  1  1 -2 -1 -3 -2  5 -1 -3 -1  0 -1 -3 -2 -2
-1 -1 -2 -3 -1  0 -2 -3 -2  1  2 -1  5  0 -2 -1 -1 -1 -1  1
-2 -3 -3 -3 -2 -3 -3 -3 -1  0  0 -3  0  6 -4 -2 -2  1  3 -1
-1 -2 -2 -1 -3 -1 -1 -2 -2 -3 -3 -1 -2 -4  7 -1 -1 -4 -3 -2
 1 -1  1  0 -1  0  0  0 -1 -2 -2  0 -1 -2 -1  4  1 -3 -2 -2
 0 -1  0 -1 -1 -1 -1 -2 -2 -1 -1 -1 -1 -2 -1  1  5 -2 -2  0
-3 -3 -4 -4 -2 -2 -3 -2 -2 -3 -2 -3 -1  1 -4 -3 -2 11  2 -3
-2 -2 -2 -3 -2 -1 -2 -3  2 -1 -1 -2 -1  3 -3 -2 -2  2  7 -1
 0 -3 -3 -3 -1 -2 -2 -3 -3  3  1 -2  1 -1 -2 -2  0 -3 -1  4
"""


def blosum62_scores() -> torch.Tensor:
    """The BLOSUM62 score matrix, ``(20, 20)`` int64, rows/columns in :data:`BLOSUM62_ORDER`."""
    rows = [[int(v) for v in line.split()] for line in _BLOSUM62_ROWS.strip().splitlines()]
    return torch.tensor(rows, dtype=torch.int64, device="cpu")


def blosum62_transition_matrix(vocab: Mapping[str, int], vocab_size: int | None = None) -> torch.Tensor:
    """Row-stochastic substitution matrix ``(V, V)`` over a tokenizer's vocabulary.

    Rows of amino-acid tokens hold ``P(j | i)`` from the module docstring over the other amino-acid
    tokens; rows of every other token (padding, mask, ...) are the identity, so a special token that
    is selected for substitution stays itself.

    Args:
        vocab: token → id, e.g. ``tokenizer.get_vocab()``; must contain the 20 amino acids.
        vocab_size: ``V`` (default ``max(id) + 1``).
    """
    missing = [aa for aa in BLOSUM62_ORDER if aa not in vocab]
    if missing:
        raise ConfigError(
            f"BLOSUM62 substitution needs a protein vocabulary, but the tokenizer lacks {''.join(missing)!r}. "
            "Use substitution='uniform' for this root, or a protein tokenizer."
        )
    size = vocab_size if vocab_size is not None else max(vocab.values()) + 1
    odds = torch.exp2(blosum62_scores().double() / 2)
    odds.fill_diagonal_(0.0)
    probs = odds / odds.sum(-1, keepdim=True)  # (20, 20), zero diagonal
    ids = torch.tensor([vocab[aa] for aa in BLOSUM62_ORDER], device="cpu")
    matrix = torch.eye(size, dtype=torch.float64, device="cpu")
    matrix[ids] = 0.0
    matrix[ids[:, None], ids[None, :]] = probs
    return matrix.float()

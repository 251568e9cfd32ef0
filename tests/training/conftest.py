"""Tiny trees and learnable synthetic data for the training tests (odd sizes on purpose)."""

from __future__ import annotations

import random

import pytest
import torch

ALPHABET = "ACDEF"
LENGTH = 11


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on a shared 2-core machine: one intra-op thread is fastest and steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_rows(n: int, seed: int) -> dict[str, list]:
    """Random ``ACDEF`` strings of length 11 with closed-form targets.

    ``frac_a`` = fraction of ``A`` (regression); ``many_c`` = 1 if there are at least three ``C``
    (classification); ``is_a`` = per-position 1.0 where the letter is ``A`` (sequence regression).
    """
    rng = random.Random(seed)
    seqs = ["".join(rng.choice(ALPHABET) for _ in range(LENGTH)) for _ in range(n)]
    return {
        "sequence": seqs,
        "frac_a": [s.count("A") / LENGTH for s in seqs],
        "many_c": [int(s.count("C") >= 3) for s in seqs],
        "is_a": [[float(ch == "A") for ch in s] for s in seqs],
    }


def tiny_tree_dict(width: int = 13) -> dict:
    """A protein conv1d root ``seq`` (max_len 13), sum trunk, one conv1d branch ``b``: ~10k weights."""
    return {
        "roots": {"seq": {"kind": "conv1d", "tokenizer": "protein", "max_len": 13, "embed_dim": 7,
                          "hidden_dim": width, "out_dim": width, "num_blocks": 1, "kernel_size": 3}},
        "branches": {"b": {"kind": "conv1d", "out_dim": width, "hidden_dim": width, "kernel_size": 3}},
    }

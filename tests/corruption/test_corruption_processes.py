"""Mask, substitution and Gaussian processes; the always-apply layer; BLOSUM62 probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cortex.corruption import (
    BLOSUM62_ORDER,
    CorruptionLayer,
    CorruptionNoise,
    CorruptionParams,
    GaussianCorruption,
    MaskCorruption,
    MatrixSubstitution,
    SubstitutionCorruption,
    UniformSubstitution,
    blosum62_scores,
    blosum62_transition_matrix,
    kind_weights,
)
from cortex.data.tokenizers import build_protein_tokenizer
from cortex.errors import ConfigError

B, T, V, MASK = 5, 13, 11, 2


def _ids(gen: torch.Generator) -> torch.Tensor:
    return torch.randint(3, V, (B, T), generator=gen)


def test_mask_respects_corruption_allowed_and_fraction():
    g = torch.Generator().manual_seed(0)
    ids = _ids(g)
    allowed = torch.rand(B, T, generator=g) < 0.6
    mask = MaskCorruption(MASK)
    full = mask(ids, torch.ones(B), allowed)
    assert torch.equal(full.is_corrupted, allowed)  # frac 1 corrupts exactly the allowed positions
    assert torch.equal(full.values, torch.where(allowed, torch.full_like(ids, MASK), ids))
    none = mask(ids, torch.zeros(B), allowed)
    assert torch.equal(none.values, ids) and not none.is_corrupted.any()  # frac 0 is the identity
    u = torch.rand(B, T, generator=g)
    frac = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0])
    some = mask(ids, frac, allowed, uniform=u)
    assert torch.equal(some.is_corrupted, (u < frac[:, None]) & allowed)
    assert torch.equal(some.values[~allowed], ids[~allowed])


def test_mask_fraction_per_example_in_expectation():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    ids = torch.randint(3, V, (4, 4000), generator=g)
    frac = torch.tensor([0.1, 0.35, 0.6, 0.9])
    rate = MaskCorruption(MASK)(ids, frac).is_corrupted.float().mean(1)
    # binomial standard error is below 0.008 for n=4000
    np.testing.assert_allclose(rate.numpy(), frac.numpy(), atol=0.03)


def test_uniform_substitution_never_proposes_itself_or_specials():
    corruptible = torch.ones(V, dtype=torch.bool)
    corruptible[:3] = False
    sampler = UniformSubstitution(corruptible)
    ids = torch.arange(3, V).repeat_interleave(500)
    new = sampler.sample(ids, torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)))
    assert (new != ids).all() and (new >= 3).all()
    # each of the C - 1 = 7 other tokens is equally likely
    counts = torch.bincount(new[ids == 5], minlength=V)[3:].float()
    assert counts[5 - 3] == 0
    others = torch.cat([counts[:2], counts[3:]])
    assert others.sum() == 500 and (others - 500 / 7).abs().max() < 40
    with pytest.raises(ConfigError, match="at least 2"):
        UniformSubstitution(torch.tensor([False, True, False]))


def test_blosum62_transition_matrix_closed_form():
    tok = build_protein_tokenizer()
    vocab = tok.get_vocab()
    P = blosum62_transition_matrix(vocab, len(tok)).double()
    S = blosum62_scores()
    assert S.shape == (20, 20) and torch.equal(S, S.T)
    aa = [vocab[a] for a in BLOSUM62_ORDER]
    torch.testing.assert_close(P.sum(-1), torch.ones(len(tok), dtype=torch.float64))
    assert P[aa, aa].abs().sum() == 0  # never substitutes a residue by itself
    assert torch.equal(P[0], torch.eye(len(tok), dtype=torch.float64)[0])  # special tokens stay
    # row of tryptophan (W): P(j | W) = 2^(S_Wj / 2) / sum_{k != W} 2^(S_Wk / 2)
    w = BLOSUM62_ORDER.index("W")
    odds = [2.0 ** (S[w, k].item() / 2) if k != w else 0.0 for k in range(20)]
    expected = [o / sum(odds) for o in odds]
    got = [P[vocab["W"], vocab[a]].item() for a in BLOSUM62_ORDER]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert P[vocab["W"], vocab["Y"]] > P[vocab["W"], vocab["A"]]  # S(W,Y)=2 > S(W,A)=-3


def test_matrix_substitution_samples_from_rows():
    P = torch.tensor([[0.0, 0.25, 0.75], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    sampler = MatrixSubstitution(P)
    ids = torch.tensor([0, 0, 0, 1, 2, 2])
    u = torch.tensor([0.1, 0.3, 0.99, 0.5, 0.2, 0.7])
    assert sampler.sample(ids, u).tolist() == [1, 2, 2, 0, 0, 1]
    with pytest.raises(ConfigError, match="rows must be probabilities"):
        MatrixSubstitution(torch.tensor([[0.5, 0.6], [1.0, 0.0]]))


def test_gaussian_formula_and_identity_at_zero():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, 4, generator=g)
    eps = torch.randn(B, T, 4, generator=g)
    allowed = torch.rand(B, T, generator=g) < 0.7
    frac = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    out = GaussianCorruption(scale=2.0)(x, frac, allowed, noise=eps)
    f = frac[:, None, None]
    expected = torch.where(allowed[..., None], torch.sqrt(1 - f) * x + torch.sqrt(f) * 2.0 * eps, x)
    torch.testing.assert_close(out.values, expected)
    assert torch.equal(out.values[0], x[0]) and not out.is_corrupted[0].any()
    assert torch.equal(out.is_corrupted[1:], allowed[1:])


def _layer(kind: str = "mask") -> tuple[CorruptionLayer, torch.nn.Embedding]:
    corruptible = torch.ones(V, dtype=torch.bool)
    corruptible[:3] = False
    emb = torch.nn.Embedding(V, 4)
    layer = CorruptionLayer(corruptible, MASK, UniformSubstitution(corruptible), gaussian_scale=1.5, kind=kind)
    return layer, emb


def test_layer_kind_weights_select_each_process_exactly():
    torch.manual_seed(4)
    g = torch.Generator().manual_seed(4)
    layer, emb = _layer()
    ids = _ids(g)
    ids[:, 0] = 1  # a special token: never corrupted
    attn = torch.ones(B, T, dtype=torch.bool)
    attn[2, 9:] = False
    noise = CorruptionNoise(torch.rand(B, T, generator=g), torch.rand(B, T, generator=g), torch.randn(B, T, 4, generator=g))
    frac = torch.tensor([0.3, 0.5, 1.0, 0.0, 0.7])
    x = emb(ids)
    allowed = attn & (ids >= 3)
    with torch.no_grad():
        masked = layer(x, ids, emb, attn, CorruptionParams(frac, kind_weights("mask"), noise=noise))
        ref = MaskCorruption(MASK)(ids, frac, allowed, uniform=noise.select)
        assert torch.equal(masked.corrupted_ids, ref.values) and torch.equal(masked.is_corrupted, ref.is_corrupted)
        torch.testing.assert_close(masked.embeddings, emb(ref.values))

        subbed = layer(x, ids, emb, attn, CorruptionParams(frac, kind_weights("substitution"), noise=noise))
        ref = SubstitutionCorruption(layer.substitution.sampler)(ids, frac, allowed, noise.select, noise.substitute)
        assert torch.equal(subbed.corrupted_ids, ref.values)
        torch.testing.assert_close(subbed.embeddings, emb(ref.values))

        noised = layer(x, ids, emb, attn, CorruptionParams(frac, kind_weights("gaussian"), noise=noise))
        ref = GaussianCorruption(1.5)(x, frac, allowed, noise=noise.gaussian)
        torch.testing.assert_close(noised.embeddings, ref.values)
        assert torch.equal(noised.corrupted_ids, ids) and torch.equal(noised.is_corrupted, ref.is_corrupted)

        # per-example kinds in one call equal the single-kind calls row by row
        kinds = torch.stack([kind_weights(k) for k in ("mask", "substitution", "gaussian", "mask", "substitution")])
        mixed = layer(x, ids, emb, attn, CorruptionParams(frac, kinds, noise=noise))
        for row, single in enumerate((masked, subbed, noised, masked, subbed)):
            torch.testing.assert_close(mixed.embeddings[row], single.embeddings[row])
        # nothing outside allowed ever changes, whatever the kind
        for out in (masked, subbed, noised, mixed):
            torch.testing.assert_close(out.embeddings[~allowed], x[~allowed])
            assert not out.is_corrupted[~allowed].any()


def test_layer_user_allowed_mask_and_default_kind():
    g = torch.Generator().manual_seed(5)
    layer, emb = _layer(kind="substitution")
    ids = _ids(g)
    attn = torch.ones(B, T, dtype=torch.bool)
    only_first_half = torch.zeros(B, T, dtype=torch.bool)
    only_first_half[:, : T // 2] = True
    with torch.no_grad():
        out = layer(emb(ids), ids, emb, attn, CorruptionParams(torch.ones(B), allowed=only_first_half))
    assert torch.equal(out.is_corrupted, only_first_half)
    assert (out.corrupted_ids[:, : T // 2] != ids[:, : T // 2]).all()  # default kind: substitution
    assert torch.equal(out.corrupted_ids[:, T // 2:], ids[:, T // 2:])
    with pytest.raises(ConfigError, match="corruption kind"):
        kind_weights("blur")
    assert math.isclose(float(kind_weights({"mask": 0.25, "gaussian": 0.75}).sum()), 1.0)

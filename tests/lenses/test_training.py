"""Lens training on synthetic activations: pooled layer choice, the refit on validation sentences, settings."""

from __future__ import annotations

import pytest
import torch

from cortex.errors import ConfigError
from cortex.lenses.dataset import ConceptSplit, DatasetConfig, LensDataset
from cortex.lenses.training import LensTrainingConfig, _pooled, train_lenses


def _synthetic(n_concepts: int = 3, d: int = 8, seed: int = 0):
    """Concept ``c`` lives on axis ``c`` for its train/test rows and on axis ``n_concepts + c`` for its
    validation rows, so only a probe that also learned from the validation rows separates them."""
    g = torch.Generator().manual_seed(seed)
    rows: list[torch.Tensor] = []
    splits = []

    def add(v: torch.Tensor, n: int) -> list[int]:
        start = len(rows)
        rows.extend(v + 0.05 * torch.randn(n, d, generator=g))
        return list(range(start, len(rows)))

    for c in range(n_concepts):
        on, off = torch.zeros(d), torch.zeros(d)
        on[c], off[c] = 2.0, -2.0
        von, voff = torch.zeros(d), torch.zeros(d)
        von[n_concepts + c], voff[n_concepts + c] = 2.0, -2.0
        s = ConceptSplit(f"C{c}", train_pos=add(on, 6), train_neg=add(off, 6), val_pos=add(von, 2),
                         val_neg=add(voff, 2), test_pos=add(on, 2), test_neg=add(off, 2))
        s.hint_rows = set(s.train_pos[:2] + s.train_neg[:2])
        s.val_hint_rows = set(s.val_pos + s.val_neg)
        splits.append(s)
    X = torch.stack(rows)
    texts = [f"t{i}" for i in range(len(rows))]
    return X, LensDataset(texts=texts, splits=splits, calibration=[0, 1])


def _cfg(**kw) -> LensTrainingConfig:
    base = dict(probe="linear", layer_norm=False, input_norm="none", steps=60, lr=5e-2, max_rounds=1,
                hard_negatives=0, target_f1=1.0)
    return LensTrainingConfig(**{**base, **kw})


def _val_margin(result, dataset, X, layer) -> float:
    """Mean (logit on own validation positives - logit on own validation negatives) over concepts."""
    margins = []
    for s in dataset.splits:
        t = result.probes[layer][s.term]
        z = X @ t["W"] + t["b"]
        margins.append(float(z[s.val_pos].mean() - z[s.val_neg].mean()))
    return sum(margins) / len(margins)


def test_refit_learns_from_validation_sentences_and_keeps_test_scores():
    X, ds = _synthetic()
    acts = {0: X}
    plain = train_lenses(acts, ds, _cfg(refit=False), 1)
    refit = train_lenses(acts, ds, _cfg(refit=True), 1)
    assert _val_margin(refit, ds, X, 0) > _val_margin(plain, ds, X, 0) + 2.0
    for m in refit.primary_metrics():
        assert m.test_f1 == 1.0
        # val_f1 is the graduation loop's, measured before the refit, so it equals the plain run's
        assert m.val_f1 == plain.metrics[0][m.concept].val_f1


def test_pooled_layer_choice_gives_every_concept_the_same_layers():
    torch.manual_seed(0)
    X, ds = _synthetic(n_concepts=4, d=10)
    noise = torch.randn(4, *X.shape)
    acts = {0: X + 3.0 * noise[0], 1: X + 0.2 * noise[1], 2: X + 2.5 * noise[2], 3: X + 3.0 * noise[3]}
    res = train_lenses(acts, ds, _cfg(), 6)  # layers 0,1 early; 2,3 mid
    primary = {m.concept: m.layer for m in res.primary_metrics()}
    assert set(primary) == {s.term for s in ds.splits} and len(set(primary.values())) == 1
    assert {l for l, per in res.metrics.items() if per} in ({0, 2}, {0, 3}, {1, 2}, {1, 3})
    for per in res.metrics.values():
        assert not per or len(per) == len(ds.splits)
    per_concept = train_lenses(acts, ds, _cfg(layer_choice="concept"), 6)
    assert {m.concept for m in per_concept.primary_metrics()} == set(primary)


def test_pooled_scores_average_over_concepts_with_validation():
    score = torch.tensor([[1.0, 3.0, 100.0], [2.0, float("inf"), 50.0]])
    has_val = torch.tensor([True, True, False])
    out = _pooled(score, has_val)
    assert out.shape == score.shape
    torch.testing.assert_close(out[0], torch.full((3,), 2.0))
    torch.testing.assert_close(out[1], torch.full((3,), 2.0))  # the untrained (inf) pair does not count
    torch.testing.assert_close(_pooled(score, torch.zeros(3, dtype=torch.bool))[0], torch.full((3,), 104 / 3))


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="layer_choice"):
        LensTrainingConfig(layer_choice="best")
    with pytest.raises(ConfigError, match="hint_weight"):
        LensTrainingConfig(data=DatasetConfig(hint_weight=0.0))


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        LensTrainingConfig(probe="svm", dropout=1.0, lr=0.0, steps=0, data={"n_folds": 1, "hint_weigth": 2.0})
    fields = {p.field for p in info.value.problems}
    assert fields == {"data.hint_weigth", "probe", "dropout", "lr", "steps", "data.n_folds"}
    assert "6 problems" in str(info.value) and "Did you mean 'hint_weight'" in str(info.value)

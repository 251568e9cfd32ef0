import math

import numpy as np
import pytest
import torch

from cortex.tasks import metrics as M


def test_spearman_and_rmse_closed_form():
    p = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    t = torch.tensor([5.0, 6.0, 7.0, 8.0, 7.5])
    # ranks of t: 1,2,3.5? no ties here: 1,2,3,5,4 -> d = 0,0,0,-1,1 -> rho = 1 - 6*2/(5*24)
    assert M.spearman_rho(p, t) == pytest.approx(1 - 6 * 2 / (5 * 24))
    assert M.rmse(p, t) == pytest.approx(math.sqrt(np.mean((p - t).numpy() ** 2)))
    assert math.isnan(M.spearman_rho(torch.ones(4), torch.arange(4.0)))


def test_gaussian_nll_matches_torch():
    mean, var, y = torch.randn(7), torch.rand(7) + 0.1, torch.randn(7)
    ref = torch.nn.functional.gaussian_nll_loss(mean, y, var, full=True)
    assert M.gaussian_nll(mean, var, y) == pytest.approx(float(ref), rel=1e-6)


def test_auroc_by_pair_counting():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    y = torch.tensor([0, 0, 1, 1, 1])
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    expected = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert M.auroc(s, y) == pytest.approx(expected)
    assert math.isnan(M.auroc(s, torch.ones(5)))


def test_ece_perfectly_calibrated_and_overconfident():
    probs = torch.tensor([[0.9, 0.1]] * 10)
    target = torch.tensor([0] * 9 + [1])
    assert M.expected_calibration_error(probs, target) == pytest.approx(0.0, abs=1e-6)
    assert M.expected_calibration_error(probs, torch.tensor([0] * 5 + [1] * 5)) == pytest.approx(0.4)


def test_macro_f1_and_masked_tokens():
    pred, tgt = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    # class0 f1=1, class1: tp1 fp1 fn0 -> 2/3, class2: tp1 fp0 fn1 -> 2/3
    assert M.macro_f1(pred, tgt) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    logits = torch.full((1, 3, 5), -10.0)
    logits[0, 0, 2] = logits[0, 1, 4] = 10.0
    out = M.masked_token_metrics(logits, torch.tensor([[2, 3, 0]]), torch.tensor([[1, 1, 0]]))
    assert out["masked_acc"] == 0.5 and out["perplexity"] > 1

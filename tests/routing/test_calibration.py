"""Temperature scaling: recovers a known temperature and is the global NLL minimum."""

from __future__ import annotations

import numpy as np
import pytest

from cortex.errors import InputError
from cortex.routing.calibration import fit_temperature, nll, sigmoid, softmax


def test_recovers_the_temperature_labels_were_drawn_with():
    rng = np.random.default_rng(11)
    z = rng.normal(0, 3, size=(20000, 5))
    p = softmax(z, temperature=2.5)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(z, y) == pytest.approx(2.5, rel=0.05)


def test_is_the_minimum_of_the_nll_on_a_fine_grid():
    rng = np.random.default_rng(13)
    z = rng.normal(0, 2, size=(311, 7))
    y = np.array([rng.choice(7, p=row) for row in softmax(z, temperature=1.7)])
    t = fit_temperature(z, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 4001))
    best = grid[np.argmin([nll(z, y, g) for g in grid])]
    assert nll(z, y, t) <= nll(z, y, best) + 1e-9
    assert t == pytest.approx(best, rel=0.01)


def test_binary_logits_and_argmax_invariance():
    rng = np.random.default_rng(17)
    z = rng.normal(0, 4, 5000)
    y = (rng.random(5000) < sigmoid(z, temperature=0.5)).astype(int)
    assert fit_temperature(z, y) == pytest.approx(0.5, rel=0.08)
    zz = rng.normal(size=(9, 4))
    assert (softmax(zz, 3.0).argmax(1) == zz.argmax(1)).all()
    with pytest.raises(InputError, match="class indices"):
        fit_temperature(zz, np.full(9, 4))

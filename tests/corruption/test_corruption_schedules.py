"""Noise schedules: corruption fraction 1 - alpha_bar(t), monotone, uniform timesteps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cortex.corruption import SCHEDULES, CorruptionParams, NoiseSchedule
from cortex.errors import ConfigError


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_fraction_rises_from_zero(name):
    s = NoiseSchedule(name, num_steps=13)
    frac = s.corrupt_frac(torch.arange(14))
    assert frac[0] == 0.0
    assert (frac[1:] - frac[:-1] >= 0).all() and (frac[1:] > 0).all() and frac[-1] <= 1.0
    assert frac[-1] > 0.5


def test_closed_forms():
    T = 11
    t = torch.arange(T + 1)
    torch.testing.assert_close(NoiseSchedule("mask_linear", T).corrupt_frac(t), (t / T).float())
    s = t.double() / T
    cos = np.cos((s.numpy() + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(NoiseSchedule("cosine", T).corrupt_frac(t).numpy(), 1 - cos, atol=1e-6)
    sq = np.where(t.numpy() == 0, 1.0, np.maximum(1 - np.sqrt(s.numpy() + 1e-4), 0.0))
    np.testing.assert_allclose(NoiseSchedule("sqrt", T).corrupt_frac(t).numpy(), 1 - sq, atol=1e-6)
    T = 101  # with fewer steps the scaled betas pass 1 and are clipped at 0.999
    betas = np.linspace(1e-4, 0.02, T) * 1000 / T
    lin = np.concatenate([[1.0], np.cumprod(1 - betas)])
    np.testing.assert_allclose(NoiseSchedule("linear", T).corrupt_frac(torch.arange(T + 1)).numpy(), 1 - lin, atol=1e-6)


def test_timesteps_are_uniform_on_one_to_T():
    s = NoiseSchedule("cosine", num_steps=7)
    t = s.sample_timesteps(7000, generator=torch.Generator().manual_seed(0))
    assert t.min() == 1 and t.max() == 7
    counts = torch.bincount(t, minlength=8)[1:].float()
    assert (counts - 1000).abs().max() < 120
    p = CorruptionParams.sample(5, s, kind="gaussian", generator=torch.Generator().manual_seed(0))
    assert p.frac.shape == (5,) and (p.frac > 0).all() and p.kind.tolist() == [0.0, 0.0, 1.0]


def test_bad_schedules():
    with pytest.raises(ConfigError, match="schedule='cosin'"):
        NoiseSchedule("cosin")
    with pytest.raises(ConfigError, match="num_steps"):
        NoiseSchedule("linear", 0)
    with pytest.raises(ConfigError, match="timesteps"):
        NoiseSchedule("linear", 5).corrupt_frac(torch.tensor([6]))

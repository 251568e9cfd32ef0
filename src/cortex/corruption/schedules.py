"""Noise schedules and the timestep distribution used to pick a corruption fraction per example.

A schedule is the signal level ``alpha_bar(t)`` on ``t = 0, 1, ..., T`` with ``alpha_bar(0) = 1``
(clean) falling towards 0. cortex reads the **corruption fraction** of step ``t`` as

    corrupt_frac(t) = 1 - alpha_bar(t)

so it rises from 0 at ``t = 0`` to about 1 at ``t = T``. A mask or substitution process corrupts
each allowed position independently with that probability; the Gaussian process mixes
``sqrt(1 - f) * x + sqrt(f) * scale * noise`` (see :mod:`cortex.corruption.processes`).

Timesteps for training are drawn **uniformly from {1, ..., T}** (never 0, so every training
example is corrupted at least a little); that is the only timestep distribution here, and the
per-example fractions are therefore distributed as ``1 - alpha_bar(U)``, ``U ~ Uniform{1..T}``.

Schedules (``alpha_bar`` as a function of ``s = t / T``):

- ``linear``: DDPM betas ``linspace(1e-4, 0.02) * 1000 / T`` (clipped at 0.999), ``alpha_bar = cumprod(1 - beta)``.
- ``cosine``: ``cos((s + 0.008) / 1.008 * pi / 2) ** 2`` normalised to 1 at ``s = 0`` (Nichol & Dhariwal).
- ``sqrt``: ``max(1 - sqrt(s + 1e-4), 0)`` (Li et al., Diffusion-LM), with ``alpha_bar(0) = 1``.
- ``mask_linear``: ``1 - s``, so the corruption fraction is exactly ``t / T`` (masked diffusion).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cortex.errors import ConfigError


def _linear(num_steps: int) -> torch.Tensor:
    scale = 1000.0 / num_steps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64, device="cpu").clamp(max=0.999)
    return torch.cumprod(1.0 - betas, 0)


def _cosine(num_steps: int) -> torch.Tensor:
    s = torch.arange(1, num_steps + 1, dtype=torch.float64, device="cpu") / num_steps
    f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return (f / math.cos(0.008 / 1.008 * math.pi / 2) ** 2).clamp(min=0.0, max=1.0)


def _sqrt(num_steps: int) -> torch.Tensor:
    s = torch.arange(1, num_steps + 1, dtype=torch.float64, device="cpu") / num_steps
    return (1.0 - torch.sqrt(s + 1e-4)).clamp(min=0.0)


def _mask_linear(num_steps: int) -> torch.Tensor:
    return 1.0 - torch.arange(1, num_steps + 1, dtype=torch.float64, device="cpu") / num_steps


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": _linear,
    "cosine": _cosine,
    "sqrt": _sqrt,
    "mask_linear": _mask_linear,
}


class NoiseSchedule:
    """A discretised noise schedule with ``num_steps`` steps.

    >>> sched = NoiseSchedule("cosine", num_steps=1000)
    >>> sched.corrupt_frac(torch.tensor([0, 500, 1000]))      # rises from 0 to ~1
    >>> sched.sample_corrupt_frac(7)                           # (7,) fractions, t ~ Uniform{1..T}

    Attributes:
        alpha_bar: ``(num_steps + 1,)`` float64 signal level, ``alpha_bar[0] == 1``.
    """

    def __init__(self, name: str = "cosine", num_steps: int = 1000):
        if name not in SCHEDULES:
            raise ConfigError.bad_choice("schedule", name, SCHEDULES)
        if int(num_steps) < 1:
            raise ConfigError(f"num_steps={num_steps} must be at least 1; pass e.g. num_steps=1000.")
        self.name = name
        self.num_steps = int(num_steps)
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), SCHEDULES[name](self.num_steps)])

    def corrupt_frac(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``1 - alpha_bar[t]`` for integer ``timesteps`` of any shape, as float32."""
        t = torch.as_tensor(timesteps, dtype=torch.long, device="cpu")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.num_steps):
            raise ConfigError(f"timesteps must lie in [0, {self.num_steps}]; got {t.min().item()}..{t.max().item()}.")
        return (1.0 - self.alpha_bar[t]).float()

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch_size,)`` int64 timesteps drawn uniformly from ``{1, ..., num_steps}``."""
        return torch.randint(1, self.num_steps + 1, (batch_size,), generator=generator, device="cpu")

    def sample_corrupt_frac(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch_size,)`` float32 corruption fractions for uniformly drawn timesteps."""
        return self.corrupt_frac(self.sample_timesteps(batch_size, generator))

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, num_steps={self.num_steps})"

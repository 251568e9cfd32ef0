"""Autonomic steering: bound parsing, the controller's recursion in closed form, exceedances reduced."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cortex.errors import ConfigError
from cortex.lenses.probes import LinearProbe
from cortex.steering.autonomic import (
    AutonomicController,
    Bound,
    BoundRule,
    ControllerSettings,
    build_rules,
    correction_direction,
)
from cortex.steering.monitor import MonitorSettings, run_monitor
from cortex.steering.vectors import ConceptVector, contrast_direction


class Passthrough(nn.Module):
    """A block that returns its input, so the hidden states seen by the controller are the ones fed in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _probe(d: int, slope: float) -> LinearProbe:
    probe = LinearProbe(d)
    probe.linear.weight.data = torch.zeros(1, d)
    probe.linear.weight.data[0, 0] = slope
    probe.linear.bias.data.zero_()
    return probe.eval()


def test_bound_parsing():
    assert Bound.parse(" Deception <= 0.3") == Bound("Deception", "<=", 0.3)
    assert Bound.parse("python>=0.75") == Bound("python", ">=", 0.75)
    assert str(Bound.parse("a<=0.5")) == "a<=0.5"
    for bad in ("python<0.3", "python<=", "<=0.2", "python<=1.5"):
        with pytest.raises(ConfigError):
            Bound.parse(bad)
    with pytest.raises(ConfigError, match="decay"):
        ControllerSettings(decay=1.0)


def test_controller_follows_its_recursion_and_reduces_exceedance():
    d, slope, bound, gain, decay, cap = 5, 4.0, 0.3, 2.0, 0.5, 3.0
    block = Passthrough()
    e0, e1 = torch.eye(d)[0], torch.eye(d)[1]
    direction = contrast_direction(e1, e0)                                   # toward e1, away from e0
    rule = BoundRule(Bound("A", "<=", bound), layer=0, probe=_probe(d, slope), direction=direction, toward="B")
    ramp = torch.linspace(-1.0, 2.0, 13)                                     # concept coordinate per token
    ctl = AutonomicController([block], [rule], ControllerSettings(gain=gain, decay=decay, max_strength=cap))
    outs = []
    with ctl, torch.no_grad():
        for x0 in ramp:
            outs.append(block((x0 * e0).view(1, 1, d))[0, -1])
    assert len(block._forward_hooks) == 0
    # independent recomputation of u_t and the corrected score
    u, want_u, want_after = 0.0, [], []
    for x0 in ramp.tolist():
        before = 1 / (1 + math.exp(-slope * x0))
        u = min(cap, decay * u + gain * max(0.0, before - bound))
        want_u.append(u)
        moved = x0 - (u * abs(x0) / math.sqrt(2) if u > 1e-3 else 0.0)      # ‖h‖ = |x0|, direction·e0 = -1/√2
        want_after.append(1 / (1 + math.exp(-slope * moved)))
    got_after = [r.score_after for r in ctl.readings]
    assert got_after == pytest.approx(want_after, abs=1e-5)
    assert [r.strength for r in ctl.interventions] == pytest.approx([w for w in want_u if w > 1e-3], abs=1e-5)
    assert [r.step for r in ctl.interventions] == [t for t, w in enumerate(want_u) if w > 1e-3]
    for rec in ctl.interventions:
        # corrections scale with ‖h‖, so the token at x0 = 0 cannot move; every other one moves down
        moved_down = rec.score_after < rec.score_before or float(ramp[rec.step]) == 0.0
        assert moved_down and rec.toward == "B" and rec.concept == "A"
    before_frac, after_frac = ctl.exceedance(after=False), ctl.exceedance(after=True)
    assert before_frac == pytest.approx(sum(1 / (1 + math.exp(-slope * x)) > bound for x in ramp.tolist()) / 13)
    assert after_frac < before_frac
    # the output handed to the next block is the corrected state
    assert float(outs[-1][0]) < float(ramp[-1])


def test_lower_bounds_push_toward_the_concept():
    d = 4
    c = ConceptVector("A", 0, torch.eye(d)[0], torch.zeros(d), "mean_diff")
    o = ConceptVector("B", 0, -torch.eye(d)[0] + 0.1 * torch.eye(d)[1], torch.zeros(d), "mean_diff")
    up = correction_direction(Bound("A", ">=", 0.8), c, o)
    down = correction_direction(Bound("A", "<=", 0.2), c, o)
    assert float(up @ c.direction) > 0 > float(down @ c.direction)
    assert torch.equal(correction_direction(Bound("A", "<=", 0.2), c, None), -c.direction)
    block = Passthrough()
    rule = BoundRule(Bound("A", ">=", 0.8), 0, _probe(d, 3.0), up, "A")
    ctl = AutonomicController([block], [rule], ControllerSettings(gain=3.0, max_strength=3.0))
    with ctl, torch.no_grad():
        for _ in range(5):
            block(-0.5 * torch.eye(d)[0].view(1, 1, d) + 0.2)
    assert ctl.exceedance(after=True) < ctl.exceedance(after=False) == 1.0


def test_harness_on_the_demo_model(demo_loaded):
    reg, loaded, pack, vectors = demo_loaded
    rules = build_rules(pack, vectors, [Bound.parse("python<=0.3")])
    assert rules[0].toward == "prose" and rules[0].layer == pack.concepts()["python"]
    prompt = "    def __init__(self, name):\n        self."
    kw = dict(vectors=vectors, opposites=vectors.opposites)
    free = run_monitor(loaded, pack, prompt, settings=MonitorSettings(max_new_tokens=24, divergence=None), **kw)
    held = run_monitor(loaded, pack, prompt, bounds=[Bound.parse("python<=0.3")],
                       settings=MonitorSettings(max_new_tokens=24, divergence=None), **kw)
    col = free.concepts.index("python")
    above_free = sum(r[col] > 0.3 for r in free.scores)
    above_held = sum(r[col] > 0.3 for r in held.scores)
    assert above_free > 0 and above_held < above_free
    assert held.interventions and all(r["score_after"] < r["score_before"] for r in held.interventions)
    ex = held.exceedance["python<=0.3"]
    assert ex["after"] < ex["before"]

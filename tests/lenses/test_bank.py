"""BatchedLensBank: parity with per-probe evaluation, mixed LayerNorm, add/remove without rebuilds."""

from __future__ import annotations

import pytest
import torch

from cortex.errors import InputError, PackError
from cortex.lenses.bank import BatchedLensBank
from cortex.lenses.probes import LinearProbe, MLPClassifier

D = 13


def _probes(n: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    mean, std = torch.randn(D), torch.rand(D) + 0.5
    out = {}
    for i in range(n):
        p = MLPClassifier(D, layer_norm=i % 3 == 0) if i % 4 else LinearProbe(D, layer_norm=i % 8 == 0)
        if p.norm is not None:  # a LayerNorm affine that is not the identity, so folding is exercised
            p.norm.weight.data.normal_()
            p.norm.bias.data.normal_()
        out[f"c{i}"] = p.set_normalizer(mean, std).eval()
    return out, mean, std


def _reference(probes: dict, names: list[str], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([probes[n](x) for n in names], dim=-1)


def test_bank_matches_per_probe_evaluation_with_mixed_layernorm():
    probes, mean, std = _probes(11)
    bank = BatchedLensBank(D, input_mean=mean, input_std=std)
    bank.add(probes)
    x = torch.randn(5, D) * 3
    assert bank.logits(x).shape == (5, 11)
    assert (bank.logits(x) - _reference(probes, bank.names, x)).abs().max() < 1e-5
    one = bank.logits(x[2])
    assert one.shape == (11,) and (one - bank.logits(x)[2]).abs().max() < 1e-5
    assert set(bank.names) == set(probes) and len(bank) == 11


def test_add_and_remove_keep_parity_and_do_not_rebuild():
    probes, mean, std = _probes(13)
    bank = BatchedLensBank(D, input_mean=mean, input_std=std)
    bank.add({k: probes[k] for k in list(probes)[:7]})
    groups_before = {k: id(g.store.get("W1", g.store.get("W"))) for k, g in bank.groups.items()}
    bank.remove(["c1", "c4"])
    bank.add({k: probes[k] for k in list(probes)[7:9]})        # fits in spare capacity: no reallocation
    assert {k: id(g.store.get("W1", g.store.get("W"))) for k, g in bank.groups.items() if k in groups_before} == groups_before
    bank.add({k: probes[k] for k in list(probes)[9:]})
    x = torch.randn(7, D)
    assert "c1" not in bank and "c12" in bank and len(bank) == 11
    assert (bank.logits(x) - _reference(probes, bank.names, x)).abs().max() < 1e-5
    bank.remove(list(bank.names))
    assert bank.logits(x).shape == (7, 0)


def test_adding_a_name_twice_replaces_it():
    probes, mean, std = _probes(5)
    bank = BatchedLensBank(D, input_mean=mean, input_std=std)
    bank.add(probes)
    bank.add({"c2": probes["c3"]})
    x = torch.randn(3, D)
    assert len(bank) == 5
    torch.testing.assert_close(bank.logits(x)[:, bank.names.index("c2")], _reference(probes, ["c3"], x)[:, 0],
                               atol=1e-5, rtol=1e-5)


def test_bank_refuses_wrong_width_statistics_and_unknown_names():
    probes, mean, std = _probes(2)
    bank = BatchedLensBank(D, input_mean=mean, input_std=std)
    with pytest.raises(PackError, match="7-wide"):
        bank.add({"wide": MLPClassifier(7)})
    with pytest.raises(PackError, match="statistics"):
        bank.add({"other": MLPClassifier(D)})                   # default (identity) statistics differ
    with pytest.raises(PackError, match="not in this bank"):
        bank.remove(["nope"])
    bank.add(probes)
    with pytest.raises(InputError, match="13-wide"):
        bank.logits(torch.randn(4, 5))


def test_bf16_bank_is_close():
    probes, mean, std = _probes(6)
    bank = BatchedLensBank(D, input_mean=mean, input_std=std, dtype=torch.bfloat16)
    bank.add(probes)
    x = torch.randn(4, D)
    assert (bank.logits(x) - _reference(probes, bank.names, x)).abs().max() < 0.1

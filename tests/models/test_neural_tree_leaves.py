"""Leaf losses against closed forms computed independently here (numpy/scipy, moment form)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import cortex  # noqa: F401
from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel, RegressorLeafOutput
from cortex.models.neural_tree.specs import ClassifierLeafSpec, DenoisingLMLeafSpec, RegressorLeafSpec
from cortex.models.neural_tree.leaves import ClassifierLeaf, DenoisingLMLeaf, RegressorLeaf
from cortex.models.neural_tree.outputs import BranchOutput, ClassifierLeafOutput, DenoisingLMLeafOutput

E, B, O = 3, 7, 2
NOMINAL_VAR = 0.25 ** 2


def _params(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    eta1 = torch.randn(E, B, O, generator=g, dtype=torch.float64)
    eta2 = -torch.rand(E, B, O, generator=g, dtype=torch.float64) * 2 - 0.1
    return eta1, eta2


def _leaf(**kw) -> RegressorLeaf:
    spec = RegressorLeafSpec(branch="b", out_dim=O, ensemble_size=E, **kw)
    return RegressorLeaf(spec, in_dim=5).double()


def _moment(eta1: torch.Tensor, eta2: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    var = -1.0 / (2.0 * eta2.numpy())
    return eta1.numpy() * var, var


def test_forward_is_the_natural_parameterization():
    leaf = _leaf(var_floor=0.05)
    pooled = torch.randn(E, B, 5, dtype=torch.float64)
    out = leaf(BranchOutput(features=pooled[:, :, None], attention_mask=torch.ones(B, 1, dtype=torch.bool), pooled=pooled), None)
    raw = torch.stack([leaf.heads[e](pooled[e]) for e in range(E)])
    eta2 = -np.log1p(np.exp(raw[..., O:].detach().numpy()))  # -softplus
    np.testing.assert_allclose(out.eta1.detach().numpy(), raw[..., :O].detach().numpy())
    np.testing.assert_allclose(out.eta2.detach().numpy(), eta2, rtol=1e-12)
    var = np.maximum(-1 / (2 * eta2), 0.05)
    np.testing.assert_allclose(out.scale.detach().numpy(), np.sqrt(var), rtol=1e-12)
    np.testing.assert_allclose(out.loc.detach().numpy(), raw[..., :O].detach().numpy() * var, rtol=1e-12)


def test_variance_floor_holds_in_the_loss_too():
    leaf = _leaf(var_floor=0.5)
    with torch.no_grad():  # raw second outputs of 3 and 40: variances 1/(2 softplus) below the 0.5 floor
        for head in leaf.heads:
            head[-1].weight.zero_()
            head[-1].bias.copy_(torch.tensor([0.3, -0.2, 3.0, 40.0], dtype=torch.float64))
    pooled = torch.randn(E, B, 5, dtype=torch.float64)
    out = leaf(BranchOutput(features=pooled[:, :, None], attention_mask=torch.ones(B, 1, dtype=torch.bool), pooled=pooled), None)
    np.testing.assert_allclose(out.scale.detach().numpy(), np.sqrt(0.5))
    np.testing.assert_allclose(out.eta2.detach().numpy(), -1.0)  # -1 / (2 * floor)
    y = torch.randn(B, O, dtype=torch.float64)
    # the loss is the NLL of the floored Gaussian the leaf reports, not of the unfloored one
    expected = -stats.norm.logpdf(y.numpy()[None], loc=out.loc.detach().numpy(), scale=np.sqrt(0.5)).mean()
    assert leaf.loss(out, y).item() == pytest.approx(expected, rel=1e-10)


def test_nll_matches_gaussian_log_density():
    leaf = _leaf()
    eta1, eta2 = _params(1)
    y = torch.randn(B, O, dtype=torch.float64)
    out = RegressorLeafOutput(loc=eta1, scale=eta2, eta1=eta1, eta2=eta2)
    mean, var = _moment(eta1, eta2)
    expected = -stats.norm.logpdf(y.numpy()[None], loc=mean, scale=np.sqrt(var)).mean()
    assert leaf.loss(out, y).item() == pytest.approx(expected, rel=1e-10)


def test_smoothed_kl_matches_closed_form_and_zero_alpha_is_nll():
    leaf = _leaf(nominal_label_var=NOMINAL_VAR)
    eta1, eta2 = _params(2)
    y = torch.randn(B, O, dtype=torch.float64) * 2
    alpha = torch.tensor([0.0, 0.3, 0.0, 0.5, 0.9, 0.0, 0.1], dtype=torch.float64)
    out = RegressorLeafOutput(loc=eta1, scale=eta2, eta1=eta1, eta2=eta2)
    mu_q, var_q = _moment(eta1, eta2)
    a = alpha.numpy()[:, None]
    yn = y.numpy()
    # the target: moment average of N(0, 1) and N(y, s0^2) with weights a, 1 - a
    m = a * 0.0 + (1 - a) * yn
    second = a * (0.0 + 1.0) + (1 - a) * (yn ** 2 + NOMINAL_VAR)
    v = second - m ** 2
    kl = 0.5 * (np.log(var_q / v) + (v + (m - mu_q) ** 2) / var_q - 1.0)
    nll = -stats.norm.logpdf(yn[None], loc=mu_q, scale=np.sqrt(var_q))
    expected = np.where(a[None] > 0, kl, nll).mean()
    assert leaf.loss(out, y, alpha=alpha).item() == pytest.approx(expected, rel=1e-10)
    # alpha = 0 for every example is exactly the plain NLL
    assert leaf.loss(out, y, alpha=torch.zeros(B, dtype=torch.float64)).item() == pytest.approx(nll.mean(), rel=1e-12)
    assert leaf.loss(out, y, alpha=0.0).item() == leaf.loss(out, y).item()


def test_target_standardization_is_fitted_used_and_saved(tmp_path):
    torch.manual_seed(0)
    tree = NeuralTreeModel(NeuralTreeConfig(leaves={"y": {"kind": "regressor", "branch": "branch", "out_dim": 2}})).eval()
    y_train = torch.tensor([[1.0, 100.0], [3.0, 300.0], [5.0, float("nan")], [7.0, 500.0]])
    tree.fit_target_standardization("y", y_train)
    leaf = tree.leaves["y"]
    np.testing.assert_allclose(leaf.target_mean.numpy(), [4.0, 300.0])
    np.testing.assert_allclose(leaf.target_std.numpy(), [np.std([1, 3, 5, 7]), np.std([100, 300, 500])], rtol=1e-6)
    out = tree(tree.dummy_inputs)
    reg = out.leaf_outputs["y"]
    var = torch.clamp(-0.5 / reg.eta2, min=1e-4)
    torch.testing.assert_close(reg.loc, reg.eta1 * var * leaf.target_std + leaf.target_mean)
    torch.testing.assert_close(reg.scale, var.sqrt() * leaf.target_std)
    # the loss runs in standardized units: the NLL of y equals that of (y - mean) / std
    y = torch.tensor([[2.0, 250.0], [6.0, float("nan")]])
    z = ((y - leaf.target_mean) / leaf.target_std).numpy()
    mu, v = _moment(reg.eta1.detach().double(), reg.eta2.detach().double())
    ok = np.isfinite(z)
    expected = -stats.norm.logpdf(z[None], loc=mu, scale=np.sqrt(v))[np.broadcast_to(ok[None], mu.shape)].mean()
    assert tree.leaf_loss("y", out, y).item() == pytest.approx(expected, rel=1e-5)
    tree.save_pretrained(tmp_path)
    again = NeuralTreeModel.from_pretrained(tmp_path)
    torch.testing.assert_close(again.leaves["y"].target_mean, leaf.target_mean)
    torch.testing.assert_close(again.leaves["y"].target_std, leaf.target_std)


def test_classifier_cross_entropy_with_per_example_smoothing():
    C = 5
    leaf = ClassifierLeaf(ClassifierLeafSpec(branch="b", num_classes=C, ensemble_size=E), in_dim=4)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(E, B, C, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=g)
    alpha = torch.linspace(0, 0.6, B, dtype=torch.float64)
    x = logits.numpy()
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    target = (1 - alpha.numpy()[:, None]) * np.eye(C)[y.numpy()] + alpha.numpy()[:, None] / C
    expected = -(target[None] * logp).sum(-1).mean()
    got = leaf.loss(ClassifierLeafOutput(logits=logits), y, alpha=alpha).item()
    assert got == pytest.approx(expected, rel=1e-6)
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, C), y.repeat(E)).item()
    assert leaf.loss(ClassifierLeafOutput(logits=logits), y).item() == pytest.approx(plain, rel=1e-6)


def test_denoising_loss_is_cross_entropy_at_corrupted_positions():
    V, T = 11, 13
    leaf = DenoisingLMLeaf(DenoisingLMLeafSpec(branch="b", root="p", vocab_size=V, ensemble_size=2), in_dim=4)
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, B, T, V, generator=g)
    ids = torch.randint(0, V, (B, T), generator=g)
    corrupted = torch.rand(B, T, generator=g) < 0.3
    x = logits.double().numpy()
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, ids.numpy()[None, ..., None].repeat(2, 0), -1)[..., 0]  # (2, B, T)
    expected = -picked[:, corrupted.numpy()].mean()
    got = leaf.loss(DenoisingLMLeafOutput(logits=logits), ids, mask=corrupted).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert leaf.loss(DenoisingLMLeafOutput(logits=logits), ids, mask=torch.zeros(B, T, dtype=torch.bool)).item() == 0.0


def test_tree_losses_with_corruption_fraction_smoothing():
    from cortex.corruption import CorruptionParams

    torch.manual_seed(5)
    cfg = NeuralTreeConfig(
        roots={"p": {"kind": "conv1d", "out_dim": 7, "embed_dim": 5, "hidden_dim": 5, "num_blocks": 1}},
        branches={"b": {"kind": "mlp", "out_dim": 5}},
        leaves={"y": {"kind": "regressor", "branch": "b", "root": "p", "label_smoothing": "corrupt_frac"},
                "mlm": {"kind": "denoising_lm", "branch": "b", "root": "p"},
                "site": {"kind": "sequence_regressor", "branch": "b", "root": "p"}},
    )
    tree = NeuralTreeModel(cfg)
    inputs = {"p": {"input_ids": torch.randint(5, 25, (B, 11)), "attention_mask": torch.ones(B, 11, dtype=torch.long)}}
    frac = torch.linspace(0.0, 0.9, B)
    out = tree(inputs, corruption={"p": CorruptionParams(frac=frac)})
    y = torch.randn(B)
    reg = out.leaf_outputs["y"]
    by_hand = tree.leaves["y"].loss(reg, y, alpha=frac)
    torch.testing.assert_close(tree.leaf_loss("y", out, y), by_hand)
    mlm = tree.leaf_loss("mlm", out)
    assert mlm.item() > 0 and out.root_outputs["p"].is_corrupted[0].sum() == 0
    site_targets = torch.randn(B, 11)
    site_mask = torch.zeros(B, 11, dtype=torch.bool)
    site_mask[:, 3] = True
    site = out.leaf_outputs["site"]
    nll_at_3 = tree.leaves["site"].loss(site, site_targets, alpha=0.0, mask=site_mask)
    mu, v = _moment(site.eta1.detach().double()[:, :, 3], site.eta2.detach().double()[:, :, 3])
    expected = -stats.norm.logpdf(site_targets[:, 3, None].double().numpy()[None], loc=mu, scale=np.sqrt(v)).mean()
    assert nll_at_3.item() == pytest.approx(expected, rel=1e-5)
    total = sum(tree.leaf_loss(k, out, t) for k, t in (("y", y), ("site", site_targets))) + mlm
    total.backward()
    assert all(p.grad is not None for p in tree.roots["p"].parameters() if p.requires_grad)
    assert math.isfinite(total.item())

"""RouterModel: the NeuralTree plus the context root, its losses, calibration and save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cortex.errors import InputError, ModelInputError
from cortex.routing.context import CLIP, context_feature_names, request_context
from cortex.routing.model import RouterConfig, RouterModel, outputs_to_predictions

MASTERS = ["dev", "security", "cicd", "docs", "data"]


@pytest.fixture
def model(tiny_encoder):
    torch.manual_seed(0)
    # the text path alone (the lexical and topic roots have tests of their own below)
    cfg = RouterConfig(masters=MASTERS, text_source=str(tiny_encoder), hidden_dim=13, branch_dim=11, ensemble_size=3,
                       observed={"success": [True] * 5, "duration": [True, True, False, True, True],
                                 "tokens": [True] * 5}, lexical_buckets=0)
    return RouterModel.from_pretrained_text(cfg)


def tokens(model, texts):
    return model.text_tokenizer()(texts, padding=True, return_tensors="pt")


def test_forward_shapes_and_both_text_paths_agree(model):
    b = tokens(model, ["deploy the pipeline", "audit the password store please", "typo"])
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    assert out.master_logits.shape == (3, 3, 5) and out.success_logits.shape == (3, 3, 5)
    assert out.duration_loc.shape == out.tokens_scale.shape == (3, 3, 5)
    feats = model.text_features(b["input_ids"], b["attention_mask"])
    assert feats.shape == (3, 12)
    torch.testing.assert_close(model(text_features=feats).master_logits, out.master_logits)


def test_losses_match_closed_forms(model):
    torch.manual_seed(1)
    B = 7
    feats = torch.randn(B, 12)
    model.tree.fit_target_standardization("duration", torch.randn(11, 5) * 0.7 + 3.0)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    handled = torch.tensor([0, 1, 3, 3, 4, 2, 1])
    success = torch.tensor([1.0, 0.0, float("nan"), 1.0, 0.0, 1.0, float("nan")])
    log_min = torch.tensor([3.0, float("nan"), 2.5, 4.0, float("nan"), 3.3, 2.0])
    out = model(text_features=feats)
    losses = model.losses(out, labels, handled, success, log_min, None)
    ce = torch.stack([F.cross_entropy(out.master_logits[e], labels) for e in range(3)]).mean()
    torch.testing.assert_close(losses["master"], ce)
    known = ~torch.isnan(success)
    z = out.success_logits[:, known][:, torch.arange(int(known.sum())), handled[known]]  # (E, n_known)
    bce = F.binary_cross_entropy_with_logits(z, success[known].expand(3, -1))
    torch.testing.assert_close(losses["success"], bce)
    leaf = model.tree.leaves["duration"]
    obs = ~torch.isnan(log_min)
    loc = out.duration_loc[:, obs][:, torch.arange(int(obs.sum())), handled[obs]]
    scale = out.duration_scale[:, obs][:, torch.arange(int(obs.sum())), handled[obs]]
    mean, std = leaf.target_mean[handled[obs]], leaf.target_std[handled[obs]]
    m, var = (loc - mean) / std, (scale / std) ** 2
    zt = (log_min[obs] - mean) / std
    nll = 0.5 * torch.log(2 * math.pi * var) + (zt - m) ** 2 / (2 * var)
    torch.testing.assert_close(losses["duration"], nll.mean())
    assert "tokens" not in losses  # no token outcomes in this batch


def test_predictions_are_calibrated_and_log_normal(model):
    feats = torch.randn(5, 12)
    model.config.temperature_master, model.config.temperature_success = 2.0, 0.5
    model.eval()
    out = model(text_features=feats)
    pred = outputs_to_predictions(out, model.config)
    np.testing.assert_allclose(pred.probs, torch.softmax(out.master_logits.mean(0) / 2.0, -1).detach().numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(pred.success, torch.sigmoid(out.success_logits.mean(0) / 0.5).detach().numpy(), rtol=1e-5)
    mu, s = out.duration_loc.mean(0), out.duration_scale.mean(0)
    expected = torch.exp(mu + s ** 2 / 2).detach().numpy()
    np.testing.assert_allclose(pred.minutes[:, [0, 1, 3, 4]], expected[:, [0, 1, 3, 4]], rtol=1e-5)
    assert np.isnan(pred.minutes[:, 2]).all()  # cicd durations were never observed


def test_save_load_round_trip(model, tmp_path):
    from transformers import AutoModel

    model.fit_text_standardization(torch.randn(13, 12) * 3 + 1)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer_text" / "tokenizer.json").is_file()
    back = AutoModel.from_pretrained(tmp_path)
    assert isinstance(back, RouterModel)
    b = tokens(model, ["release the docker build", "x"])
    model.eval()
    torch.testing.assert_close(back(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).master_logits,
                               model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).master_logits)
    assert back.text_tokenizer()("hello")["input_ids"] == model.text_tokenizer()("hello")["input_ids"]


def test_context_root_standardizes_gates_and_clips(model):
    names = context_feature_names(MASTERS)
    assert len(names) == 3 * 5 + 3
    rng = np.random.default_rng(0)
    raw = np.full((50, len(names)), np.nan)
    raw[:, names.index("ctx__dev__queue_length")] = np.log1p(rng.integers(0, 9, 50))
    raw[:, -3] = rng.integers(1, 4, 50)  # priority
    model.context.fit_standardization(raw)
    enc = model.context
    assert enc.observed.sum() == 2
    x = torch.tensor(raw[:1], dtype=torch.float32)
    y = x.clone()
    y[0, names.index("ctx__security__latency_ms")] = 5.0  # never observed in training: ignored
    torch.testing.assert_close(enc(x), enc(y))
    j = names.index("ctx__dev__queue_length")
    far, edge = x.clone(), x.clone()
    far[0, j] = enc.mean[j] + 50 * enc.std[j]
    edge[0, j] = enc.mean[j] + CLIP * enc.std[j]
    torch.testing.assert_close(enc(far), enc(edge))
    assert not torch.allclose(enc(x), enc(edge))


def test_request_context_parses_and_rejects():
    v = request_context({"priority": 2, "timestamp": "2026-11-20T06:00:00Z",
                         "workers": {"dev": {"queue_length": 3, "success_rate": 0.5}}}, MASTERS)
    names = context_feature_names(MASTERS)
    assert v[names.index("ctx__dev__queue_length")] == pytest.approx(math.log1p(3))
    assert v[names.index("ctx__dev__success_rate")] == 0.5 and v[-3] == 2
    assert v[-2] == pytest.approx(1.0) and v[-1] == pytest.approx(0.0, abs=1e-12)  # 06:00 is a quarter turn
    assert np.isnan(v[names.index("ctx__cicd__latency_ms")])
    with pytest.raises(InputError, match="not a master"):
        request_context({"workers": {"qa": {}}}, MASTERS)
    with pytest.raises(InputError, match="unknown keys"):
        request_context({"prio": 1}, MASTERS)
    with pytest.raises(InputError, match="ISO-8601"):
        request_context({"timestamp": "yesterday"}, MASTERS)


def test_forward_rejects_bad_inputs(model):
    with pytest.raises(ModelInputError, match="exactly one of"):
        model()
    with pytest.raises(ModelInputError, match=r"\(B, 12\)"):
        model(text_features=torch.randn(2, 5))
    with pytest.raises(ModelInputError, match="one row per text"):
        model(text_features=torch.randn(2, 12), context=torch.zeros(3, 18))

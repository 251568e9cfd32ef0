from __future__ import annotations

import pytest
import torch

from cortex.anomaly.model import MetricAutoencoder, MetricAutoencoderConfig
from cortex.errors import ConfigError, ModelInputError


def test_forward_shapes_errors_and_bounds(tmp_path):
    torch.manual_seed(0)
    cfg = MetricAutoencoderConfig(n_features=5, window=7, hidden_size=11, latent_size=4,
                                  output_low=[-1, -2, -3, -4, -5], output_high=[1, 2, 3, 4, 5])
    model = MetricAutoencoder(cfg).eval()
    x = torch.randn(13, 35) * 10
    out = model(x)
    assert out.reconstruction.shape == (13, 35) and out.errors.shape == (13,) and out.feature_errors.shape == (13, 5)
    sq = (out.reconstruction - x) ** 2
    torch.testing.assert_close(out.errors, sq.mean(1))
    torch.testing.assert_close(out.feature_errors, sq.view(13, 7, 5).mean(1))
    torch.testing.assert_close(out.loss, sq.mean())
    bound = torch.tensor([1.0, 2, 3, 4, 5]).repeat(7)
    assert (out.reconstruction.abs() <= bound).all()  # reconstruction stays in the normal range
    model.save_pretrained(tmp_path)
    again = MetricAutoencoder.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(again(x).errors, out.errors)


def test_bad_inputs():
    model = MetricAutoencoder(MetricAutoencoderConfig(window=4, latent_size=3))
    with pytest.raises(ModelInputError, match=r"\(B, 20\)"):
        model(torch.zeros(2, 19))
    with pytest.raises(ConfigError, match="latent_size"):
        MetricAutoencoderConfig(window=2, n_features=2, latent_size=4)
    with pytest.raises(ConfigError, match="output_low"):
        MetricAutoencoderConfig(output_low=[0.0] * 5, output_high=[0.0] * 5)

"""cortex.models.pooling.masked_mean: the one masked mean every part of cortex pools with."""

import torch

from cortex.models.pooling import masked_mean


def test_masked_mean_matches_the_mean_of_real_positions_and_zeros_an_empty_row():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1] * 7, [0] * 7])
    out = masked_mean(hidden, mask)
    torch.testing.assert_close(out[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(out[1], hidden[1].mean(0))
    torch.testing.assert_close(out[2], torch.zeros(5))
    torch.testing.assert_close(masked_mean(hidden, mask.bool(), keepdim=True), out[:, None])

"""The pieces every small training loop shares: the optimizer step and early stopping with best weights."""

import hashlib

import torch

from cortex._cache import text_digest, text_key
from cortex._fit import BestWeights, optimizer_step


def test_best_weights_keeps_the_best_and_stops_after_patience():
    model = torch.nn.Linear(2, 1)
    stopper = BestWeights(patience=2)
    assert not stopper.restore(model)  # nothing recorded yet: nothing changes
    assert stopper.update(1.0, model) is False
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    assert stopper.update(1.5, model) is False  # one bad check
    assert stopper.update(0.99995, model) is True  # within min_delta: not an improvement, patience spent
    assert stopper.best == 1.0 and stopper.best_check == 1 and stopper.checks == 3
    assert stopper.restore(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items())


def test_best_weights_can_leave_frozen_weights_out():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    stopper = BestWeights(keep=lambda k: k.startswith("1."))
    stopper.update(0.5, model)
    frozen = model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].weight.add_(1.0)
    stopper.restore(model)
    assert torch.equal(model[0].weight, frozen + 1.0)  # not kept, so not restored
    assert not torch.equal(model[1].weight, model[1].weight + 1.0)


def test_optimizer_step_steps_every_optimizer():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opts = [torch.optim.SGD([a], lr=0.5), torch.optim.SGD([b], lr=0.25)]
    optimizer_step((a.sum() + 2 * b.sum()), opts)
    assert torch.allclose(a, torch.full((2,), 0.5)) and torch.allclose(b, torch.full((2,), 0.5))
    optimizer_step(a.sum(), opts[0])  # gradients were zeroed first: one more step of exactly lr * 1
    assert torch.allclose(a, torch.zeros(2))


def test_cache_key_is_the_sha256_of_the_text():
    assert text_digest("héllo") == hashlib.sha256("héllo".encode()).digest()
    assert text_key("héllo") == text_digest("héllo").hex() and len(text_key("")) == 64


def test_torch_threads_holds_for_the_block_only():
    from cortex._fit import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before

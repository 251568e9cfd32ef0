"""A tiny trained LaMBO-2 setup shared by the design tests (trained once per module)."""

from __future__ import annotations

import pytest
import torch

ALPHABET = "ACDEF"  # 5 states
LENGTH = 7
MATTER = (1, 4)  # the toy objective only reads these positions
TARGET_STATE = 0  # ... and rewards state 0 ('A') there


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; several threads thrash on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def toy_value(x: torch.Tensor) -> torch.Tensor:
    """Closed-form toy objective: how many of positions 1 and 4 hold state 0 (values 0, 1, 2)."""
    return (x[:, list(MATTER)] == TARGET_STATE).sum(-1).double()


def tiny_tree(objectives=("value",), feasibility_leaf=None, seed: int = 0):
    from cortex.design.surrogate import design_tree_config
    from cortex.models.neural_tree import NeuralTreeModel

    torch.manual_seed(seed)
    cfg = design_tree_config(ALPHABET, LENGTH, objectives=objectives, feasibility_leaf=feasibility_leaf,
                             ensemble_size=3, width=16, kernel_size=3, num_blocks=1)
    return NeuralTreeModel(cfg)


@pytest.fixture(scope="module")
def trained_toy(one_thread):
    """(tree, lambo) trained on 400 random sequences of the toy objective."""
    from cortex.design.acquisition import DesignObjective
    from cortex.design.lambo2 import LaMBO2, LaMBO2Config
    from cortex.design.surrogate import DesignData, SurrogateSettings, fit_surrogate

    torch.manual_seed(0)
    tree = tiny_tree()
    objective = DesignObjective(objectives=("value",))
    lambo = LaMBO2(tree, objective, alphabet=ALPHABET, config=LaMBO2Config(num_steps=2, num_mutations=2,
                                                                            guidance_steps=3), seed=0)
    g = torch.Generator().manual_seed(0)
    states = torch.randint(len(ALPHABET), (400, LENGTH), generator=g)
    data = DesignData(ids=lambo.ids(states), values=toy_value(states)[:, None])
    fit_surrogate(tree, data, objective, steps=300, settings=SurrogateSettings(batch_size=64, lr=1e-2),
                  lm_leaf="mlm", root="sequence", generator=g)
    return tree, lambo

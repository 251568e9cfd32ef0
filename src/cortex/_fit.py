"""What every small training loop in cortex shares: an optimizer step, early stopping on a
validation loss that keeps the best weights, and a thread count that holds for one run.

The loops themselves differ on purpose (epochs over windows for the anomaly autoencoder, sampled
minibatches for the design surrogate, epochs with a sparse optimizer for the router), so only these
two pieces are shared, not a trainer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch

__all__ = ["BestWeights", "optimizer_step", "torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` and put the previous count back after
    (``None``: leave it). Small models train fastest on one thread; the caller's setting is its own."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def optimizer_step(loss: torch.Tensor, optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
                   max_grad_norm: float | None = None) -> None:
    """Zero the gradients, backpropagate ``loss`` and step every optimizer (a model may need two, e.g.
    AdamW for dense weights beside SparseAdam for an embedding bag). ``max_grad_norm`` clips the global
    gradient norm over the optimizers' parameters before the step."""
    opts = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        params = [p for opt in opts for group in opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    for opt in opts:
        opt.step()


class BestWeights:
    """Early stopping on a validation loss that keeps a copy of the best weights.

    Args:
        patience: checks in a row without improvement before :meth:`update` says stop (``None``: never).
        min_delta: how much lower than the best a loss must be to count as an improvement.
        keep: which state-dict keys to copy (default all); e.g. leave out a frozen backbone, whose
            weights never change, to save the copy.

    Call :meth:`update` after each validation check and stop when it returns ``True``; then
    :meth:`restore` puts the best weights back (strictly when every key was kept).
    """

    def __init__(self, patience: int | None = None, min_delta: float = 1e-4,
                 keep: Callable[[str], bool] | None = None):
        self.patience, self.min_delta, self.keep = patience, min_delta, keep
        self.best = math.inf
        self.best_check = 0  # 1-based index of the best check, 0 before any
        self.checks = 0
        self._bad = 0
        self._state: dict[str, torch.Tensor] | None = None

    def update(self, loss: float, model: torch.nn.Module) -> bool:
        """Record one validation ``loss``; copies the weights when it is the best so far. ``True``: stop."""
        self.checks += 1
        if loss < self.best - self.min_delta:
            self.best, self.best_check, self._bad = loss, self.checks, 0
            self._state = {k: v.detach().clone() for k, v in model.state_dict().items()
                           if self.keep is None or self.keep(k)}
            return False
        self._bad += 1
        return self.patience is not None and self._bad >= self.patience

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the best weights into ``model``; ``False`` (and nothing changed) before any check improved."""
        if self._state is None:
            return False
        model.load_state_dict(self._state, strict=self.keep is None)
        return True

"""The black-box budget API shared by every optimizer (LaMBO-2, the GA, random search).

A :class:`BlackBox` wraps a user callable ``f(LongTensor [batch, length]) -> Tensor [batch]`` (states
``0..V-1``, the BoTorch / pytorch-holo convention; ``f`` may fan a batch out anywhere) and:

* never sends a sequence twice: a batch is deduplicated within itself and against the history, and
  repeats get their recorded value back for free;
* counts evaluations (distinct sequences sent) against an optional budget and never exceeds it;
* records failures instead of stopping: a candidate for which ``f`` returns NaN, or for which ``f``
  raises (a failing batch is retried one candidate at a time to find the culprits), is stored as
  failed with its error and is never sent again;
* keeps the full history (sequence, value, round, method, feasible, failed, error), exportable to a
  pandas DataFrame or parquet, and loadable back so a killed run resumes without re-evaluating.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cortex.design.alphabet import check_alphabet
from cortex.errors import DesignError

HISTORY_COLUMNS = ("eval_id", "round", "method", "sequence", "states", "value", "feasible", "failed", "error")


class SequenceFunction(Protocol):
    """A black box on integer-coded sequences: ``LongTensor [batch, length] -> Tensor [batch]``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Evaluation:
    """One sequence sent to the black box.

    ``value`` is NaN when ``failed``; ``feasible`` means a finite value (``-inf`` marks infeasible).
    """

    eval_id: int
    states: tuple[int, ...]
    value: float
    round: int
    method: str
    feasible: bool
    failed: bool
    error: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """What a :meth:`BlackBox.evaluate` call returned, row by row for the ``B`` rows asked.

    Attributes:
        values: ``[B]`` float64; the recorded value for every row whose sequence is known (sent now or
            earlier), NaN for failed rows and for rows left unsent because the budget ran out.
        sent: ``[B]`` bool; the row's sequence was sent to the function by this call (first copy only).
        known: ``[B]`` bool; the row's sequence is in the history (sent now or before).
        failed: ``[B]`` bool; the row's sequence is recorded as failed.
    """

    values: torch.Tensor
    sent: torch.Tensor
    known: torch.Tensor
    failed: torch.Tensor

    @property
    def num_sent(self) -> int:
        """How many evaluations this call spent."""
        return int(self.sent.sum())


def sequence_keys(x: torch.LongTensor) -> list[bytes]:
    """One hashable key per row of a CPU ``LongTensor [B, L]`` (its raw bytes), for deduplication."""
    rows = np.ascontiguousarray(x.numpy())
    return [row.tobytes() for row in rows]


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


class BlackBox:
    """Budgeted, deduplicating, failure-tolerant wrapper around a sequence black box.

    Args:
        fn: the user callable, ``LongTensor [n, length] -> Tensor [n]`` (a ``[n, 1]`` result is accepted).
        length: sequence length ``L`` every input must have.
        num_states: vocabulary size ``V``; inputs must hold states ``0..V-1``.
        budget: most evaluations (distinct sequences sent) allowed; ``None`` for no limit.
        batch_size: most sequences per call to ``fn``; larger batches are split. ``None``: no limit.
        alphabet: optional characters for states, used to write a readable ``sequence`` column.

    Example:
        >>> problem = Ehrlich(num_states=5, dim=7)
        >>> bb = BlackBox(problem, length=7, num_states=5, budget=100)
        >>> result = bb(problem.random_feasible(4), round=0, method="random")
        >>> result.values.shape, bb.evaluations
        (torch.Size([4]), 4)
    """

    def __init__(
        self,
        fn: SequenceFunction | Callable[[torch.Tensor], torch.Tensor],
        *,
        length: int,
        num_states: int,
        budget: int | None = None,
        batch_size: int | None = None,
        alphabet: str | None = None,
    ) -> None:
        if not callable(fn):
            raise DesignError(
                f"fn={fn!r} is not callable; pass a function LongTensor [batch, length] -> Tensor [batch]."
            )
        for field, value, low in (("length", length, 1), ("num_states", num_states, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DesignError(f"{field}={value!r} must be an integer >= {low}.")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise DesignError(f"budget={budget!r} must be a non-negative integer or None for no limit.")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise DesignError(f"batch_size={batch_size!r} must be a positive integer or None for no limit.")
        self.fn = fn
        self.length = length
        self.num_states = num_states
        self.budget = budget
        self.batch_size = batch_size
        self.alphabet = check_alphabet(alphabet, num_states) if alphabet is not None else None
        self.history: list[Evaluation] = []
        self._index: dict[bytes, int] = {}  # sequence bytes -> position in history
        self.asked = 0  # rows passed to evaluate (what an optimizer proposed)
        self.repeated = 0  # of those, rows already in the history or earlier in their batch (not sent)

    # ----------------------------------------------------------------------------------- state
    @property
    def evaluations(self) -> int:
        """Evaluations spent: distinct sequences sent to the function (failures included)."""
        return len(self.history)

    @property
    def remaining(self) -> int | None:
        """Evaluations left in the budget (``None`` without a budget)."""
        return None if self.budget is None else max(self.budget - self.evaluations, 0)

    @property
    def exhausted(self) -> bool:
        """Whether the budget is spent."""
        return self.budget is not None and self.evaluations >= self.budget

    def validate(self, x: torch.Tensor) -> torch.LongTensor:
        """Check candidates ``[B, length]`` of states ``0..V-1`` and return them as a CPU LongTensor."""
        if not isinstance(x, torch.Tensor):
            raise DesignError(
                f"Candidates must be a torch tensor, got {type(x).__name__}; pass a LongTensor [batch, length]."
            )
        if x.dim() != 2 or x.shape[1] != self.length:
            raise DesignError(
                f"Candidates have shape {tuple(x.shape)}; pass a [batch, {self.length}] tensor of states."
            )
        if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
            raise DesignError(f"Candidates have dtype {x.dtype}; pass integer states (torch.long).")
        x = x.detach().to("cpu", torch.long)
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.num_states):
            raise DesignError(
                f"Candidates hold states outside 0..{self.num_states - 1} (min {int(x.min())}, max {int(x.max())}); "
                f"pass states below num_states={self.num_states}."
            )
        return x

    def seen(self, x: torch.Tensor) -> torch.BoolTensor:
        """``[B]`` whether each candidate is already in the history."""
        return torch.tensor([k in self._index for k in sequence_keys(self.validate(x))], dtype=torch.bool)

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """``[B]`` recorded values (NaN for unseen or failed candidates); spends nothing."""
        keys = sequence_keys(self.validate(x))
        out = [self.history[self._index[k]].value if k in self._index else math.nan for k in keys]
        return torch.tensor(out, dtype=torch.float64)

    # ----------------------------------------------------------------------------------- evaluation
    def evaluate(self, x: torch.Tensor, *, round: int = 0, method: str = "") -> BatchResult:
        """Evaluate the candidates ``x`` ``[B, length]`` that are new, within the remaining budget.

        New distinct sequences are sent in row order until the budget runs out; repeats (of the
        history or of an earlier row) are not sent. ``round`` and ``method`` are stored with each record.
        """
        x = self.validate(x)
        keys = sequence_keys(x)
        new_rows: list[int] = []
        batch_keys: set[bytes] = set()
        self.asked += len(keys)
        for i, key in enumerate(keys):
            if key in self._index or key in batch_keys:
                self.repeated += 1
                continue
            if self.remaining is not None and len(new_rows) >= self.remaining:
                break
            batch_keys.add(key)
            new_rows.append(i)
        step = self.batch_size or max(len(new_rows), 1)
        for start in range(0, len(new_rows), step):
            rows = new_rows[start:start + step]
            for row, (value, error) in zip(rows, self._call(x[rows])):
                self._record(x[row], keys[row], value, error, round, method)
        sent = torch.zeros(len(keys), dtype=torch.bool)
        sent[new_rows] = True
        known = torch.tensor([k in self._index for k in keys], dtype=torch.bool)
        values = torch.tensor(
            [self.history[self._index[k]].value if k in self._index else math.nan for k in keys], dtype=torch.float64
        )
        failed = torch.tensor([k in self._index and self.history[self._index[k]].failed for k in keys],
                              dtype=torch.bool)
        return BatchResult(values=values, sent=sent, known=known, failed=failed)

    __call__ = evaluate

    def _call(self, x: torch.LongTensor) -> list[tuple[float, str | None]]:
        """Values (or errors) for a batch of new sequences; a raising batch is retried row by row."""
        try:
            out = self.fn(x.clone())  # a clone: user code may write into its input
        except Exception as error:  # noqa: BLE001 - any failure of user code is recorded, never fatal
            if len(x) == 1:
                return [(math.nan, _error_text(error))]
            return [item for i in range(len(x)) for item in self._call(x[i:i + 1])]
        # a wrong shape breaks the function's contract for every batch alike: that stops the run
        values = self._values(out, len(x))
        return [(v, "returned NaN" if math.isnan(v) else None) for v in values]

    def _values(self, out, n: int) -> list[float]:
        out = torch.as_tensor(out).detach().to("cpu", torch.float64)
        if out.dim() == 2 and out.shape[1] == 1:
            out = out.squeeze(1)
        if out.shape != (n,):
            raise DesignError(
                f"The black box returned shape {tuple(out.shape)} for {n} candidates; it must return one value per "
                f"row, a tensor of shape [{n}]."
            )
        return out.tolist()

    def _record(self, states: torch.LongTensor, key: bytes, value: float, error: str | None,
                round: int, method: str) -> None:
        failed = error is not None
        record = Evaluation(
            eval_id=len(self.history), states=tuple(states.tolist()), value=math.nan if failed else value,
            round=int(round), method=str(method), feasible=not failed and math.isfinite(value),
            failed=failed, error=error,
        )
        self._index[key] = len(self.history)
        self.history.append(record)

    # ----------------------------------------------------------------------------------- summaries
    def states_tensor(self) -> torch.LongTensor:
        """Every evaluated sequence in order, ``[N, length]``."""
        return torch.tensor([r.states for r in self.history], dtype=torch.long).reshape(-1, self.length)

    def values_tensor(self) -> torch.Tensor:
        """Every recorded value in order, ``[N]`` float64 (NaN for failures)."""
        return torch.tensor([r.value for r in self.history], dtype=torch.float64)

    def best(self) -> tuple[torch.LongTensor, float] | None:
        """The best feasible sequence ``[length]`` and its value, or ``None`` when none is feasible."""
        feasible = [r for r in self.history if r.feasible]
        if not feasible:
            return None
        top = max(feasible, key=lambda r: r.value)
        return torch.tensor(top.states, dtype=torch.long), top.value

    def best_so_far(self) -> np.ndarray:
        """Running best value after each evaluation, ``[N]`` (failures count as ``-inf``)."""
        values = np.array([-math.inf if r.failed else r.value for r in self.history], dtype=np.float64)
        return np.maximum.accumulate(values) if len(values) else values

    # ----------------------------------------------------------------------------------- persistence
    def to_dataframe(self):
        """The history as a pandas DataFrame with columns :data:`HISTORY_COLUMNS`."""
        import pandas as pd

        chars = list(self.alphabet) if self.alphabet is not None else None
        rows = [
            {
                "eval_id": r.eval_id, "round": r.round, "method": r.method,
                "sequence": "".join(chars[s] for s in r.states) if chars else " ".join(map(str, r.states)),
                "states": list(r.states), "value": r.value, "feasible": r.feasible, "failed": r.failed,
                "error": r.error,
            }
            for r in self.history
        ]
        return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """Write the history to ``path`` atomically (readers see the old or the new file, never half)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.to_dataframe().to_parquet(tmp, index=False)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def load_history(self, source) -> int:
        """Append a saved history (a parquet path or a DataFrame) so a killed run resumes without re-sending.

        Records keep their order; sequences already present are skipped. Returns how many were added.
        """
        import pandas as pd

        frame = pd.read_parquet(source) if isinstance(source, (str, os.PathLike)) else source
        missing = [c for c in ("states", "value", "round", "method", "failed") if c not in frame.columns]
        if missing:
            raise DesignError(f"The history lacks columns {missing}; pass a file written by BlackBox.to_parquet.")
        if "eval_id" in frame.columns:
            frame = frame.sort_values("eval_id")
        added = 0
        for row in frame.itertuples(index=False):
            states = torch.tensor(np.array(row.states, dtype=np.int64)).unsqueeze(0)
            states = self.validate(states)[0]
            key = sequence_keys(states.unsqueeze(0))[0]
            if key in self._index:
                continue
            error = getattr(row, "error", None)
            error = (error if isinstance(error, str) and error else "failed") if bool(row.failed) else None
            self._record(states, key, float(row.value), error, int(row.round), str(row.method))
            added += 1
        return added

    def __repr__(self) -> str:
        budget = "unlimited" if self.budget is None else str(self.budget)
        return f"BlackBox(length={self.length}, num_states={self.num_states}, evaluations={self.evaluations}/{budget})"


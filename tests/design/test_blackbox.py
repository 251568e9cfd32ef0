"""BlackBox: budget, deduplication, failure records, history export and resume."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from cortex.design import BlackBox, Ehrlich
from cortex.errors import DesignError

LENGTH, STATES = 7, 5


class Recorder:
    """A black box that sums states (a closed form) and logs every row it is sent."""

    def __init__(self, fail_on: int | None = None, nan_on: int | None = None, batch_fails: bool = False):
        self.calls: list[list[list[int]]] = []
        self.fail_on, self.nan_on, self.batch_fails = fail_on, nan_on, batch_fails

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.tolist()
        self.calls.append(rows)
        if self.fail_on is not None and any(r[0] == self.fail_on for r in rows):
            raise RuntimeError("assay crashed")
        values = x.sum(-1).double()
        if self.nan_on is not None:
            values[x[:, 0] == self.nan_on] = math.nan
        return values

    @property
    def sent(self) -> list[tuple[int, ...]]:
        return [tuple(r) for call in self.calls for r in call]


def rows(*firsts: int) -> torch.Tensor:
    """Sequences whose first state is given and the rest are 1s (distinct per first state)."""
    x = torch.ones(len(firsts), LENGTH, dtype=torch.long)
    x[:, 0] = torch.tensor(firsts)
    return x


def test_counts_and_never_resends_duplicates():
    fn = Recorder()
    bb = BlackBox(fn, length=LENGTH, num_states=STATES, budget=11)
    first = bb(rows(0, 1, 1, 2, 0), round=1, method="test")  # duplicates inside the batch
    assert first.values.tolist() == [6.0, 7.0, 7.0, 8.0, 6.0]
    assert first.sent.tolist() == [True, True, False, True, False]
    assert bb.evaluations == 3 and bb.remaining == 8
    second = bb(rows(2, 3, 0), round=2, method="test")  # repeats of the history come back for free
    assert second.values.tolist() == [8.0, 9.0, 6.0] and second.sent.tolist() == [False, True, False]
    assert bb.evaluations == 4
    assert len(fn.sent) == len(set(fn.sent)) == 4
    assert bb.seen(rows(3, 4)).tolist() == [True, False]
    assert bb.lookup(rows(3, 4)).tolist()[0] == 9.0 and math.isnan(bb.lookup(rows(4)).item())


def test_budget_is_never_exceeded():
    fn = Recorder()
    bb = BlackBox(fn, length=LENGTH, num_states=STATES, budget=3)
    result = bb(rows(0, 1, 0, 2, 3, 4))
    assert bb.evaluations == 3 and bb.exhausted and bb.remaining == 0
    assert result.known.tolist() == [True, True, True, True, False, False]
    assert math.isnan(result.values[4].item())
    assert bb(rows(4)).num_sent == 0 and len(fn.sent) == 3


def test_raising_candidates_are_recorded_as_failed_and_the_run_goes_on():
    fn = Recorder(fail_on=2)
    bb = BlackBox(fn, length=LENGTH, num_states=STATES)
    result = bb(rows(0, 2, 3), round=4, method="lambo2")
    assert result.failed.tolist() == [False, True, False]
    assert result.values[0].item() == 6.0 and math.isnan(result.values[1].item()) and result.values[2].item() == 9.0
    failed = [r for r in bb.history if r.failed]
    assert len(failed) == 1 and "assay crashed" in failed[0].error and not failed[0].feasible
    assert bb.evaluations == 3
    calls_before = len(fn.calls)
    again = bb(rows(2))  # a failed sequence is never sent again
    assert again.failed.tolist() == [True] and len(fn.calls) == calls_before


def test_nan_values_are_failures_and_minus_inf_is_infeasible():
    def fn(x):
        values = x.sum(-1).double()
        values[x[:, 0] == 1] = math.nan
        values[x[:, 0] == 2] = -math.inf
        return values.unsqueeze(-1)  # a [B, 1] result is accepted

    bb = BlackBox(fn, length=LENGTH, num_states=STATES)
    bb(rows(0, 1, 2))
    by_first = {r.states[0]: r for r in bb.history}
    assert by_first[1].failed and by_first[1].error == "returned NaN"
    assert not by_first[2].failed and not by_first[2].feasible and by_first[2].value == -math.inf
    assert by_first[0].feasible and bb.best()[1] == 6.0
    assert bb.best_so_far().tolist() == [6.0, 6.0, 6.0]


def test_batch_size_splits_calls():
    fn = Recorder()
    bb = BlackBox(fn, length=LENGTH, num_states=STATES, batch_size=2)
    bb(rows(0, 1, 2, 3, 4))
    assert [len(c) for c in fn.calls] == [2, 2, 1]


def test_contract_and_input_errors():
    bb = BlackBox(lambda x: torch.zeros(len(x) + 1), length=LENGTH, num_states=STATES)
    with pytest.raises(DesignError, match="shape"):
        bb(rows(0, 1))
    bb = BlackBox(Recorder(), length=LENGTH, num_states=STATES)
    with pytest.raises(DesignError, match=r"\[batch, 7\]"):
        bb(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(DesignError, match="outside"):
        bb(torch.full((1, LENGTH), STATES))
    with pytest.raises(DesignError, match="dtype"):
        bb(torch.zeros(1, LENGTH))
    with pytest.raises(DesignError, match="budget"):
        BlackBox(Recorder(), length=LENGTH, num_states=STATES, budget=-1)
    with pytest.raises(DesignError, match="callable"):
        BlackBox(3, length=LENGTH, num_states=STATES)


def test_history_dataframe_parquet_and_resume(tmp_path):
    f = Ehrlich(num_states=STATES, dim=LENGTH, num_motifs=1, motif_length=3, random_seed=2)
    bb = BlackBox(f, length=LENGTH, num_states=STATES, budget=13, alphabet="ACDEF")
    x = torch.cat([f.random_feasible(4, seed=0), f.random_solution(4, seed=1), f.optimal_solution()[None]])
    bb(x, round=0, method="ga")
    frame = bb.to_dataframe()
    assert list(frame.columns) == ["eval_id", "round", "method", "sequence", "states", "value", "feasible",
                                   "failed", "error"]
    assert frame["sequence"].str.len().eq(LENGTH).all() and set("".join(frame["sequence"])) <= set("ACDEF")
    assert frame["value"].max() == 1.0 and (frame["method"] == "ga").all()
    path = bb.to_parquet(tmp_path / "runs" / "history.parquet")
    assert not list(path.parent.glob(".*tmp"))  # the temp file was renamed away

    sent: list[list[int]] = []

    def counting(z):
        sent.extend(z.tolist())
        return f(z)

    resumed = BlackBox(counting, length=LENGTH, num_states=STATES, budget=13)
    assert resumed.load_history(path) == bb.evaluations
    assert resumed.evaluations == bb.evaluations and resumed.remaining == 13 - bb.evaluations
    again = resumed(x)
    assert again.num_sent == 0 and sent == []
    assert torch.equal(again.values, bb.lookup(x))
    assert torch.equal(resumed.states_tensor(), bb.states_tensor())
    loaded = pd.read_parquet(path)
    assert loaded["states"].map(len).eq(LENGTH).all()

from collections import Counter

import pytest

from cortex.errors import DataError
from cortex.training.sampler import RoundRobinUpsampler

LABELS = ["a"] * 11 + ["b"] * 4 + ["c"] * 1 + ["d"] * 5


def test_balanced_and_covering():
    s = RoundRobinUpsampler(LABELS, seed=3)
    order = list(s)
    assert len(order) == len(s) == 4 * 11
    counts = Counter(LABELS[i] for i in order)
    assert set(counts.values()) == {11}
    assert set(order) == set(range(len(LABELS)))  # every row at least once
    # interleaved: any window of 4 consecutive rows covers the four groups
    for start in range(0, len(order), 4):
        assert {LABELS[i] for i in order[start:start + 4]} == {"a", "b", "c", "d"}


def test_seeded_and_epoch_dependent():
    a, b = RoundRobinUpsampler(LABELS, seed=1), RoundRobinUpsampler(LABELS, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_ddp_ranks_are_disjoint_and_equal_length():
    ranks = [RoundRobinUpsampler(LABELS, seed=0, num_replicas=3, rank=r) for r in range(3)]
    parts = [list(r) for r in ranks]
    assert len({len(p) for p in parts}) == 1
    full = ranks[0].full_order()
    assert sorted(sum(parts, [])) == sorted(full[: 3 * len(parts[0])])
    assert [x for trio in zip(*parts) for x in trio] == full[: 3 * len(parts[0])]


def test_empty_is_an_error():
    with pytest.raises(DataError, match="empty"):
        RoundRobinUpsampler([])

"""Round-robin minority upsampling: balance an epoch across the values of one column.

Each epoch, groups (rows sharing a column value) are shuffled, members within each group are
shuffled, and the groups are interleaved one row at a time; shorter groups cycle (reshuffled each
pass) until the longest group is used up. Every row of every group therefore appears at least once
per epoch and each group contributes the same number of rows. Under DDP each rank takes a disjoint
strided slice of the same seeded order (padded to equal length), so ranks never see the same row at
the same step and every rank runs the same number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from cortex.errors import DataError


class RoundRobinUpsampler(Sampler[int]):
    """Sampler over dataset indices balanced by ``labels`` (one hashable value per row).

    Args:
        labels: the balancing column, e.g. ``dataset["label"]``.
        seed: base seed; the order of epoch ``e`` uses ``seed + e`` (call :meth:`set_epoch`).
        num_replicas / rank: DDP world size and this process's rank (defaults: 1 and 0, or the
            initialized process group's).

    ``len(sampler)`` is ``ceil(num_groups * largest_group / num_replicas)``.
    """

    def __init__(
        self,
        labels: Sequence[Hashable],
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if len(labels) == 0:
            raise DataError("Cannot balance an empty dataset: the split has no rows. Check the split sizes.")
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            ready = dist.is_available() and dist.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if ready else 1)
            rank = rank if rank is not None else (dist.get_rank() if ready else 0)
        if not 0 <= rank < num_replicas:
            raise DataError(f"rank={rank} must be in [0, num_replicas={num_replicas}).")
        groups: dict[Hashable, list[int]] = {}
        for i, v in enumerate(labels):
            groups.setdefault(v, []).append(i)
        self.groups = [groups[k] for k in sorted(groups, key=str)]
        self.seed, self.epoch = seed, 0
        self.num_replicas, self.rank = num_replicas, rank
        self.total = len(self.groups) * max(len(g) for g in self.groups)
        self.per_rank = math.ceil(self.total / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Use a fresh, reproducible order for ``epoch`` (Lightning calls this for DDP samplers)."""
        self.epoch = epoch

    def full_order(self) -> list[int]:
        """The whole epoch's order, identical on every rank."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        longest = max(len(x) for x in self.groups)
        streams = []
        for members in self.groups:
            stream: list[int] = []
            while len(stream) < longest:  # cycle, reshuffling each pass
                perm = torch.randperm(len(members), generator=g).tolist()
                stream.extend(members[j] for j in perm)
            streams.append(stream[:longest])
        group_order = torch.randperm(len(self.groups), generator=g).tolist()
        order = [streams[k][i] for i in range(longest) for k in group_order]
        pad = self.per_rank * self.num_replicas - len(order)
        return order + order[:pad]

    def __iter__(self) -> Iterator[int]:
        return iter(self.full_order()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.per_rank

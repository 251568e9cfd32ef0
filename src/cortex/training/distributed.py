"""Small collective helpers; Lightning's strategies own the process group, these only read from it."""

from __future__ import annotations

import torch


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialized process group, or ``(1, 0)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_uneven(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` ``(N_r, ...)`` from every rank along dim 0 (ranks may hold different ``N_r``).

    ``all_gather`` needs equal shapes, so each rank pads to the largest ``N_r`` and the padding is
    dropped after the exchange. A single process returns ``t`` unchanged.
    """
    import torch.distributed as dist

    size, _ = world()
    if size == 1:
        return t
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    local = t.to(backend_device)
    n = torch.tensor([local.shape[0]], device=backend_device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)]).to(t.device)

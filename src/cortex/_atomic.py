"""Crash-safe file writes shared by the registry, packs, indexes and histories.

Every writer goes through :func:`atomic_write`: the bytes land in a temporary file next to the
target, are fsynced, and replace the target with one ``os.replace``; the folder is fsynced so the
rename survives a power cut. A reader sees the old file or the new one, never half of one, and a
failed write leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (skipped where the filesystem does not allow it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(binary file)`` atomically; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_parquet_atomic(frame, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as parquet atomically (its folder is created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: frame.to_parquet(f, index=False))

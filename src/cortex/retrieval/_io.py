"""Crash-safe writes for index folders: temp file, fsync, rename; a pointer file names the live generation.

An index is several files (vectors, ids, chunk payloads). Each commit writes a new *generation* of
them (``vectors.g7.npy``...) and then atomically replaces the small pointer file that names the
generation. A reader sees the old generation or the new one, never a mix; a crash mid-commit
leaves orphan files that the next commit sweeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from cortex._atomic import atomic_write

_GEN_RE = re.compile(r"\.g(\d+)\.[A-Za-z0-9]+$")


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented UTF-8 JSON."""
    payload = json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8")
    atomic_write(path, lambda f: f.write(payload))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync; a single short ``O_APPEND`` write is not interleaved."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All JSON lines of ``path`` (an absent file is empty); a torn last line is ignored."""
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a writer killed mid-line; everything before it is intact
                continue
            raise
    return out


def generation_name(stem: str, generation: int, suffix: str) -> str:
    """``vectors`` + 7 + ``npy`` -> ``vectors.g7.npy``."""
    return f"{stem}.g{generation}.{suffix}"


def sweep_generations(folder: Path, keep: Collection[int]) -> None:
    """Delete generation files not in ``keep`` and leftover temp files (after a commit, under the lock).

    Temp files are only ever written under the folder lock, so any found here belong to a writer
    that died mid-commit.
    """
    for p in folder.iterdir():
        m = _GEN_RE.search(p.name)
        stale_gen = m is not None and int(m.group(1)) not in keep
        stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
        if p.is_file() and (stale_gen or stale_tmp):
            with contextlib.suppress(OSError):
                p.unlink()

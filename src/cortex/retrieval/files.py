"""Walk a folder for indexable text files, skipping (and reporting) binary, huge and undecodable ones."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cortex.errors import RetrievalError

# Tool state and build output, never source a worker should read. A pattern starting with "/"
# matches the path from the root only; others match a file or folder name anywhere.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".*", "__pycache__", "node_modules", "*.egg-info", "site-packages", "/build", "/dist", "/venv",
)
SKIP_REASONS = ("binary", "too_large", "encoding", "unreadable", "outside_root")
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class SourceFile:
    """A file to index: its posix path relative to the root, absolute location, size and content hash."""

    path: str
    location: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of the index and why (one of :data:`SKIP_REASONS`)."""

    path: str
    reason: str
    detail: str = ""


def _excluded(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatch(rel, p[1:]) if p.startswith("/") else (fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p))
        for p in patterns
    )


def walk_files(root: Path, excludes: Sequence[str] = DEFAULT_EXCLUDES) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, absolute path)`` of every file under ``root``, sorted, excludes pruned."""
    root = Path(root)
    if not root.is_dir():
        raise RetrievalError(f"{str(root)!r} is not a folder. Pass the folder to index, e.g. `cortex rag index .`")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        rel_of = (lambda n: n) if rel_dir == "." else (lambda n: f"{rel_dir}/{n}")
        dirnames[:] = sorted(d for d in dirnames if not _excluded(rel_of(d), d, excludes))
        for name in sorted(filenames):
            rel = rel_of(name)
            if not _excluded(rel, name, excludes):
                yield rel, base / name


def inspect_file(rel: str, location: Path, root: Path, max_bytes: int) -> SourceFile | SkippedFile:
    """Hash one file, or say why it cannot be indexed (binary, over ``max_bytes``, outside root)."""
    try:
        real = location.resolve()
        root_real = Path(root).resolve()
        if real != root_real and root_real not in real.parents:  # a symlink pointing elsewhere
            return SkippedFile(rel, "outside_root", f"links to {real}")
        size = location.stat().st_size
        if size > max_bytes:
            return SkippedFile(rel, "too_large", f"{size} bytes > {max_bytes}")
        data = location.read_bytes()
    except OSError as e:
        return SkippedFile(rel, "unreadable", e.strerror or str(e))
    if b"\x00" in data[:_SNIFF_BYTES]:
        return SkippedFile(rel, "binary", "NUL bytes in the first 8 KiB")
    return SourceFile(rel, location, size, hashlib.sha256(data).hexdigest())


def read_text(source: SourceFile) -> str | SkippedFile:
    """The file decoded as UTF-8 (BOM allowed), or a :class:`SkippedFile` naming the bad byte."""
    try:
        data = source.location.read_bytes()
    except OSError as e:
        return SkippedFile(source.path, "unreadable", e.strerror or str(e))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return SkippedFile(source.path, "encoding", f"not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}")

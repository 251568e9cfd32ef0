"""The local registry: a JSON index plus one folder per entry, under ``$CORTEX_HOME/models``.

Layout::

    $CORTEX_HOME/models/
        registry.json          # {"version": 1, "entries": {name: entry}, "aliases": {alias: name}}
        .registry.lock         # cross-process lock held around every write
        .staging/<pid>-<id>/   # folders being built; renamed into place when complete
        <name>/                # config.json, *.safetensors, tokenizer files, metadata.json, ...

The index is the source of truth. An entry is written in three atomic steps: its files are built in a
staging folder, the folder is renamed to ``<name>/``, then the index is replaced (temp file, fsync,
rename). A process killed at any point leaves either no entry or a complete one; leftover staging
folders and folders the index does not list are swept at the next write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cortex._atomic import atomic_write
from cortex.errors import (
    ChecksumError,
    InvalidNameError,
    LockTimeoutError,
    NameTakenError,
    RegistryError,
    ResourceError,
    UnknownNameError,
)
from cortex.hub.entry import KINDS, RegistryEntry
from cortex.hub.paths import cortex_home, validate_name

INDEX_VERSION = 1
METADATA_FILE = "metadata.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _entry_files(folder: Path) -> Iterator[tuple[str, Path]]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not (p.parent == folder and p.name == METADATA_FILE):
            yield p.relative_to(folder).as_posix(), p


def file_stats(folder: Path) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of every entry file: the cheap check done before rehashing."""
    return {rel: [p.stat().st_size, p.stat().st_mtime_ns] for rel, p in _entry_files(folder)}


def hash_folder(folder: Path) -> tuple[dict[str, str], int]:
    """sha256 of every file under ``folder`` (except its ``metadata.json``) and their total size."""
    files: dict[str, str] = {}
    total = 0
    for rel, p in _entry_files(folder):
        files[rel] = sha256_file(p)
        total += p.stat().st_size
    return files, total


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half of one."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """The local registry of models, trees, lens packs, concept packs and routers.

    >>> reg = Registry()                      # $CORTEX_HOME or ~/.cortex
    >>> with reg.stage() as tmp:              # build files in a staging folder
    ...     model.save_pretrained(tmp)
    ...     entry = reg.register(tmp, name="my-model", kind="model", source="custom")
    >>> reg.path("my-model")                  # a folder from_pretrained can read
    """

    def __init__(self, home: str | os.PathLike | None = None, lock_timeout: float = 120.0):
        self.home = cortex_home(home)
        self.root = self.home / "models"
        self.index_path = self.root / "registry.json"
        self.staging_root = self.root / ".staging"
        self._lock = FileLock(str(self.root / ".registry.lock"), timeout=lock_timeout)
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ reading
    def _read_index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"version": INDEX_VERSION, "entries": {}, "aliases": {}}
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RegistryError(
                f"The registry index {self.index_path} is not valid JSON ({e}). Rebuild it from "
                f"the entries' metadata.json files with: cortex models rebuild-index"
            ) from e
        data.setdefault("entries", {})
        data.setdefault("aliases", {})
        return data

    def names(self, kind: str | None = None) -> list[str]:
        """Names of all entries (of one kind if given), sorted."""
        entries = self._read_index()["entries"]
        return sorted(n for n, e in entries.items() if kind is None or e.get("kind") == kind)

    def list(self, kind: str | None = None) -> list[RegistryEntry]:
        """All entries (of one kind if given), sorted by name."""
        entries = self._read_index()["entries"]
        return [
            RegistryEntry.from_dict(entries[n])
            for n in sorted(entries)
            if kind is None or entries[n].get("kind") == kind
        ]

    def aliases(self) -> dict[str, str]:
        """Alias → entry name (e.g. ``router:champion`` → ``router-20261122-1``)."""
        return dict(self._read_index()["aliases"])

    def exists(self, name: str) -> bool:
        data = self._read_index()
        return name in data["entries"] or name in data["aliases"]

    def get(self, name: str, kind: str | None = None) -> RegistryEntry:
        """The entry called ``name`` (or an alias of it); :class:`UnknownNameError` with suggestions."""
        data = self._read_index()
        real = data["aliases"].get(name, name)
        raw = data["entries"].get(real)
        if raw is None or (kind is not None and raw.get("kind") != kind):
            known = [n for n, e in data["entries"].items() if kind is None or e.get("kind") == kind]
            raise UnknownNameError(name, known + list(data["aliases"]), kind or "entry")
        return RegistryEntry.from_dict(raw)

    def path(self, name: str, kind: str | None = None) -> Path:
        """The folder of entry ``name``: what ``from_pretrained`` reads."""
        entry = self.get(name, kind)
        folder = self.root / entry.name
        if not folder.is_dir():
            raise RegistryError(
                f"Entry {entry.name!r} is in the index but its folder {folder} is missing. "
                f"Remove it with: cortex models rm {entry.name}"
            )
        return folder

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process registry lock."""
        try:
            with self._lock:
                yield
        except Timeout as e:
            raise LockTimeoutError(
                f"Timed out after {self._lock.timeout:.0f}s waiting for {self._lock.lock_file}; another "
                "cortex process is writing the registry. Wait for it, or delete the lock file if no "
                "cortex process is running."
            ) from e

    @contextlib.contextmanager
    def stage(self) -> Iterator[Path]:
        """A fresh staging folder, deleted afterwards unless :meth:`register` moved it into place.

        Any exception, Ctrl-C included, removes the folder, so a failed import leaves nothing behind.
        """
        self.staging_root.mkdir(parents=True, exist_ok=True)
        tmp = self.staging_root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            yield tmp
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise ResourceError(
                    f"The disk holding {self.root} is full; nothing was registered. Free space or set "
                    "CORTEX_HOME to a larger disk."
                ) from e
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _sweep(self, data: dict[str, Any]) -> None:
        """Remove staging folders of dead processes and entry folders the index does not list.

        A process killed between moving an entry's folder aside (``rm``, or ``register`` with
        ``on_conflict="replace"``) and rewriting the index leaves an index entry without its folder;
        the moved-aside folder is then put back instead of being deleted.
        """
        if self.staging_root.is_dir():
            for d in self.staging_root.iterdir():
                pid = d.name.split("-", 1)[0]
                if pid.isdigit() and _pid_alive(int(pid)):
                    continue
                if not self._restore_if_orphaned(d, data):
                    shutil.rmtree(d, ignore_errors=True)
        index_lost = not self.index_path.exists()
        for d in self.root.iterdir():
            if d.is_dir() and not d.name.startswith(".") and d.name not in data["entries"]:
                if index_lost and (d / METADATA_FILE).is_file():
                    continue  # no index to trust: a complete entry folder is kept for rebuild_index
                shutil.rmtree(d, ignore_errors=True)

    def _restore_if_orphaned(self, folder: Path, data: dict[str, Any]) -> bool:
        """Move ``folder`` back to ``<name>/`` if the index lists exactly its metadata but not its folder."""
        try:
            meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
            name = meta["name"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not isinstance(name, str) or data["entries"].get(name) != meta or (self.root / name).exists():
            return False
        validate_name(name)
        os.replace(folder, self.root / name)
        return True

    def rebuild_index(self) -> list[str]:
        """Rewrite ``registry.json`` from the ``metadata.json`` of every entry folder; returns the names.

        The recovery path for an index that was edited by hand or lost. Aliases live only in the
        index, so they are kept when the old index is readable and dropped otherwise.
        """
        with self.locked():
            try:
                aliases = json.loads(self.index_path.read_text(encoding="utf-8")).get("aliases", {})
            except (OSError, ValueError, AttributeError):
                aliases = {}
            entries: dict[str, Any] = {}
            for d in sorted(self.root.iterdir()):
                if not d.is_dir() or d.name.startswith("."):
                    continue
                try:
                    entry = RegistryEntry.from_dict(json.loads((d / METADATA_FILE).read_text(encoding="utf-8")))
                except (OSError, ValueError, TypeError):
                    continue  # not an entry folder (or a damaged one): left alone, not indexed
                if entry.name == d.name:
                    entries[entry.name] = entry.to_dict()
            aliases = {a: n for a, n in aliases.items() if n in entries} if isinstance(aliases, dict) else {}
            self._write_index({"entries": entries, "aliases": aliases})
        return sorted(entries)

    def _write_index(self, data: dict[str, Any]) -> None:
        data["version"] = INDEX_VERSION
        atomic_write_text(self.index_path, json.dumps(data, indent=1, sort_keys=True))

    def _unique(self, base: str, taken: dict[str, Any]) -> str:
        if base not in taken:
            return base
        i = 2
        while f"{base}-v{i}" in taken:
            i += 1
        return f"{base}-v{i}"

    def register(
        self,
        folder: str | os.PathLike,
        *,
        name: str,
        kind: str,
        source: str,
        on_conflict: str = "version",
        **fields: Any,
    ) -> RegistryEntry:
        """Move a complete ``folder`` (normally from :meth:`stage`) into the registry as ``name``.

        ``on_conflict``: ``"version"`` picks ``name-v2``, ``name-v3``... when taken; ``"error"``
        raises :class:`NameTakenError`; ``"replace"`` swaps the old entry out atomically.
        Other keyword arguments are :class:`RegistryEntry` fields.
        """
        validate_name(name)
        if kind not in KINDS:
            raise InvalidNameError(f"kind={kind!r} is not one of {', '.join(KINDS)}.")
        for parent in [fields.get("fine_tuned_from"), *fields.get("parents", [])]:
            if parent is not None:
                self.get(parent)
        folder = Path(folder)
        files, size = hash_folder(folder)
        with self.locked():
            data = self._read_index()
            self._sweep(data)
            old_folder = None
            if name in data["entries"] or name in data["aliases"]:
                if on_conflict == "error":
                    raise NameTakenError(
                        f"A registry entry named {name!r} exists. Choose another --name or remove it "
                        f"with: cortex models rm {name}"
                    )
                if on_conflict == "version":
                    name = self._unique(name, {**data["entries"], **data["aliases"]})
                elif on_conflict == "replace":
                    old_folder = self.staging_root / f"{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
                    os.replace(self.root / name, old_folder)
            entry = RegistryEntry(
                name=name, kind=kind, source=source, created_at=now_iso(),
                files=files, file_stats=file_stats(folder), size_bytes=size, **fields,
            )
            atomic_write_text(folder / METADATA_FILE, json.dumps(entry.to_dict(), indent=1))
            os.replace(folder, self.root / name)
            data["entries"][name] = entry.to_dict()
            self._write_index(data)
            if old_folder is not None:
                shutil.rmtree(old_folder, ignore_errors=True)
        return entry

    def update(self, name: str, **fields: Any) -> RegistryEntry:
        """Change metadata fields of an entry (``tags``, ``extra``...), rewriting both copies atomically."""
        with self.locked():
            data = self._read_index()
            current = self.get(name)
            raw = current.to_dict()
            for k, v in fields.items():
                if k not in raw or k in ("name", "files", "file_stats", "size_bytes"):
                    raise InvalidNameError(f"Cannot update field {k!r} of a registry entry.")
                raw[k] = v
            entry = RegistryEntry.from_dict(raw)
            atomic_write_text(self.root / entry.name / METADATA_FILE, json.dumps(raw, indent=1))
            data["entries"][entry.name] = raw
            self._write_index(data)
        return entry

    def set_alias(self, alias: str, name: str | None) -> None:
        """Point ``alias`` at entry ``name`` (``None`` removes the alias)."""
        validate_name(alias.replace(":", "."), "alias")
        with self.locked():
            data = self._read_index()
            if alias in data["entries"]:
                raise NameTakenError(f"{alias!r} is an entry name; choose a different alias.")
            if name is None:
                data["aliases"].pop(alias, None)
            else:
                if name not in data["entries"]:
                    raise UnknownNameError(name, data["entries"])
                data["aliases"][alias] = name
            self._write_index(data)

    def children(self, name: str) -> list[str]:
        """Entries that name ``name`` as a parent or as ``fine_tuned_from``."""
        return [e.name for e in self.list() if name in e.all_parents()]

    def remove(self, name: str, force: bool = False) -> RegistryEntry:
        """Delete an entry and its folder. Refuses when other entries descend from it unless ``force``."""
        entry = self.get(name)
        kids = self.children(entry.name)
        if kids and not force:
            raise RegistryError(
                f"{entry.name!r} is the parent of {', '.join(kids)}; removing it breaks their lineage. "
                "Pass --force to remove it anyway."
            )
        with self.locked():
            data = self._read_index()
            data["entries"].pop(entry.name, None)
            data["aliases"] = {a: n for a, n in data["aliases"].items() if n != entry.name}
            trash = self.staging_root / f"{os.getpid()}-rm-{uuid.uuid4().hex[:8]}"
            self.staging_root.mkdir(exist_ok=True)
            if (self.root / entry.name).exists():
                os.replace(self.root / entry.name, trash)
            self._write_index(data)
        shutil.rmtree(trash, ignore_errors=True)
        return entry

    def copy(self, src: str, dst: str) -> RegistryEntry:
        """Duplicate entry ``src`` as ``dst`` (same files and metadata, new name)."""
        validate_name(dst)
        entry = self.get(src)
        with self.stage() as tmp:
            shutil.copytree(self.path(entry.name), tmp, dirs_exist_ok=True)
            (tmp / METADATA_FILE).unlink(missing_ok=True)
            fields = {
                k: v for k, v in entry.to_dict().items()
                if k not in ("name", "kind", "source", "created_at", "files", "file_stats", "size_bytes")
            }
            fields["extra"] = {**entry.extra, "copied_from": entry.name}
            return self.register(
                tmp, name=dst, kind=entry.kind, source=entry.source, on_conflict="error", **fields
            )

    def verify(self, name: str, fast: bool = False) -> dict[str, list[str]]:
        """Recompute checksums of one entry: ``{"changed": [...], "missing": [...], "extra": [...]}``.

        ``fast`` rehashes only files whose size or mtime differ from registration time (what
        loading does); the default rehashes everything (what ``cortex models verify`` does).
        """
        entry = self.get(name)
        folder = self.path(entry.name)
        if fast and entry.file_stats:
            stats = file_stats(folder)
            actual = {
                rel: (entry.files.get(rel, "") if stats[rel] == entry.file_stats.get(rel) else sha256_file(folder / rel))
                for rel in stats
            }
        else:
            actual, _ = hash_folder(folder)
        return {
            "changed": sorted(f for f, h in entry.files.items() if f in actual and actual[f] != h),
            "missing": sorted(f for f in entry.files if f not in actual),
            "extra": sorted(f for f in actual if f not in entry.files),
        }

    def check(self, name: str, fast: bool = True) -> None:
        """Raise :class:`ChecksumError` if any file of ``name`` changed or went missing."""
        report = self.verify(name, fast=fast)
        bad = report["changed"] + report["missing"]
        if bad:
            raise ChecksumError(
                f"Entry {name!r}: files changed or missing since registration: {', '.join(bad)}. "
                f"Re-import it (cortex import-model ... --name {name} after cortex models rm {name})."
            )

    def lineage(self, name: str) -> dict[str, Any]:
        """Ancestors and descendants of ``name`` as nested dicts ``{"name", "kind", "parents"|"children"}``."""
        by_name = {e.name: e for e in self.list()}
        root = self.get(name).name

        def up(n: str, seen: frozenset[str]) -> dict[str, Any]:
            e = by_name.get(n)
            parents = [] if e is None or n in seen else e.all_parents()
            return {"name": n, "kind": e.kind if e else "missing",
                    "parents": [up(p, seen | {n}) for p in parents]}

        def down(n: str, seen: frozenset[str]) -> dict[str, Any]:
            kids = [] if n in seen else [k for k, e in by_name.items() if n in e.all_parents()]
            return {"name": n, "kind": by_name[n].kind, "children": [down(k, seen | {n}) for k in kids]}

        return {"ancestors": up(root, frozenset()), "descendants": down(root, frozenset())}


def default_registry(home: str | os.PathLike | None = None) -> Registry:
    """A :class:`Registry` at ``home`` / ``$CORTEX_HOME`` / ``~/.cortex``."""
    return Registry(home)


def resolve_model_path(name_or_path: str | os.PathLike, registry: Registry | None = None) -> Path:
    """A registry name, or an existing local folder, as a folder ``from_pretrained`` can read."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    reg = registry or Registry()
    return reg.path(str(name_or_path))

"""Sharing packs on the Hugging Face Hub: ``cortex packs list | status | pull | push``.

A remote is ``hf://org/repo`` (optionally ``@revision``). Pulls are pinned to the commit the revision
resolves to, refuse any file path that would land outside the pack folder, can take only some layers
of a lens pack (``layers``), and are registered (kind ``lens_pack`` or ``concept_pack``, from the
files present) with the remote and commit in ``extra``. A pack is *locally modified* when its files no
longer match the hashes recorded at registration (pull or push).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortex.errors import InvalidNameError, PackError, SourceError
from cortex.hub.entry import RegistryEntry
from cortex.hub.paths import safe_join, validate_name
from cortex.hub.registry import Registry, hash_folder, file_stats, atomic_write_text, METADATA_FILE

PACK_KINDS = ("lens_pack", "concept_pack")


def parse_remote(remote: str) -> tuple[str, str | None]:
    """``hf://org/repo[@rev]`` → ``(repo_id, revision)``."""
    from cortex.hub.sources import parse_source

    if not remote.startswith("hf://"):
        raise SourceError(f"Remote {remote!r} must look like hf://org/repo or hf://org/repo@revision.")
    src = parse_source(remote)
    if src.kind != "hub":
        raise SourceError(f"Remote {remote!r} is not a Hub repository; use hf://org/repo.")
    return src.repo_id, src.revision


@dataclass
class PackStatus:
    """Where a registered pack came from and whether it changed locally."""

    name: str
    kind: str
    remote: str | None
    revision: str | None
    locally_modified: bool
    changed: list[str]
    partial_layers: list[int] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pack_status(name: str, registry: Registry | None = None) -> PackStatus:
    """Status of a registered lens or concept pack."""
    reg = registry or Registry()
    entry = reg.get(name)
    if entry.kind not in PACK_KINDS:
        raise PackError(f"{name!r} is a {entry.kind}, not a pack; packs are kinds {', '.join(PACK_KINDS)}.")
    report = reg.verify(entry.name)
    changed = report["changed"] + report["missing"] + report["extra"]
    return PackStatus(
        name=entry.name, kind=entry.kind, remote=entry.extra.get("remote"),
        revision=entry.extra.get("remote_revision"), locally_modified=bool(changed), changed=changed,
        partial_layers=entry.extra.get("layers_pulled"),
    )


def list_packs(registry: Registry | None = None) -> list[PackStatus]:
    """Every registered lens and concept pack with its remote and modified flag."""
    reg = registry or Registry()
    return [pack_status(e.name, reg) for kind in PACK_KINDS for e in reg.list(kind)]


def _hub_errors(repo_id: str, revision: str | None):
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    def wrap(e: Exception) -> SourceError:
        if isinstance(e, RevisionNotFoundError):
            return SourceError(f"Revision {revision!r} does not exist in {repo_id!r}; pass an existing branch, tag or commit.")
        if isinstance(e, RepositoryNotFoundError):
            return SourceError(f"No repository {repo_id!r} on the Hub (or it is private: log in with `hf auth login`).")
        if isinstance(e, (HfHubHTTPError, OSError)):
            return SourceError(f"Could not reach the Hub for {repo_id!r} ({type(e).__name__}: {e}). Check the network.")
        raise e

    return (RevisionNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError), wrap


def pull_pack(remote: str, *, name: str | None = None, layers: Iterable[int] | None = None,
              registry: Registry | None = None, on_conflict: str = "replace") -> RegistryEntry:
    """Download a pack from ``hf://org/repo[@rev]`` (pinned to its commit), validate it and register it."""
    from huggingface_hub import HfApi, snapshot_download

    from cortex.lenses.concepts.store import MANIFEST, read_concept_pack
    from cortex.lenses.lens_pack import INFO, LensPack

    repo_id, revision = parse_remote(remote)
    catch, wrap = _hub_errors(repo_id, revision)
    try:
        info = HfApi().model_info(repo_id, revision=revision)
    except catch as e:
        raise wrap(e) from e
    commit = info.sha
    files = [s.rfilename for s in (info.siblings or [])]
    reg = registry or Registry()
    with reg.stage() as tmp:
        for f in files:  # a listing that would write outside the pack is refused before anything downloads
            try:
                safe_join(tmp, f)
            except InvalidNameError as e:
                raise PackError(f"Remote pack {repo_id!r} lists a file that escapes its folder: {e}") from e
        if INFO in files:
            kind = "lens_pack"
        elif MANIFEST in files:
            kind = "concept_pack"
        else:
            raise PackError(f"{repo_id!r} holds neither {INFO} (lens pack) nor {MANIFEST} (concept pack).")
        layer_list = sorted({int(l) for l in layers}) if layers is not None else None
        patterns = None
        if layer_list is not None:
            if kind != "lens_pack":
                raise PackError("--layers applies to lens packs only; a concept pack is pulled whole.")
            patterns = [INFO, "README.md"] + [f"layer{l}/*" for l in layer_list]
        try:
            snapshot_download(repo_id, revision=commit, local_dir=str(tmp), allow_patterns=patterns)
        except catch as e:
            raise wrap(e) from e
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's local-dir bookkeeping
        (tmp / METADATA_FILE).unlink(missing_ok=True)
        if kind == "lens_pack":
            pack = LensPack.load(tmp, layer_list)
            entry_name = validate_name(name or pack.info.get("name") or repo_id.split("/")[-1])
            missing = [l for l in (layer_list or []) if l not in pack.info["layers"]]
            if missing:
                raise PackError(f"Remote lens pack {repo_id!r} has no layers {missing}; it has {pack.info['layers']}.")
            parents = [p for p in (pack.info["model"]["name"], pack.info["concept_pack"]["name"]) if reg.exists(p)]
            extra = {"model": pack.info["model"]["name"], "concept_pack": pack.info["concept_pack"]["name"],
                     "layers": pack.info["layers"], "n_concepts": len(pack.info["concepts"]),
                     "probe": pack.info["probe"]["kind"]}
            revision_field = pack.info["model"]["revision"]
        else:
            cpack = read_concept_pack(tmp)
            entry_name = validate_name(name or cpack.name)
            parents, extra, revision_field = [], {"pack_name": cpack.name, "pack_version": cpack.version,
                                                  "n_concepts": len(cpack)}, cpack.version
        extra.update(remote=f"hf://{repo_id}", remote_revision=commit,
                     layers_pulled=layer_list if layer_list is not None else None)
        return reg.register(tmp, name=entry_name, kind=kind, source=f"hf://{repo_id}@{commit}",
                            parents=parents, revision=revision_field, on_conflict=on_conflict, extra=extra)


def push_pack(name: str, remote: str, *, registry: Registry | None = None, private: bool = False,
              message: str | None = None) -> str:
    """Upload a registered pack to ``hf://org/repo`` (created if needed); returns the new commit id.

    Refuses a partially pulled lens pack (it would publish an incomplete pack) and records the remote and
    commit in the entry, whose file hashes are refreshed so it no longer counts as locally modified.
    """
    from huggingface_hub import HfApi

    reg = registry or Registry()
    entry = reg.get(name)
    if entry.kind not in PACK_KINDS:
        raise PackError(f"{name!r} is a {entry.kind}; only lens and concept packs can be pushed with cortex packs.")
    if entry.extra.get("layers_pulled") is not None:
        raise PackError(
            f"{name!r} was pulled with only layers {entry.extra['layers_pulled']}; pushing it would publish an "
            "incomplete pack. Pull it whole first."
        )
    repo_id, _ = parse_remote(remote)
    folder = reg.path(entry.name)
    api = HfApi()
    catch, wrap = _hub_errors(repo_id, None)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, ignore_patterns=[METADATA_FILE],
                                   commit_message=message or f"cortex: push {entry.kind} {entry.name}")
    except catch as e:
        raise wrap(e) from e
    oid = getattr(commit, "oid", None) or str(commit)
    _refresh_hashes(reg, entry.name, {"remote": f"hf://{repo_id}", "remote_revision": oid})
    return oid


def _refresh_hashes(reg: Registry, name: str, extra: dict[str, Any]) -> None:
    """Record the entry's current files as its reference state (after a push they are what the remote has)."""
    import json

    with reg.locked():
        data = reg._read_index()
        raw = data["entries"][name]
        folder = reg.root / name
        files, size = hash_folder(folder)
        raw.update(files=files, file_stats=file_stats(folder), size_bytes=size, extra={**raw.get("extra", {}), **extra})
        atomic_write_text(folder / METADATA_FILE, json.dumps(raw, indent=1))
        reg._write_index(data)

"""``cortex import-model``: bring a Hub repo or a local HF folder into the registry, safely.

Everything happens in a staging folder: fetch (Hub download pinned to the resolved commit, or a
copy), refuse pickle weights unless allowed (then convert them to safetensors), detect the family,
check the license and the memory estimate, load the model once to prove it works, and only then
register. An error, Ctrl-C or a full disk leaves the registry exactly as it was.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cortex.errors import (
    LicenseError,
    ResourceError,
    SourceError,
    UnsafeWeightsError,
)
from cortex.hub.entry import RegistryEntry
from cortex.hub.families import FamilyAdapter, family_for_folder
from cortex.hub.paths import validate_name
from cortex.hub.registry import Registry
from cortex.hub.sources import Source, parse_source

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# licenses that grant use without field-of-use or user-count restrictions
PERMISSIVE_LICENSES = {
    "apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "isc", "cc0-1.0",
    "cc-by-4.0", "cc-by-3.0", "cc-by-2.0", "cc-by-sa-4.0", "cc-by-sa-3.0", "unlicense", "mpl-2.0",
    "artistic-2.0", "bsl-1.0", "afl-3.0", "ecl-2.0", "lgpl-3.0", "lgpl-2.1", "gpl-3.0", "gpl-2.0",
    "agpl-3.0", "odc-by", "pddl", "zlib", "postgresql", "wtfpl", "ms-pl", "epl-2.0", "osl-3.0",
}
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class ImportReport:
    """What an import did: the registered ``entry`` and the figures shown to the user."""

    entry: RegistryEntry
    params: int
    estimated_bytes: int
    converted_from_pickle: bool


def license_is_restrictive(license_id: str | None) -> bool:
    """True for a known license outside :data:`PERMISSIVE_LICENSES` (``other``, ``llama3``, ``cc-by-nc-4.0``...)."""
    return license_id is not None and license_id.lower() not in PERMISSIVE_LICENSES and license_id != "unknown"


def read_local_license(folder: Path) -> str | None:
    """The ``license:`` of a model card's YAML front matter, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    if not m:
        return None
    lic = re.search(r"^license:\s*['\"]?([\w.+-]+)", m.group(1), re.M)
    return lic.group(1).lower() if lic else None


def safetensors_param_bytes(folder: Path) -> tuple[int, int]:
    """(parameter count, bytes) read from safetensors headers only, without loading tensors."""
    params = nbytes = 0
    for f in folder.rglob("*.safetensors"):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for d in meta["shape"]:
                count *= d
            params += count
            nbytes += count * _DTYPE_BYTES.get(meta["dtype"], 4)
    return params, nbytes


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (physical pages free for new allocations)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _pickles(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES]


def _fetch_hub(source: Source, dest: Path, allow_pickle: bool) -> tuple[str, str | None]:
    """Download ``source`` pinned to its resolved commit into ``dest``; returns (commit, license)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(source.repo_id, revision=source.revision)
    except RevisionNotFoundError as e:
        raise SourceError(
            f"Revision {source.revision!r} does not exist in {source.repo_id!r}. Pass an existing branch, "
            "tag or commit with --revision, or omit it for 'main'."
        ) from e
    except GatedRepoError as e:
        raise SourceError(
            f"{source.repo_id!r} is gated: accept its terms on huggingface.co and log in with `hf auth login`."
        ) from e
    except RepositoryNotFoundError as e:
        raise SourceError(
            f"No model repository {source.repo_id!r} on the Hub (or it is private). Check the id, or log in "
            "with `hf auth login` for a private repo."
        ) from e
    except Exception as e:  # transport failures come as httpx, OSError or hub errors alike: no network here
        raise SourceError(
            f"Could not reach the Hub for {source.repo_id!r} ({type(e).__name__}: {e}). Check the network "
            "(and HF_ENDPOINT / HF_HUB_OFFLINE), or import a local folder instead."
        ) from e
    files = [s.rfilename for s in (info.siblings or [])]
    if "config.json" not in files:
        raise SourceError(
            f"{source.repo_id!r} has no config.json, so it is not a transformers model repository."
        )
    has_safe = any(f.endswith(".safetensors") for f in files)
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles and not has_safe and not allow_pickle:
        raise UnsafeWeightsError(
            f"{source.repo_id!r} ships only pickle weights ({', '.join(pickles[:3])}), which can run code when "
            "loaded. Re-run with --allow-pickle to convert them to safetensors."
        )
    ignore = [f"*{s}" for s in PICKLE_SUFFIXES] if has_safe else []
    # other frameworks' weights are never needed
    ignore += ["*.msgpack", "*.h5", "*.onnx", "*.ot", "*.tflite", "*.gguf", "onnx/*", "openvino/*"]
    try:
        snapshot_download(source.repo_id, revision=info.sha, local_dir=dest, ignore_patterns=ignore)
    except Exception as e:  # HTTP or transport errors mid-download
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise  # the staging folder turns this into "disk full"
        raise SourceError(
            f"Downloading {source.repo_id!r} at {info.sha} failed ({type(e).__name__}: {e}). Nothing was "
            "registered; re-run the import."
        ) from e
    shutil.rmtree(dest / ".cache", ignore_errors=True)
    card = info.card_data.to_dict() if getattr(info, "card_data", None) is not None else {}
    license_id = card.get("license") or next(
        (t.split(":", 1)[1] for t in (info.tags or []) if t.startswith("license:")), None
    )
    if isinstance(license_id, list):
        license_id = license_id[0] if license_id else None
    return info.sha, (license_id.lower() if license_id else None)


def _copy_local(folder: Path, dest: Path, allow_pickle: bool, registry_root: Path) -> None:
    if not (folder / "config.json").is_file():
        raise SourceError(
            f"{folder} is not a model folder: it has no config.json. Point at the folder written by "
            "save_pretrained (the one holding config.json and the weights)."
        )
    has_safe = any(folder.rglob("*.safetensors"))
    pickles = _pickles(folder)
    if pickles and not has_safe and not allow_pickle:
        raise UnsafeWeightsError(
            f"{folder} has only pickle weights ({', '.join(p.name for p in pickles[:3])}), which can run code "
            "when loaded. Re-run with --allow-pickle to convert them to safetensors."
        )

    registry_root = registry_root.resolve()

    def ignore(dirpath: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in (".git", ".cache", "__pycache__", "metadata.json")}
        # never copy the registry into itself when the source folder contains $CORTEX_HOME
        skip |= {n for n in names if (Path(dirpath) / n).resolve() == registry_root}
        if has_safe:
            skip |= {n for n in names if n.endswith(PICKLE_SUFFIXES)}
        return skip

    shutil.copytree(folder, dest, ignore=ignore, dirs_exist_ok=True, symlinks=False)


def _convert_pickles(folder: Path, family: FamilyAdapter) -> None:
    """Load the pickle weights once (explicitly allowed), save safetensors, delete the pickles."""
    model, _ = family.load(folder, allow_pickle=True)
    for p in _pickles(folder):
        p.unlink()
    for idx in folder.glob("*.bin.index.json"):
        idx.unlink()
    model.save_pretrained(folder, safe_serialization=True)
    del model
    gc.collect()


def import_model(
    source: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    accept_license: bool = False,
    allow_pickle: bool = False,
    force: bool = False,
    trust_remote_code: bool = False,
    registry: Registry | None = None,
    status: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import a Hub repo (``org/name``, ``hf://org/name@rev`` or a URL) or a local folder as a ``model`` entry."""
    say = status or (lambda msg: None)
    reg = registry or Registry()
    src = parse_source(source, revision)
    if src.kind == "local" and revision:
        raise SourceError(f"--revision applies to Hub imports only; {source!r} is a local folder.")
    name = validate_name(name) if name else src.default_name()

    with reg.stage() as tmp:
        if src.kind == "hub":
            say(f"downloading {src.repo_id} @ {src.revision or 'main'}")
            commit, license_id = _fetch_hub(src, tmp, allow_pickle)
            source_str, model_id = f"hf://{src.repo_id}@{commit}", src.repo_id
        else:
            say(f"copying {src.path}")
            _copy_local(src.path, tmp, allow_pickle, reg.root)
            commit, license_id = None, read_local_license(src.path)
            source_str, model_id = str(src.path), str(src.path)

        try:
            family = family_for_folder(tmp, trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise SourceError(f"{source!r} has a config.json that transformers cannot read ({e}).") from e

        if license_is_restrictive(license_id) and not accept_license:
            raise LicenseError(
                f"{source!r} is released under the {license_id!r} license, which restricts use. Read it, then "
                "re-run with --accept-license to acknowledge it."
            )

        converted = False
        if not any(tmp.rglob("*.safetensors")):
            if not _pickles(tmp):
                raise SourceError(f"{source!r} has a config.json but no weights (.safetensors).")
            say("converting pickle weights to safetensors (--allow-pickle)")
            _convert_pickles(tmp, family)
            converted = True

        params, nbytes = safetensors_param_bytes(tmp)
        avail = available_memory_bytes()
        if nbytes > avail and not force:
            raise ResourceError(
                f"{source!r} needs about {nbytes / 2**30:.1f} GiB ({params / 1e9:.2f}B parameters) but only "
                f"{avail / 2**30:.1f} GiB of RAM is available. Re-run with --force to import anyway."
            )

        say(f"checking that it loads as {family.name}")
        try:
            model, _tok = family.load(tmp, trust_remote_code=trust_remote_code)
        except Exception as e:  # any loader failure means the folder is not usable as this family
            raise SourceError(
                f"{source!r} does not load as a {family.name} model: {type(e).__name__}: {e}. Check that the "
                "folder is complete (config, weights and tokenizer files)."
            ) from e
        del model
        gc.collect()

        entry = reg.register(
            tmp, name=name, kind="model", source=source_str, on_conflict="version",
            model_id=model_id, family=family.name, revision=commit,
            license=license_id or "unknown", license_accepted=bool(accept_license),
            extra={"params": params, "estimated_bytes": nbytes, "converted_from_pickle": converted,
                   "trust_remote_code": trust_remote_code},
        )
    return ImportReport(entry=entry, params=params, estimated_bytes=nbytes, converted_from_pickle=converted)

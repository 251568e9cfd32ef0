"""Load a registry entry (or a local folder) as a model, its tokenizer and its family adapter."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cortex.errors import UnsafeWeightsError
from cortex.hub.entry import RegistryEntry
from cortex.hub.families import FamilyAdapter, family_for_folder, get_family
from cortex.hub.registry import Registry


PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def refuse_pickle_only(
    source: str | os.PathLike, allow_pickle: bool, what: str = "model", revision: str | None = None
) -> None:
    """Raise :class:`~cortex.errors.UnsafeWeightsError` when ``source`` holds pickle weights
    (``pytorch_model.bin``, ``.pt``...) and no safetensors, unless ``allow_pickle``.

    ``source`` is a local folder or a Hub repo id (its file list is read with ``model_info``; when
    the Hub cannot be reached the check is left to ``use_safetensors=True``). Every
    ``from_pretrained`` cortex owns calls this before transformers reads the weights: besides the
    cortex error, it keeps transformers from asking the Hub's safetensors-conversion service to
    convert someone else's repo, which it does for a pickle-only repo under ``use_safetensors=True``.
    """
    if allow_pickle:
        return
    path = Path(source)
    names = [p.name for p in path.iterdir() if p.is_file()] if path.is_dir() else _hub_files(str(source), revision)
    pickles = sorted(n for n in names if n.endswith(PICKLE_WEIGHT_SUFFIXES))
    if not pickles or any(n.endswith(".safetensors") for n in names):
        return
    raise UnsafeWeightsError(
        f"{what} {'folder' if path.is_dir() else 'repo'} {source} holds only pickle weights ({', '.join(pickles[:3])}), "
        "which can run code when loaded; cortex loads safetensors only. If you trust the file, pass allow_pickle=True "
        "(CLI: --allow-pickle), or convert it once with: cortex import-model <folder> --allow-pickle (writes safetensors)."
    )


def _hub_files(repo_id: str, revision: str | None) -> list[str]:
    """File names of a Hub model repo, or ``[]`` when it cannot be listed (offline, not a repo id)."""
    from huggingface_hub import HfApi
    from huggingface_hub import is_offline_mode

    if is_offline_mode() or repo_id.count("/") != 1:
        return []
    try:
        info = HfApi().model_info(repo_id, revision=revision)
    except Exception:  # unreachable or missing repo: transformers reports it in its own words
        return []
    return [s.rfilename for s in info.siblings or [] if "/" not in s.rfilename]


@dataclass
class LoadedModel:
    """A model ready to use: ``model`` in eval mode, its ``tokenizer``, ``family`` adapter, ``path``,
    and the registry ``entry`` (``None`` for a plain folder)."""

    model: nn.Module
    tokenizer: Any
    family: FamilyAdapter
    path: Path
    entry: RegistryEntry | None = None

    def layers(self) -> list[nn.Module]:
        """The blocks hooks attach to (decoder or encoder layers), in depth order."""
        return self.family.layers(self.model)


def load_model(
    name_or_path: str | os.PathLike,
    *,
    registry: Registry | None = None,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    verify: bool = True,
) -> LoadedModel:
    """Load a registry name or a local HF folder.

    Registry entries are checked against their recorded sha256 first (files whose size and mtime are
    unchanged are trusted; others are rehashed), so a tampered weights file raises
    :class:`~cortex.errors.ChecksumError` instead of loading. A folder holding only pickle weights
    raises :class:`~cortex.errors.UnsafeWeightsError` unless ``allow_pickle``.
    """
    folder = Path(name_or_path)
    entry = None
    if not folder.is_dir():
        reg = registry or Registry()
        entry = reg.get(str(name_or_path))
        folder = reg.path(entry.name)
        if verify:
            reg.check(entry.name, fast=True)
    refuse_pickle_only(folder, allow_pickle, f"registry entry {entry.name!r}" if entry is not None else "model")
    family = get_family(entry.family) if entry is not None and entry.family else family_for_folder(
        folder, trust_remote_code
    )
    model, tokenizer = family.load(
        folder, dtype=dtype, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    )
    return LoadedModel(model=model, tokenizer=tokenizer, family=family, path=folder, entry=entry)

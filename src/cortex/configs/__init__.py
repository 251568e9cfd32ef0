"""The configs shipped inside the package, read through :mod:`importlib.resources`.

This folder holds cortex's Hydra config groups (``roots/ trunk/ branches/ tree/ tasks/ data/ trainer/
experiment/``, composed from ``train.yaml``) and the configs of other tools (``design/``, ``router/``).
A config is named by its path below this folder without ``.yaml``: ``experiment/ehrlich``,
``design/ehrlich``, ``train``. ``cortex configs list | show NAME | export DIR`` is the command-line
face of the functions below, so a user can copy the configs out, edit them and pass the folder back
(``cortex train --config-dir DIR``) or a file (``cortex design --config FILE``).

Nothing here reads a path relative to a source file: an installed wheel, a zip import and an editable
checkout all resolve the same way.
"""

from __future__ import annotations

import os
import shutil
from importlib.resources import as_file, files
from pathlib import Path

from cortex._atomic import atomic_write
from cortex.errors import ConfigError, _suggest

__all__ = ["config_dir", "config_path", "export_configs", "list_configs", "resolve_config"]

SUFFIX = ".yaml"


def config_dir() -> Path:
    """The ``configs`` folder of the installed package (a real folder: cortex installs unzipped)."""
    with as_file(files(__name__)) as folder:
        return Path(folder)


def list_configs(group: str | None = None) -> list[str]:
    """Names of the shipped configs (``experiment/ehrlich``, ...), sorted; only ``group``'s if given."""
    root = config_dir()
    names = sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}"))
    return [n for n in names if n.startswith(f"{group}/")] if group else names


def config_path(name: str) -> Path:
    """The shipped file of config ``name`` (``design/ehrlich`` or ``design/ehrlich.yaml``)."""
    name = name.removesuffix(SUFFIX).strip("/")
    known = list_configs()
    if name not in known:
        raise ConfigError(
            f"No shipped config named {name!r}.{_suggest(name, known)} "
            "List them with: cortex configs list"
        )
    return config_dir() / f"{name}{SUFFIX}"


def resolve_config(name_or_path: str | os.PathLike, group: str | None = None) -> Path:
    """A config file from a path, or from a shipped name (``ehrlich`` within ``group``, or ``design/ehrlich``).

    An existing file always wins, so a user's edited copy is never shadowed by a shipped name.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(SUFFIX)
    candidates = [f"{group}/{name}", name] if group else [name]
    known = list_configs()
    for candidate in candidates:
        if candidate in known:
            return config_dir() / f"{candidate}{SUFFIX}"
    options = list_configs(group) if group else known
    shown = [o.removeprefix(f"{group}/") for o in options] if group else options
    raise ConfigError(
        f"Config {str(name_or_path)!r} is neither a file nor a shipped config.{_suggest(name, shown)} "
        f"Shipped{f' {group}' if group else ''} configs: {', '.join(shown) or '(none)'}; "
        "copy one out to edit with: cortex configs export DIR"
    )


def export_configs(dest: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Copy every shipped config into ``dest`` (same layout) and return the written files.

    Refuses to replace an existing file unless ``overwrite``, so a user's edits are never lost.
    """
    root, dest = config_dir(), Path(dest).expanduser()
    pairs = [(root / f"{n}{SUFFIX}", dest / f"{n}{SUFFIX}") for n in list_configs()]
    clashes = [str(d) for _, d in pairs if d.exists()]
    if clashes and not overwrite:
        raise ConfigError(
            f"{len(clashes)} config file(s) already exist under {dest} (e.g. {clashes[0]}). "
            "Choose an empty folder or pass --overwrite."
        )
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as fh:
            atomic_write(dst, lambda out, fh=fh: shutil.copyfileobj(fh, out))
    return [d for _, d in pairs]

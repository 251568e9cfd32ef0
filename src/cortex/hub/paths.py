"""Where cortex keeps things, and the checks that stop names and paths escaping their folder."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from cortex.errors import InvalidNameError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def cortex_home(home: str | os.PathLike | None = None) -> Path:
    """The cortex home folder: ``home`` if given, else ``$CORTEX_HOME``, else ``~/.cortex``."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("CORTEX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cortex"


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe registry name, else raise :class:`InvalidNameError`.

    Safe names are one path component: letters, digits, ``. _ + -``, not starting with a dot,
    no ``/``, no ``..``, at most 128 characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"Empty {what}. Use letters, digits, '.', '_', '+' or '-', e.g. 'qwen2.5-0.5b'.")
    if "/" in name or "\\" in name or os.path.isabs(name):
        raise InvalidNameError(
            f"{what.capitalize()} {name!r} contains a path separator. A {what} is one word such as "
            f"'my-model'; pass --name to choose one."
        )
    if name.startswith(".") or ".." in name:
        raise InvalidNameError(
            f"{what.capitalize()} {name!r} starts with '.' or contains '..'. Choose a {what} like 'my-model'."
        )
    if not _NAME_RE.match(name):
        raise InvalidNameError(
            f"{what.capitalize()} {name!r} has characters outside letters, digits, '.', '_', '+', '-' "
            f"(or is longer than 128). Choose a {what} like 'my-model'."
        )
    return name


def safe_join(root: str | os.PathLike, relative: str) -> Path:
    """Join ``relative`` under ``root``, refusing absolute paths and anything that resolves outside.

    Used for every path that comes from a user, a pack or a remote file listing.
    """
    rel = PurePosixPath(str(relative).replace("\\", "/"))
    if rel.is_absolute() or any(part == ".." for part in rel.parts) or str(relative).startswith("~"):
        raise InvalidNameError(
            f"Path {relative!r} escapes its folder {str(root)!r}. Paths inside packs and entries must be "
            "relative and must not contain '..'."
        )
    root_path = Path(root).resolve()
    target = (root_path / Path(*rel.parts)).resolve() if rel.parts else root_path
    if target != root_path and root_path not in target.parents:
        raise InvalidNameError(
            f"Path {relative!r} resolves to {str(target)!r}, outside {str(root_path)!r} (a symlink?). "
            "Remove the link or the file."
        )
    return target

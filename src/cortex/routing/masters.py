"""The masters (workers) a router chooses between, each with a description, read from YAML.

``configs/router/masters.yaml``::

    masters:
      - name: math
        description: Arithmetic, algebra, calculus, statistics and word problems.
      - name: science
        description: ...
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cortex.errors import RoutingError

_MASTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class Master:
    """One worker the router can send tasks to. ``name`` is its id in logs; ``description`` what it does."""

    name: str
    description: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def check_master_names(names: list[str], where: str = "masters") -> None:
    """Names are unique ids of 1-64 letters, digits, ``_ . -``; raise :class:`RoutingError` otherwise."""
    if len(names) < 2:
        raise RoutingError(f"{where} lists {len(names)} master(s); a router needs at least 2 to choose between.")
    bad = [n for n in names if not isinstance(n, str) or not _MASTER_NAME.match(n)]
    if bad:
        raise RoutingError(
            f"{where}: master names {bad!r} are not valid; use 1-64 letters, digits, '_', '.' or '-', e.g. 'ci_cd'."
        )
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise RoutingError(f"{where}: master names {dups} appear more than once; each master needs one entry.")


def parse_masters(data: object, where: str = "masters") -> list[Master]:
    """Masters from ``{"masters": [{"name", "description"}, ...]}`` or a bare list (names or dicts)."""
    if isinstance(data, dict):
        data = data.get("masters")
    if not isinstance(data, list):
        raise RoutingError(f"{where} must be a list under the key 'masters', e.g. masters: [{{name: math, description: ...}}].")
    out = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            out.append(Master(item))
        elif isinstance(item, dict):
            unknown = set(item) - {"name", "description"}
            if unknown:
                raise RoutingError(f"{where}[{i}] has unknown keys {sorted(unknown)}; allowed: name, description.")
            desc = item.get("description", "") or ""
            if not isinstance(desc, str):
                raise RoutingError(f"{where}[{i}].description must be a string.")
            out.append(Master(str(item.get("name")), desc.strip()))
        else:
            raise RoutingError(f"{where}[{i}] must be a name or {{name, description}}; got {item!r}.")
    check_master_names([m.name for m in out], where)
    return out


def load_masters(path: str | os.PathLike) -> list[Master]:
    """Read masters from a YAML file (see the module docstring)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise RoutingError(f"Masters file {str(p)!r} does not exist; see configs/router/masters.yaml for the format.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RoutingError(f"Masters file {str(p)!r} is not valid YAML ({e}); fix the syntax.") from e
    return parse_masters(data, where=str(p))

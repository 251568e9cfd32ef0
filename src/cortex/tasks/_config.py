"""Small helpers for self-validating task configs: every problem is collected, then raised at once."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cortex.errors import ConfigError, closest
from cortex.models.neural_tree.specs import Problems

__all__ = ["Problems", "build_dataclass", "check_choice", "check_fraction", "check_positive", "check_type"]


def check_type(where: str, value: Any, types: tuple[type, ...], problems: Problems) -> bool:
    """``value`` is one of ``types`` (a bool is not accepted as a number)."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join(t.__name__ for t in types)
        problems.add(f"{where}={value!r} must be a {names}.")
    return ok


def check_positive(where: str, value: Any, problems: Problems, minimum: int = 1) -> None:
    if check_type(where, value, (int,), problems) and value < minimum:
        problems.add(f"{where}={value} must be at least {minimum}.")


def check_fraction(where: str, value: Any, problems: Problems, upper_open: bool = False) -> None:
    if not check_type(where, value, (int, float), problems):
        return
    ok = math.isfinite(value) and 0.0 <= value and (value < 1.0 if upper_open else value <= 1.0)
    if not ok:
        problems.add(f"{where}={value} must be in [0, 1{')' if upper_open else ']'}.")


def check_choice(where: str, value: Any, choices: tuple[str, ...] | list[str], problems: Problems) -> bool:
    if value not in choices:
        near = closest(str(value), choices)
        hint = f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""
        problems.add(f"{where}={value!r} is not one of {', '.join(map(str, choices))}.{hint}")
        return False
    return True


def build_dataclass(cls: type, data: dict[str, Any], where: str, problems: Problems, **fixed: Any):
    """``cls(**data)`` keeping only known fields; unknown keys become problems with the closest match."""
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in known:
            problems.add(str(ConfigError.unknown_key(key, known, where)))
    return cls(**{k: v for k, v in data.items() if k in known}, **fixed)

"""One validation module for the whole package: named checks, written once, and a collector.

Every typed config validates itself by running named checks into a :class:`Problems` collector and
then calling :meth:`Problems.raise_if_any`, so a user sees every problem of a config at once, each
naming its field and the accepted values. The problems stay on the raised
:class:`~cortex.errors.ConfigError` as data (``error.problems``, a list of :class:`Problem`), so a
caller (a UI, a test, a sweep launcher) can read which fields were wrong without parsing text.

Usage::

    problems = Problems()
    check_positive("trainer.batch_size", self.batch_size, problems)
    check_fraction("data.val_fraction", self.val_fraction, problems, upper_open=True)
    check_choice("trainer.precision", self.precision, PRECISIONS, problems)
    problems.raise_if_any("trainer")

Each check returns whether the value passed, so a dependent check can run only on a valid value.
A ``bool`` is never accepted as a number (``hidden_dim: true`` in YAML is a mistake, not a width of 1).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from cortex.errors import _UNSET, ConfigError, Problem, closest

__all__ = [
    "Problem", "Problems", "build_dataclass", "build_kind", "check_bool", "check_choice", "check_fraction",
    "check_int", "check_known_keys", "check_non_empty", "check_number", "check_path_exists",
    "check_positive", "check_type",
]


class Problems(list):
    """Collects :class:`Problem` s; :meth:`raise_if_any` raises one :class:`ConfigError` listing them all."""

    def add(self, message: str, field: str | None = None, value: Any = _UNSET) -> None:
        """Record one problem (``field``/``value`` are kept as data on the raised error)."""
        self.append(Problem(message, field, value))

    def problems(self) -> list[Problem]:
        """The collected problems as :class:`Problem` s (plain strings appended by hand are wrapped)."""
        return [p if isinstance(p, Problem) else Problem(str(p)) for p in self]

    def raise_if_any(self, what: str = "config") -> None:
        """Raise one :class:`ConfigError` naming ``what`` and listing every collected problem."""
        found = self.problems()
        if len(found) == 1:
            raise ConfigError(f"{what}: {found[0]}", problems=found)
        if found:
            lines = "\n".join(f"  - {p}" for p in found)
            raise ConfigError(f"{what} has {len(found)} problems:\n{lines}", problems=found)


# ------------------------------------------------------------------------------------ named checks
def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def check_type(where: str, value: Any, types: tuple[type, ...], problems: Problems) -> bool:
    """``value`` is an instance of one of ``types``; a bool passes only if ``bool`` is listed."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        problems.add(f"{where}={value!r} must be a {_type_names(types)}.", where, value)
    return ok


def check_bool(where: str, value: Any, problems: Problems) -> bool:
    """``value`` is ``True`` or ``False`` (not 0/1, not "yes")."""
    return check_type(where, value, (bool,), problems)


def check_int(
    where: str, value: Any, problems: Problems, minimum: int | None = None, maximum: int | None = None,
) -> bool:
    """``value`` is an int in ``[minimum, maximum]`` (either bound may be ``None``)."""
    if not check_type(where, value, (int,), problems):
        return False
    if minimum is not None and value < minimum:
        problems.add(f"{where}={value} must be at least {minimum}.", where, value)
        return False
    if maximum is not None and value > maximum:
        problems.add(f"{where}={value} must be at most {maximum}.", where, value)
        return False
    return True


def check_positive(where: str, value: Any, problems: Problems, minimum: int = 1) -> bool:
    """``value`` is an int of at least ``minimum`` (1 by default; pass 0 for a count that may be zero)."""
    return check_int(where, value, problems, minimum=minimum)


def check_number(
    where: str, value: Any, problems: Problems, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False,
) -> bool:
    """``value`` is a finite real number in the interval from ``low`` to ``high``.

    ``low_open`` / ``high_open`` exclude the bound itself: ``check_number(w, lr, p, 0, low_open=True)``
    asks for ``lr > 0``.
    """
    if not check_type(where, value, (int, float), problems):
        return False
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    if math.isfinite(value) and above and below:
        return True
    if low is not None and high is not None:
        rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        rule = f"{'<' if high_open else '<='} {high:g}"
    else:
        rule = "a finite number"
    problems.add(f"{where}={value} must be {rule}.", where, value)
    return False


def check_fraction(
    where: str, value: Any, problems: Problems, upper_open: bool = False, lower_open: bool = False,
) -> bool:
    """``value`` is a fraction in ``[0, 1]`` (``upper_open``: ``< 1``; ``lower_open``: ``> 0``)."""
    return check_number(where, value, problems, 0.0, 1.0, low_open=lower_open, high_open=upper_open)


def check_choice(where: str, value: Any, choices: Collection[Any], problems: Problems) -> bool:
    """``value`` is one of ``choices``; the message suggests the closest spelling."""
    if value in choices:
        return True
    names = [str(c) for c in choices]
    near = closest(str(value), names)
    hint = f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""
    problems.add(f"{where}={value!r} is not one of {', '.join(names)}.{hint}", where, value)
    return False


def check_non_empty(where: str, value: Any, problems: Problems, types: tuple[type, ...] = (str,)) -> bool:
    """``value`` is one of ``types`` (a string by default) and not empty (nor only whitespace)."""
    if not check_type(where, value, types, problems):
        return False
    empty = not value.strip() if isinstance(value, str) else len(value) == 0
    if empty:
        problems.add(f"{where} must not be empty.", where, value)
        return False
    return True


def check_path_exists(where: str, value: Any, problems: Problems, kind: str = "any") -> bool:
    """``value`` is a path (str or ``os.PathLike``) that exists; ``kind`` is ``file``, ``dir`` or ``any``."""
    if not check_type(where, value, (str, os.PathLike), problems):
        return False
    path = Path(value).expanduser()
    found = {"file": path.is_file, "dir": path.is_dir, "any": path.exists}[kind]()
    if not found:
        what = {"file": "file", "dir": "folder", "any": "path"}[kind]
        problems.add(f"{where}={str(value)!r}: no such {what}. Pass an existing {what}.", where, value)
    return found


def check_known_keys(where: str, data: Mapping[str, Any], known: Iterable[str], problems: Problems) -> bool:
    """Every key of ``data`` is one of ``known``; each unknown key names the closest known one."""
    known = set(known)
    unknown = [key for key in data if key not in known]
    for key in unknown:
        problems.add(str(ConfigError.unknown_key(key, known, where)), f"{where}.{key}", data[key])
    return not unknown


def build_dataclass(cls: type, data: Mapping[str, Any], where: str, problems: Problems, **fixed: Any) -> Any:
    """``cls(**data)`` keeping only ``cls``'s init fields; unknown keys become problems.

    ``fixed`` are extra keyword arguments that do not come from the user's mapping.
    """
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    check_known_keys(where, data, known, problems)
    return cls(**{k: v for k, v in data.items() if k in known}, **fixed)


def build_kind(
    specs: Mapping[str, type], data: Any, where: str, problems: Problems, default_kind: str, example: str,
) -> Any:
    """The spec of ``data["kind"]`` (``default_kind`` if unset) from a registry of spec classes keyed by
    kind, built with :func:`build_dataclass` and checked with its ``check(where, problems)``; ``None``
    (with the problem recorded) when ``data`` is not a mapping or names an unknown kind.

    ``example`` is a config snippet shown when ``data`` is not a mapping, e.g. ``{'kind': 'mlp'}``.
    """
    if not isinstance(data, Mapping):
        problems.add(f"{where} must be a dict such as {example}; got {data!r}.", where, data)
        return None
    kind = data.get("kind", default_kind)
    if not check_choice(f"{where}.kind", kind, tuple(specs), problems):
        return None
    spec = build_dataclass(specs[kind], {**data, "kind": kind}, where, problems)
    spec.check(where, problems)
    return spec

"""Typed exceptions for everything a user can get wrong.

Every message names the offending input and says how to fix it. The CLI prints
``str(error)`` on one line and exits non-zero; library callers can catch the
specific type. All of them derive from :class:`CortexError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``word`` by edit similarity, best first."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.4)


def _suggest(word: str, candidates: Iterable[str]) -> str:
    near = closest(word, candidates)
    return f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""


class CortexError(Exception):
    """Base class: a user-facing error whose message names the input and the fix."""

    exit_code = 1


_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()


@dataclass(frozen=True)
class Problem:
    """One problem of a config, as data (collected by :class:`cortex._validate.Problems`).

    Attributes:
        message: the sentence shown to the user; it names the field and the fix.
        field: dotted path of the offending field (``trainer.batch_size``), or ``None`` for a
            problem about several fields at once.
        value: the offending value (``has_value`` is false when the problem is not about one value).
    """

    message: str
    field: str | None = None
    value: Any = _UNSET

    @property
    def has_value(self) -> bool:
        return self.value is not _UNSET

    def __str__(self) -> str:
        return self.message


class ConfigError(CortexError, ValueError):
    """A configuration field is missing, unknown or out of range.

    ``problems`` holds every problem found, as :class:`Problem` data (one, made from the message,
    when the error was raised for a single problem).
    """

    def __init__(self, message: str, problems: Sequence[Problem] | None = None):
        super().__init__(message)
        self.problems: list[Problem] = list(problems) if problems else [Problem(message)]

    @classmethod
    def unknown_key(cls, key: str, known: Iterable[str], where: str = "config") -> "ConfigError":
        known = sorted(known)
        return cls(f"Unknown key {key!r} in {where}.{_suggest(key, known)} Valid keys: {', '.join(known)}.")

    @classmethod
    def bad_choice(cls, field: str, value: object, choices: Iterable[str]) -> "ConfigError":
        choices = sorted(choices)
        return cls(
            f"{field}={value!r} is not one of {', '.join(choices)}.{_suggest(str(value), choices)}"
        )


class MissingExtraError(CortexError, ImportError):
    """An optional dependency of one part of cortex is not installed; the message names the extra."""


class InputError(CortexError, ValueError):
    """Tensors, files or values handed to a library call are malformed."""


class RegistryError(CortexError):
    """Something about the local registry itself (lock, corrupt index, disk)."""


class UnknownNameError(RegistryError, KeyError):
    """A registry name that does not exist."""

    def __init__(self, name: str, known: Iterable[str], kind: str = "entry"):
        self.name = name
        hint = _suggest(name, known)
        super().__init__(
            f"No registry {kind} named {name!r}.{hint} List entries with: cortex models list"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class InvalidNameError(RegistryError, ValueError):
    """A name or relative path that could escape its folder."""


class NameTakenError(RegistryError):
    """A registry name that already exists where a new one was required."""


class ChecksumError(RegistryError):
    """A registered file whose sha256 no longer matches the recorded one."""


class LockTimeoutError(RegistryError):
    """Another process holds the registry lock for too long."""


class SourceError(CortexError):
    """A hub id, URL, revision or folder that cannot be imported."""


class UnsafeWeightsError(SourceError):
    """Pickle weights (.bin, .pt) where safetensors are required."""


class LicenseError(SourceError):
    """A restrictive license that the user has not acknowledged."""


class UnsupportedArchitectureError(SourceError):
    """A model whose architecture no family adapter handles."""


class ResourceError(CortexError):
    """The model does not fit in memory or on disk."""


class DataError(CortexError, ValueError):
    """A dataset, column or row that cannot be used (missing column, NaN target, empty split)."""


class ModelInputError(InputError):
    """Tensors passed to a model forward are missing or inconsistent."""


class PackError(CortexError):
    """A lens or concept pack that is malformed, mismatched or unsafe."""


class DesignError(CortexError, ValueError):
    """A sequence-design setup that cannot run (bad seeds, masks, objectives)."""


class RoutingError(CortexError):
    """A router, rule file or routing log that cannot be used."""


class RetrievalError(CortexError):
    """A retrieval index that cannot be used as asked (wrong embedder, corrupt files)."""


class AnomalyError(CortexError):
    """Worker-metric data or an anomaly model that cannot be used."""

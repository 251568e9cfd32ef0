"""Rule-based routing, as teams already write it: keywords or a regex → a master, first match wins.

``configs/router/rules.yaml``::

    default_master: business_social       # used when the model is unsure and no rule matches
    rules:
      - name: math-words
        master: math
        keywords: [equation, integral, solve for]   # whole words/phrases, case-insensitive
        confidence: 0.6
      - name: sql
        master: computing
        regex: '\\bselect\\b.+\\bfrom\\b'            # Python regex, searched anywhere
        flags: i                                     # i (ignore case), m, s
        confidence: 0.7

The rules are the fallback of the learned router (:mod:`cortex.routing.policy`) and a baseline to
beat in ``benchmarks/router_eval.py``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.errors import RoutingError, closest

_RULE_KEYS = {"name", "master", "keywords", "regex", "flags", "confidence"}
_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


@dataclass
class Rule:
    """One rule: ``pattern`` (compiled from keywords or a regex) → ``master`` with ``confidence``."""

    name: str
    master: str
    pattern: re.Pattern
    confidence: float = 0.5
    source: dict[str, Any] = field(default_factory=dict)  # the YAML dict it came from (for saving)

    def matches(self, text: str) -> bool:
        return self.pattern.search(text) is not None


@dataclass
class RuleMatch:
    """The rule that fired: its ``rule`` name, the ``master`` and the rule's ``confidence``."""

    rule: str
    master: str
    confidence: float


def _keyword_pattern(keywords: list[str], where: str) -> re.Pattern:
    if not keywords or not all(isinstance(k, str) and k.strip() for k in keywords):
        raise RoutingError(f"{where}.keywords must be a non-empty list of non-empty strings, e.g. [deploy, pipeline].")
    # whole words: 'ci' must not fire inside 'precision'; phrases match with any whitespace between words
    alts = sorted({r"\s+".join(re.escape(w) for w in k.split()) for k in keywords}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)


def parse_rule(data: Any, i: int, masters: Sequence[str] | None) -> Rule:
    """One rule dict → :class:`Rule`, with errors naming ``rules[i].field`` and the fix."""
    where = f"rules[{i}]"
    if not isinstance(data, dict):
        raise RoutingError(f"{where} must be a mapping with name, master, keywords or regex, confidence; got {data!r}.")
    unknown = set(data) - _RULE_KEYS
    if unknown:
        raise RoutingError(_unknown(where, sorted(unknown)))
    name = data.get("name") or f"rule-{i}"
    where = f"rules[{i}] ({name})"
    master = data.get("master")
    if not isinstance(master, str) or not master:
        raise RoutingError(f"{where}.master is missing; name the master this rule routes to.")
    if masters is not None and master not in masters:
        near = closest(master, masters)
        hint = f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""
        raise RoutingError(f"{where}.master={master!r} is not one of the masters ({', '.join(masters)}).{hint}")
    has_kw, has_re = "keywords" in data, "regex" in data
    if has_kw == has_re:
        raise RoutingError(f"{where} needs exactly one of 'keywords' (a list) or 'regex' (a string).")
    conf = data.get("confidence", 0.5)
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0:
        raise RoutingError(f"{where}.confidence={conf!r} must be a number in [0, 1].")
    if has_kw:
        kws = data["keywords"]
        pattern = _keyword_pattern(kws if isinstance(kws, list) else [], where)
    else:
        flags = 0
        for ch in str(data.get("flags", "")):
            if ch not in _FLAGS:
                raise RoutingError(f"{where}.flags={data.get('flags')!r}: unknown flag {ch!r}; use any of i, m, s.")
            flags |= _FLAGS[ch]
        if not isinstance(data["regex"], str) or not data["regex"]:
            raise RoutingError(f"{where}.regex must be a non-empty string.")
        try:
            pattern = re.compile(data["regex"], flags)
        except re.error as e:
            raise RoutingError(f"{where}.regex={data['regex']!r} does not compile ({e}); fix the expression.") from e
    return Rule(name=str(name), master=master, pattern=pattern, confidence=float(conf), source=dict(data))


def _unknown(where: str, keys: list[str]) -> str:
    return f"{where} has unknown keys {keys}; allowed: {', '.join(sorted(_RULE_KEYS))}."


@dataclass
class RuleSet:
    """Ordered rules plus a default master. :meth:`match` returns the first rule that fires."""

    rules: list[Rule] = field(default_factory=list)
    default_master: str | None = None

    @classmethod
    def from_dict(cls, data: Any, masters: Sequence[str] | None = None, where: str = "rules") -> "RuleSet":
        """From ``{"default_master": ..., "rules": [...]}`` (masters, if given, must include every target)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise RoutingError(f"{where} must be a mapping with 'rules' and 'default_master'; got {type(data).__name__}.")
        unknown = set(data) - {"rules", "default_master"}
        if unknown:
            raise RoutingError(f"{where} has unknown keys {sorted(unknown)}; allowed: rules, default_master.")
        raw = data.get("rules") or []
        if not isinstance(raw, list):
            raise RoutingError(f"{where}.rules must be a list of rules.")
        rules = [parse_rule(r, i, masters) for i, r in enumerate(raw)]
        default = data.get("default_master")
        if default is not None and masters is not None and default not in masters:
            raise RoutingError(f"{where}.default_master={default!r} is not one of the masters ({', '.join(masters)}).")
        return cls(rules=rules, default_master=default)

    @classmethod
    def load(cls, path: str | os.PathLike, masters: Sequence[str] | None = None) -> "RuleSet":
        """Read a rules YAML file (see the module docstring)."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise RoutingError(f"Rules file {str(p)!r} does not exist; see configs/router/rules.yaml for the format.")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise RoutingError(f"Rules file {str(p)!r} is not valid YAML ({e}); fix the syntax.") from e
        return cls.from_dict(data, masters, where=str(p))

    def to_dict(self) -> dict[str, Any]:
        return {"default_master": self.default_master, "rules": [r.source for r in self.rules]}

    def match(self, text: str) -> RuleMatch | None:
        """The first rule whose pattern occurs in ``text``, or ``None``."""
        for r in self.rules:
            if r.matches(text):
                return RuleMatch(rule=r.name, master=r.master, confidence=r.confidence)
        return None

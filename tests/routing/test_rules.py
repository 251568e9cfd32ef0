"""YAML rules: first match wins, whole-word keywords, regex flags, errors naming the field."""

from __future__ import annotations

import pytest

from cortex.errors import RoutingError
from cortex.routing.rules import RuleSet

MASTERS = ["dev", "security", "cicd"]


def rules(*items, default="dev"):
    return RuleSet.from_dict({"default_master": default, "rules": list(items)}, MASTERS)


def test_first_match_wins_and_keywords_are_whole_words():
    rs = rules({"name": "ci", "master": "cicd", "keywords": ["ci", "build pipeline"], "confidence": 0.7},
               {"name": "sec", "master": "security", "keywords": ["cve"], "confidence": 0.9})
    assert rs.match("CVE found in the build   pipeline").rule == "ci"  # both fire, the first wins
    assert rs.match("precision of the CI run").master == "cicd"
    assert rs.match("precision only") is None  # 'ci' inside 'precision' does not fire
    assert rs.match("patch CVE-2024-1").confidence == 0.9


def test_regex_with_flags():
    rs = rules({"name": "sql", "master": "dev", "regex": r"^select\b.+\bfrom\b", "flags": "im"})
    assert rs.match("note\nSELECT a FROM t") is not None
    assert rules({"name": "sql", "master": "dev", "regex": r"^select"}).match("SELECT 1") is None


@pytest.mark.parametrize("rule, message", [
    ({"master": "secrity", "keywords": ["x"]}, "Did you mean 'security'"),
    ({"master": "dev", "regex": "("}, "does not compile"),
    ({"master": "dev", "keywords": ["x"], "regex": "x"}, "exactly one of"),
    ({"master": "dev", "keywords": ["x"], "confidence": 1.5}, "confidence=1.5"),
    ({"master": "dev", "keywords": ["x"], "weight": 1}, "unknown keys"),
])
def test_bad_rules_name_the_rule_and_the_fix(rule, message):
    with pytest.raises(RoutingError, match=message):
        rules(rule)


def test_default_master_must_exist_and_load_from_yaml(tmp_path):
    with pytest.raises(RoutingError, match="default_master='qa'"):
        rules(default="qa")
    p = tmp_path / "r.yaml"
    p.write_text("default_master: cicd\nrules:\n  - {name: a, master: dev, keywords: [refactor]}\n")
    rs = RuleSet.load(p, MASTERS)
    assert rs.default_master == "cicd" and rs.match("Refactor it").rule == "a"
    assert RuleSet.from_dict(rs.to_dict(), MASTERS).match("refactor").master == "dev"

"""cortex._validate: every named check, and problems kept as data on ConfigError."""

import pytest

from cortex._validate import (
    Problems, build_dataclass, check_bool, check_choice, check_fraction, check_int, check_known_keys,
    check_non_empty, check_number, check_path_exists, check_positive, check_type,
)
from cortex.errors import ConfigError, Problem


def test_checks_collect_every_problem_with_field_and_value(tmp_path):
    p = Problems()
    assert check_positive("a.batch", 4, p) and not check_positive("a.batch", 0, p)
    assert not check_positive("a.flag_as_int", True, p)  # a bool is not a number
    assert check_int("a.k", 5, p, minimum=0, maximum=5) and not check_int("a.k", 6, p, maximum=5)
    assert check_fraction("a.f", 1.0, p) and not check_fraction("a.f", 1.0, p, upper_open=True)
    assert not check_fraction("a.g", 0.0, p, lower_open=True)
    assert not check_fraction("a.nan", float("nan"), p)
    assert check_number("a.lr", 1e-3, p, 0, low_open=True) and not check_number("a.lr", 0, p, 0, low_open=True)
    assert check_choice("a.kind", "mean", ("mean", "max"), p) and not check_choice("a.kind", "maen", ("mean", "max"), p)
    assert check_bool("a.b", False, p) and not check_bool("a.b", 1, p)
    assert check_non_empty("a.s", "x", p) and not check_non_empty("a.s", "  ", p)
    assert check_path_exists("a.dir", tmp_path, p, kind="dir") and not check_path_exists("a.file", tmp_path, p, kind="file")
    assert not check_type("a.t", "3", (int, float), p)
    assert not check_known_keys("a", {"lr": 1, "lrr": 2}, {"lr"}, p)
    fields = [q.field for q in p]
    assert fields == ["a.batch", "a.flag_as_int", "a.k", "a.f", "a.g", "a.nan", "a.lr", "a.kind", "a.b", "a.s",
                      "a.file", "a.t", "a.lrr"]
    with pytest.raises(ConfigError) as info:
        p.raise_if_any("thing")
    err = info.value
    assert str(err).startswith(f"thing has {len(fields)} problems:")
    assert [q.field for q in err.problems] == fields
    assert err.problems[0].value == 0 and "at least 1" in err.problems[0].message
    assert "Did you mean 'mean'" in err.problems[7].message


def test_single_problem_and_plain_error_carry_problems():
    p = Problems()
    check_choice("x.mode", "b", ("a",), p)
    with pytest.raises(ConfigError, match=r"^cfg: x.mode='b' is not one of a\.") as info:
        p.raise_if_any("cfg")
    assert info.value.problems == [Problem("x.mode='b' is not one of a.", "x.mode", "b")]
    plain = ConfigError("lr must be positive.")
    assert [str(q) for q in plain.problems] == ["lr must be positive."] and not plain.problems[0].has_value
    Problems().raise_if_any()  # nothing collected: no error


def test_build_dataclass_keeps_known_fields_and_reports_unknown():
    from dataclasses import dataclass

    @dataclass
    class S:
        lr: float = 0.1
        name: str = ""

    p = Problems()
    s = build_dataclass(S, {"lr": 0.5, "lrate": 1}, "opt", p, name="fixed")
    assert (s.lr, s.name) == (0.5, "fixed")
    assert p[0].field == "opt.lrate" and "Did you mean 'lr'" in p[0].message


def test_build_kind_picks_the_spec_of_its_kind_and_reports_bad_input():
    from dataclasses import dataclass

    from cortex._validate import build_kind

    @dataclass
    class Wide:
        kind: str = "wide"
        width: int = 4

        def check(self, where, problems):
            check_positive(f"{where}.width", self.width, problems)

    p = Problems()
    assert build_kind({"wide": Wide}, {"width": 7}, "b.x", p, "wide", "{'kind': 'wide'}") == Wide(width=7)
    assert build_kind({"wide": Wide}, {"kind": "wid"}, "b.y", p, "wide", "{'kind': 'wide'}") is None
    assert build_kind({"wide": Wide}, 3, "b.z", p, "wide", "{'kind': 'wide'}") is None
    build_kind({"wide": Wide}, {"width": 0}, "b.w", p, "wide", "{'kind': 'wide'}")
    assert [q.field for q in p] == ["b.y.kind", "b.z", "b.w.width"]

"""The registry index: atomic writes, names, versions, aliases, lineage, checksums."""

from __future__ import annotations

import json

import pytest

from cortex.errors import ChecksumError, InvalidNameError, NameTakenError, RegistryError, UnknownNameError
from cortex.hub import Registry, safe_join, validate_name


def _add(reg: Registry, name: str, content: bytes = b"x", **fields):
    with reg.stage() as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "weights.safetensors").write_bytes(content)
        return reg.register(tmp, name=name, kind=fields.pop("kind", "model"), source="custom", **fields)


def test_register_writes_index_metadata_and_checksums(cortex_home):
    reg = Registry()
    e = _add(reg, "alpha", b"hello", tags=["t1"], license="mit")
    index = json.loads((cortex_home / "models" / "registry.json").read_text())
    assert index["entries"]["alpha"]["files"]["weights.safetensors"] == e.files["weights.safetensors"]
    meta = json.loads((cortex_home / "models" / "alpha" / "metadata.json").read_text())
    assert meta["name"] == "alpha" and meta["tags"] == ["t1"] and meta["size_bytes"] == 7
    import hashlib

    assert e.files["weights.safetensors"] == hashlib.sha256(b"hello").hexdigest()
    assert not list((cortex_home / "models" / ".staging").iterdir())


def test_taken_names_get_versions_and_error_policy():
    reg = Registry()
    assert [_add(reg, "m").name for _ in range(3)] == ["m", "m-v2", "m-v3"]
    with pytest.raises(NameTakenError, match="cortex models rm m"):
        _add(reg, "m", on_conflict="error")


@pytest.mark.parametrize("bad", ["a/b", "../up", ".hidden", "/abs/path", "a..b", "", "sp ace"])
def test_unsafe_names_are_refused(bad):
    with pytest.raises(InvalidNameError):
        validate_name(bad)


def test_safe_join_refuses_escapes(tmp_path):
    assert safe_join(tmp_path, "a/b.json") == (tmp_path / "a" / "b.json").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(InvalidNameError, match="escapes"):
            safe_join(tmp_path, bad)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(InvalidNameError, match="outside"):
        safe_join(tmp_path, "link/passwd")


def test_unknown_name_suggests_closest():
    reg = Registry()
    _add(reg, "qwen2.5-0.5b")
    with pytest.raises(UnknownNameError, match="Did you mean 'qwen2.5-0.5b'"):
        reg.get("qwen2.5-05b")


def test_verify_detects_changed_and_missing_files(cortex_home):
    reg = Registry()
    _add(reg, "m", b"abc")
    assert reg.verify("m") == {"changed": [], "missing": [], "extra": []}
    (cortex_home / "models" / "m" / "weights.safetensors").write_bytes(b"abd")
    assert reg.verify("m")["changed"] == ["weights.safetensors"]
    with pytest.raises(ChecksumError, match="weights.safetensors"):
        reg.check("m")
    (cortex_home / "models" / "m" / "config.json").unlink()
    assert reg.verify("m")["missing"] == ["config.json"]


def test_lineage_copy_remove_and_aliases():
    reg = Registry()
    _add(reg, "base")
    _add(reg, "child", fine_tuned_from="base")
    _add(reg, "tree", kind="tree", parents=["child", "base"])
    lin = reg.lineage("tree")
    assert [p["name"] for p in lin["ancestors"]["parents"]] == ["child", "base"]
    assert lin["ancestors"]["parents"][0]["parents"][0]["name"] == "base"
    down = reg.lineage("base")["descendants"]
    assert {c["name"] for c in down["children"]} == {"child", "tree"}
    with pytest.raises(Exception, match="parent of"):
        reg.remove("base")
    cp = reg.copy("child", "child-copy")
    assert cp.fine_tuned_from == "base" and cp.files == reg.get("child").files
    reg.set_alias("router.champion", "child-copy")
    assert reg.get("router.champion").name == "child-copy"
    reg.remove("child-copy")
    assert "router.champion" not in reg.aliases()
    with pytest.raises(UnknownNameError):
        _add(reg, "orphan", fine_tuned_from="nope")


def test_failed_stage_leaves_nothing(cortex_home):
    reg = Registry()
    with pytest.raises(KeyboardInterrupt):
        with reg.stage() as tmp:
            (tmp / "big.safetensors").write_bytes(b"0" * 1000)
            raise KeyboardInterrupt
    assert reg.names() == []
    assert not list((cortex_home / "models" / ".staging").iterdir())


def test_orphan_folders_and_dead_staging_are_swept(cortex_home):
    reg = Registry()
    root = cortex_home / "models"
    (root / "half-written").mkdir()
    (root / ".staging").mkdir(exist_ok=True)
    (root / ".staging" / "999999999-dead").mkdir()
    _add(reg, "ok")
    assert not (root / "half-written").exists()
    assert not (root / ".staging" / "999999999-dead").exists()


def test_damaged_index_names_the_fix_and_rebuild_restores_it(cortex_home):
    reg = Registry()
    _add(reg, "a")
    _add(reg, "b", fine_tuned_from="a")
    reg.set_alias("best", "b")
    index = cortex_home / "models" / "registry.json"
    index.write_text("{not json")
    with pytest.raises(RegistryError, match="cortex models rebuild-index"):
        reg.names()
    assert reg.rebuild_index() == ["a", "b"]
    assert reg.get("b").fine_tuned_from == "a" and reg.aliases() == {}
    assert reg.verify("b") == {"changed": [], "missing": [], "extra": []}


def test_lost_index_never_sweeps_complete_entries(cortex_home):
    reg = Registry()
    _add(reg, "kept")
    (cortex_home / "models" / "registry.json").unlink()
    _add(reg, "new")  # the next write must not delete what only a rebuild can still find
    assert (cortex_home / "models" / "kept").is_dir()
    assert reg.rebuild_index() == ["kept", "new"]


def test_entry_moved_aside_by_a_killed_process_is_put_back(cortex_home):
    """`rm` (and replace) move the folder into staging, then rewrite the index; a SIGKILL between the two
    leaves the index naming a folder that is gone. The next write restores it rather than deleting it."""
    reg = Registry()
    _add(reg, "victim", content=b"weights")
    root = cortex_home / "models"
    (root / ".staging").mkdir(exist_ok=True)
    (root / "victim").rename(root / ".staging" / "999999999-rm-deadbeef")
    _add(reg, "other")
    assert (root / "victim").is_dir() and not list((root / ".staging").iterdir())
    assert reg.verify("victim") == {"changed": [], "missing": [], "extra": []}


def test_cli_rebuild_index(cortex_home, capsys):
    from cortex.cli.main import main

    _add(Registry(), "x")
    (cortex_home / "models" / "registry.json").write_text("")
    assert main(["models", "list"]) == 1
    assert "rebuild-index" in capsys.readouterr().err
    assert main(["models", "rebuild-index"]) == 0 and "1 entries" in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["x"]


def test_model_selection_validates_its_fields():
    from cortex.errors import ConfigError
    from cortex.models.selection import ModelSelection

    assert ModelSelection.from_mapping({"model_name": None, "char_lm": None}).char_lm == {}
    for bad, field_name in (({"char_lm": 3}, "char_lm"), ({"model_name": 5}, "model_name"),
                            ({"chars": ""}, "chars"), ({"modle_name": "x"}, "model_name")):
        with pytest.raises(ConfigError, match=field_name):
            ModelSelection.from_mapping(bad)

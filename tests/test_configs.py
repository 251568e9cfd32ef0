"""Shipped configs: found through importlib.resources, listed, printed, exported, resolved by name."""

import pytest

from cortex.cli.main import main
from cortex.configs import config_dir, export_configs, list_configs, resolve_config
from cortex.errors import ConfigError


def test_shipped_configs_are_listed_and_resolved_by_name_or_path(tmp_path):
    names = list_configs()
    assert {"train", "experiment/ehrlich", "design/ehrlich", "router/rules"} <= set(names)
    assert list_configs("design") == ["design/ehrlich"]
    assert resolve_config("ehrlich", group="design") == config_dir() / "design" / "ehrlich.yaml"
    assert resolve_config("design/ehrlich.yaml") == config_dir() / "design" / "ehrlich.yaml"
    mine = tmp_path / "ehrlich"
    mine.write_text("problem: {}\n")
    assert resolve_config(mine, group="design") == mine  # a user's file is never shadowed by a shipped name
    with pytest.raises(ConfigError, match="Did you mean 'ehrlich'"):
        resolve_config("ehrlik", group="design")


def test_export_copies_every_config_and_keeps_existing_files(tmp_path):
    written = export_configs(tmp_path)
    assert len(written) == len(list_configs())
    assert (tmp_path / "design" / "ehrlich.yaml").read_text() == (config_dir() / "design" / "ehrlich.yaml").read_text()
    (tmp_path / "train.yaml").write_text("# my edit\n")
    with pytest.raises(ConfigError, match="--overwrite"):
        export_configs(tmp_path)
    assert (tmp_path / "train.yaml").read_text() == "# my edit\n"


def test_configs_commands(tmp_path, capsys):
    assert main(["configs", "list", "experiment"]) == 0
    assert "experiment/ehrlich" in capsys.readouterr().out.split()
    assert main(["configs", "show", "design/ehrlich"]) == 0
    assert "problem:" in capsys.readouterr().out
    assert main(["configs", "show", "desing/ehrlich"]) == 1
    assert "Did you mean 'design/ehrlich'" in capsys.readouterr().err
    assert main(["configs", "export", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "experiment" / "ehrlich.yaml").is_file()

"""Every YAML under configs/ composes and validates; bad overrides and configs are reported at once."""

from __future__ import annotations

import pytest

from cortex.errors import ConfigError
from cortex.training.config import (
    compose_config,
    config_files,
    find_config_dir,
    validate_config,
    validate_group_option,
)

FILES = config_files()


def test_the_walk_covers_every_group():
    groups = {g for g, _ in FILES}
    assert {"roots", "trunk", "branches", "tree", "tasks", "data", "trainer", "experiment"} <= groups
    assert len(FILES) == len(list(find_config_dir().rglob("*.yaml")))  # other tools' folders (router/, design/) too


@pytest.mark.parametrize("group,option", [f for f in FILES if f[0]], ids=lambda v: str(v))
def test_every_yaml_composes_and_validates(group, option):
    validate_group_option(group, option)


def test_primary_config_composes_and_asks_for_an_experiment():
    cfg = compose_config([])
    assert set(cfg) == {"tree", "trainer", "tasks", "data", "output"}
    with pytest.raises(ConfigError, match="experiment=ehrlich"):
        validate_config(cfg)


def test_overrides_reach_the_validated_run():
    run = validate_config(compose_config(["experiment=ehrlich", "trainer.max_epochs=1", "trainer.lr=3e-4",
                                          "tasks.value.weight=2.5"]))
    assert run.settings.max_epochs == 1 and run.settings.lr == 3e-4
    assert {t.name: t.weight for t in run.tasks} == {"value": 2.5, "lm": 1.0}


def test_unknown_keys_and_options_are_all_reported_with_the_closest_name():
    with pytest.raises(ConfigError) as err:
        compose_config(["experiment=ehrlich", "trainer.max_epoch=1", "trainer.lrr=0.1", "trunk@tree.trunk=concatt",
                        "tree=ehrlich_smal"])
    text = str(err.value)
    assert "4 problems" in text
    assert "Did you mean 'trainer.max_epochs'" in text and "Did you mean 'trainer.lr'" in text
    assert "Did you mean 'concat'" in text and "Did you mean 'ehrlich_small'" in text


def test_validation_lists_every_problem_before_anything_heavy():
    cfg = compose_config(["experiment=ehrlich"])
    cfg["trainer"]["lr_schedule"] = "cosin"
    cfg["trainer"]["batch_size"] = 0
    cfg["tasks"]["value"]["inputs"] = {"protein": "sequence"}
    cfg["tasks"]["lm"]["data"] = "ehrlch"
    cfg["data"]["ehrlich"]["val_fractoin"] = 0.1
    cfg["extra"] = 1
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    text = str(err.value)
    for needle in ("'cosine'", "batch_size=0", "root(s) ['protein']", "Did you mean 'ehrlich'",
                   "Did you mean 'val_fraction'", "Unknown key 'extra'"):
        assert needle in text, needle

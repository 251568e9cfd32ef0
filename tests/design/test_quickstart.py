"""``cortex design --config`` and ``cortex quickstart``: the CLI, the job's outputs, resume, config errors."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from cortex.cli.main import COMMAND_MODULES, main
from cortex.design.job import DesignJobConfig, run_design_job
from cortex.design.quickstart import quickstart_config
from cortex.errors import ConfigError

TINY = {
    "problem": {"variant": "5,8,2,2,2", "initial_designs": 16, "random_seed": 3},
    "tree": {"ensemble_size": 2, "width": 16, "kernel_size": 3, "num_blocks": 1},
    "lambo": {"num_steps": 2, "num_mutations": 2, "guidance_steps": 2, "saliency_path_points": 2},
    "surrogate": {"initial_steps": 60, "finetune_steps": 10, "batch_size": 16},
    "loop": {"batch_size": 16, "budget": 48, "num_chains": 16, "num_parents": 4},
    "register_as": "tiny-ehrlich-tree",
}


def test_commands_are_registered():
    assert "cortex.cli.design" in COMMAND_MODULES
    assert main(["quickstart", "--help"]) == 0
    assert main(["design", "--help"]) == 0


def test_design_command_runs_end_to_end(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert main(["design", "--config", str(config), "--out", str(out), "loop.budget=40"]) == 0
    printed = capsys.readouterr().out
    assert "LaMBO-2 vs GA" in printed and "registered as tiny-ehrlich-tree" in printed
    frame = pd.read_parquet(out / "history.parquet")
    assert set(frame["method"]) == {"lambo2", "ga"}
    lambo, ga = frame[frame["method"] == "lambo2"], frame[frame["method"] == "ga"]
    assert len(lambo) == 40 and len(ga) == 40  # the GA gets exactly LaMBO-2's budget
    assert lambo["sequence"].is_unique
    assert (out / "best_vs_evaluations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from transformers import AutoModel

    from cortex.hub.registry import Registry

    entry = Registry().get("tiny-ehrlich-tree")
    assert entry.kind == "tree" and entry.extra["evaluations"] == 40
    tree = AutoModel.from_pretrained(Registry().path(entry.name))
    assert "mlm" in tree.leaves and "value" in tree.leaves


def test_a_rerun_resumes_the_saved_history(tmp_path):
    first = DesignJobConfig.from_dict({**TINY, "out_dir": str(tmp_path), "compare_ga": False, "register_as": None})
    result = run_design_job(first)
    assert result.lambo.evaluations == 48 and result.plot_path is not None
    more = DesignJobConfig.from_dict({**TINY, "out_dir": str(tmp_path), "compare_ga": False, "register_as": None,
                                      "loop": {**TINY["loop"], "budget": 64}})
    resumed = run_design_job(more)
    assert resumed.lambo.evaluations == 64
    assert resumed.lambo.rounds[0].round > max(r.round for r in result.lambo.rounds)
    frame = pd.read_parquet(tmp_path / "history.parquet")
    assert len(frame) == 64 and frame["sequence"].is_unique


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="Unknown key 'bugdet' in loop.*budget"):
        DesignJobConfig.from_dict({"loop": {"bugdet": 10}})
    with pytest.raises(ConfigError, match="Unknown key 'lamb'.*lambo"):
        DesignJobConfig.from_dict({"lamb": {}})
    with pytest.raises(ConfigError, match="kl_weight"):
        DesignJobConfig.from_dict({"lambo": {"kl_weight": 2.0}})
    # every problem of every section at once, each kept on the error as data
    with pytest.raises(ConfigError) as err:
        DesignJobConfig.from_dict({"problem": {"initial_designs": 0}, "tree": {"widht": 3, "width": -1},
                                   "loop": {"batch_size": 0}, "threads": 0})
    fields = [p.field for p in err.value.problems]
    assert fields == ["problem.initial_designs", "tree.widht", "tree.width", "threads", "loop"], fields
    with pytest.raises(ConfigError, match="--evaluations 100 must exceed"):
        quickstart_config(evaluations=100)
    assert main(["design", "--config", "/nonexistent/design.yaml"]) == 1


def test_hydra_overrides_compose(tmp_path):
    from cortex.cli.design import load_design_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    data = load_design_config(config, ["loop.budget=33", "lambo.num_mutations=3"])
    job = DesignJobConfig.from_dict(data)
    assert job.loop.budget == 33 and job.lambo.num_mutations == 3
    with pytest.raises(ConfigError, match="Cannot compose"):
        load_design_config(config, ["loop.budget=="])


def test_quickstart_config_is_the_embedded_default():
    job = quickstart_config(seed=2, out_dir="x")
    assert job.problem.random_seed == 2 and job.seed == 2 and job.compare_ga and job.register_as
    assert job.loop.budget > job.problem.initial_designs



def test_shipped_yaml_matches_the_embedded_default():
    from pathlib import Path

    from cortex.cli.design import load_design_config

    path = Path(__file__).resolve().parents[2] / "src" / "cortex" / "configs" / "design" / "ehrlich.yaml"
    data = load_design_config(path, [])
    job = DesignJobConfig.from_dict(data)
    quick = quickstart_config(evaluations=job.loop.budget, out_dir=job.out_dir)
    assert job.lambo == quick.lambo and job.surrogate == quick.surrogate and job.tree == quick.tree
    assert job.loop == quick.loop and job.problem == quick.problem

"""NeuralTreeConfig: defaults, validation naming the field, typed views, JSON round trip."""

from __future__ import annotations

import pytest

import cortex  # noqa: F401  (registers the Auto classes)
from cortex.errors import ConfigError
from cortex.models.neural_tree import NeuralTreeConfig
from cortex.models.neural_tree.specs import Conv1dRootSpec, RegressorLeafSpec, TrunkSpec


def test_default_config_is_a_small_valid_tree():
    cfg = NeuralTreeConfig()
    assert cfg.model_type == "neural_tree"
    roots, leaves = cfg.root_specs(), cfg.leaf_specs()
    assert list(roots) == ["protein"] and isinstance(roots["protein"], Conv1dRootSpec)
    assert roots["protein"].tokenizer == "protein" and roots["protein"].vocab_size == 25
    assert isinstance(cfg.trunk_spec(), TrunkSpec) and cfg.trunk_spec().kind == "sum"
    assert isinstance(leaves["regression"], RegressorLeafSpec) and leaves["regression"].branch in cfg.branches
    # defaults are written into the dicts, so config.json is complete
    assert cfg.roots["protein"]["corruption"]["kind"] == "mask"
    assert cfg.leaves["regression"]["ensemble_size"] == 1


def test_round_trip_through_dict_keeps_every_node():
    cfg = NeuralTreeConfig(
        roots={"seq": {"kind": "transformer", "tokenizer": "char", "chars": "abc", "hidden_dim": 13, "num_heads": 1}},
        trunk={"kind": "concat", "out_dim": 11},
        branches={"b": {"kind": "mlp", "out_dim": 7, "pooling": "attention"}},
        leaves={"cls": {"kind": "classifier", "branch": "b", "num_classes": 5, "ensemble_size": 3}},
    )
    again = NeuralTreeConfig.from_dict(cfg.to_dict())
    assert again.roots == cfg.roots and again.trunk == cfg.trunk
    assert again.branches == cfg.branches and again.leaves == cfg.leaves
    assert again.root_specs()["seq"].vocab_size == 5 + 3
    assert again.branch_ensemble_sizes() == {"b": 3}
    assert again.trunk_dim() == 11


def test_unknown_root_kind_names_field_and_choices():
    with pytest.raises(ConfigError) as e:
        NeuralTreeConfig(roots={"p": {"kind": "lstm"}})
    msg = str(e.value)
    assert "roots.p.kind='lstm'" in msg and "conv1d" in msg and "transformer" in msg and "hf" in msg


def test_unknown_key_is_named_with_valid_keys():
    with pytest.raises(ConfigError) as e:
        NeuralTreeConfig(branches={"branch": {"kind": "mlp", "widht": 7}})
    assert "'widht'" in str(e.value) and "branches.branch" in str(e.value) and "out_dim" in str(e.value)


def test_leaf_pointing_at_missing_branch():
    with pytest.raises(ConfigError) as e:
        NeuralTreeConfig(leaves={"y": {"kind": "regressor", "branch": "nope"}})
    assert "leaves.y.branch='nope'" in str(e.value) and "branch" in str(e.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as e:
        NeuralTreeConfig(
            roots={"p": {"kind": "conv1d", "out_dim": 0}},
            branches={"b": {"kind": "mlp", "pooling": "sum"}},
            leaves={"y": {"kind": "regresor", "branch": "b"}, "z": {"kind": "classifier", "branch": "b", "num_classes": 1}},
        )
    msg = str(e.value)
    assert "4 problems" in msg
    for field in ("roots.p.out_dim=0", "branches.b.pooling='sum'", "leaves.y.kind='regresor'", "leaves.z.num_classes=1"):
        assert field in msg
    assert "Did you mean 'regressor'" in msg


def test_denoising_leaf_vocab_must_match_root():
    base = {"roots": {"p": {"kind": "conv1d"}}, "branches": {"b": {"kind": "conv1d"}}}
    ok = NeuralTreeConfig(**base, leaves={"mlm": {"kind": "denoising_lm", "branch": "b", "root": "p"}})
    assert ok.leaf_specs()["mlm"].vocab_size == 25
    with pytest.raises(ConfigError) as e:
        NeuralTreeConfig(**base, leaves={"mlm": {"kind": "denoising_lm", "branch": "b", "root": "p", "vocab_size": 33}})
    assert "leaves.mlm.vocab_size=33" in str(e.value) and "25" in str(e.value)
    with pytest.raises(ConfigError, match="leaves.mlm.root is required"):
        NeuralTreeConfig(**base, leaves={"mlm": {"kind": "denoising_lm", "branch": "b"}})


def test_root_level_mistakes():
    with pytest.raises(ConfigError, match="hidden_dim=13 is not divisible by num_heads=2"):
        NeuralTreeConfig(roots={"p": {"kind": "transformer", "hidden_dim": 13, "num_heads": 2}})
    with pytest.raises(ConfigError, match="blosum62"):
        NeuralTreeConfig(roots={"t": {"kind": "conv1d", "tokenizer": "char", "corruption": {"substitution": "blosum62"}}})
    with pytest.raises(ConfigError, match="roots.p.corruption.schedule='cosin'"):
        NeuralTreeConfig(roots={"p": {"kind": "conv1d", "corruption": {"schedule": "cosin"}}})
    with pytest.raises(ConfigError, match="not a valid node name"):
        NeuralTreeConfig(roots={"a.b": {"kind": "conv1d"}}, leaves={"y": {"branch": "branch"}})
    with pytest.raises(ConfigError, match="label_smoothing='corrupt_frac' needs leaves.y.root"):
        NeuralTreeConfig(leaves={"y": {"branch": "branch", "label_smoothing": "corrupt_frac"}})


def test_hf_root_with_unknown_registry_name(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEX_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError) as e:
        NeuralTreeConfig(roots={"text": {"kind": "hf", "source": "no-such-model"}}, trunk={"kind": "sum"})
    msg = str(e.value)
    assert "roots.text.source='no-such-model'" in msg and "cortex import-model" in msg

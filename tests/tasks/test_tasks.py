"""Task configs, leaves, losses, corruption and metric accumulators, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from cortex.errors import ConfigError, DataError
from cortex.tasks import (
    ClassificationAccumulator,
    ClassificationTask,
    DenoisingLMTask,
    MaskedLMAccumulator,
    RegressionAccumulator,
    RegressionTask,
    build_task,
    build_tasks,
)
from cortex.tasks.corruption import draw_corruption, step_generator


def test_build_task_reports_unknown_keys_and_kinds():
    with pytest.raises(ConfigError) as err:
        build_task("y", {"kind": "regression", "inputs": {"p": "s"}, "target": ["v"], "wieght": 2})
    text = str(err.value)
    assert "Did you mean 'targets'" in text and "Did you mean 'weight'" in text
    with pytest.raises(ConfigError, match="Did you mean 'regression'"):
        build_task("y", {"kind": "regresion", "inputs": {"p": "s"}})
    with pytest.raises(ConfigError, match="corrupt_max_frac=1.5"):
        RegressionTask("y", inputs={"p": "s"}, targets=["v"], corrupt_max_frac=1.5)
    with pytest.raises(ConfigError, match="used twice"):
        build_tasks({"a": RegressionTask("a", inputs={"p": "s"}, targets=["v"]),
                     "b": RegressionTask("a", inputs={"p": "s"}, targets=["v"])})


def test_leaf_specs_follow_the_task():
    reg = RegressionTask("y", inputs={"p": "s"}, targets=["a", "b"], ensemble_size=5, corrupt_train_inputs=True)
    spec = reg.leaf_spec("br")
    assert spec == {"kind": "regressor", "branch": "br", "ensemble_size": 5, "num_layers": 0, "root": "p",
                    "label_smoothing": "corrupt_frac", "out_dim": 2, "nominal_label_var": 0.0625}
    lm = DenoisingLMTask("lm", inputs={"p": "s", "q": "t"}, lm_root="q")
    assert lm.leaf_spec("br")["root"] == "q" and lm.target_columns() == []
    cls = build_task("c", {"kind": "classification", "inputs": {"p": "s"}, "target": "label", "classes": ["x", "y", "z"]})
    cls.prepare(_ds({"s": ["A"], "label": ["y"]}))
    assert cls.leaf_spec("br")["num_classes"] == 3 and cls.label_column == "c.label_id"


def _ds(cols):
    import datasets

    return datasets.Dataset.from_dict(cols)


def test_classification_labels_names_and_bad_values():
    task = ClassificationTask("c", inputs={"p": "s"}, target="label")
    train = _ds({"s": list("ACDEF"), "label": ["dog", "cat", "dog", "eel", "cat"]})
    task.prepare(train)
    assert task.classes == ["cat", "dog", "eel"] and task.num_classes == 3
    assert list(task.encode(train)["c.label_id"]) == [1, 0, 1, 2, 0]
    with pytest.raises(DataError, match="not among classes"):
        task.encode(_ds({"s": ["A"], "label": ["bird"]}))
    ids = ClassificationTask("d", inputs={"p": "s"}, target="label", num_classes=2)
    with pytest.raises(DataError, match=r"rows \[1\]"):
        ids.check_targets(_ds({"s": ["A", "C"], "label": [1, 7]}), "val")


def test_regression_accumulator_ensemble_mixture_closed_form():
    loc = torch.tensor([[[1.0], [2.0], [4.0]], [[3.0], [2.0], [0.0]]])  # (E=2, N=3, O=1)
    scale = torch.tensor([[[1.0], [2.0], [1.0]], [[1.0], [2.0], [3.0]]])
    y = torch.tensor([[2.5], [1.0], [2.0]])
    acc = RegressionAccumulator()
    acc.update(loc[:, :2], scale[:, :2], y[:2])
    acc.update(loc[:, 2:], scale[:, 2:], y[2:])
    out = acc.compute()
    mean = torch.tensor([2.0, 2.0, 2.0])
    var = torch.tensor([(1 + 1) / 2 + 1.0, 4.0, (1 + 9) / 2 + 4.0])  # E[s^2] + Var[mu]
    nll = float(torch.mean(0.5 * torch.log(2 * math.pi * var) + 0.5 * (y[:, 0] - mean) ** 2 / var))
    assert out["rmse"] == pytest.approx(math.sqrt(((0.5) ** 2 + 1 + 0) / 3))
    assert out["nll"] == pytest.approx(nll, rel=1e-6)
    assert math.isnan(out["spearman_rho"])  # a constant prediction has no rank correlation


def test_classification_and_lm_accumulators():
    logits = torch.log(torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]]))  # (1, 4, 2)
    acc = ClassificationAccumulator()
    acc.update(logits, torch.tensor([0, 1, 1, -100]))  # the last row is unlabelled
    out = acc.compute()
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["auroc"] == pytest.approx(1.0)  # p(1) = .1 for the negative, .8 and .4 for the positives
    # ECE with 15 bins: confidences .9 (right), .8 (right), .6 (wrong) each alone in a bin
    assert out["ece"] == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    lm = MaskedLMAccumulator()
    probs = torch.tensor([[[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]]]])  # (E=1, B=1, T=2, V=3)
    lm.update(probs.log(), torch.tensor([[0, 2]]), torch.tensor([[True, True]]))
    lm.update(probs.log(), torch.tensor([[1, 1]]), torch.tensor([[False, True]]))
    out = lm.compute()
    assert out["masked_acc"] == pytest.approx(2 / 3)
    assert out["perplexity"] == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.2) + math.log(0.6)) / 3))
    assert out.keys() == {"masked_acc", "perplexity"}


def test_corruption_is_reproducible_and_scaled():
    from cortex.models.neural_tree import NeuralTreeConfig, NeuralTreeModel

    tree = NeuralTreeModel(NeuralTreeConfig(
        roots={"p": {"kind": "conv1d", "max_len": 11, "embed_dim": 5, "hidden_dim": 7, "out_dim": 7}},
        branches={"b": {"kind": "mlp", "out_dim": 7, "hidden_dim": 7}}, leaves={"y": {"kind": "regressor", "branch": "b"}},
    ))
    ids = torch.randint(5, 25, (13, 11))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    a = draw_corruption(tree, "p", inputs, step_generator(3, 7), max_frac=0.25)
    b = draw_corruption(tree, "p", inputs, step_generator(3, 7), max_frac=0.25)
    c = draw_corruption(tree, "p", inputs, step_generator(3, 8), max_frac=0.25)
    assert torch.equal(a.frac, b.frac) and torch.equal(a.noise.select, b.noise.select)
    assert not torch.equal(a.frac, c.frac)
    assert float(a.frac.max()) <= 0.25 and a.noise.gaussian is None  # mask kind: no Gaussian draw
    task = RegressionTask("y", inputs={"p": "s"}, targets=["v"], corrupt_train_inputs=True, corrupt_max_frac=0.25)
    assert task.corruption(tree, {"p": inputs}, step_generator(0, 0), training=False) is None
    params = task.corruption(tree, {"p": inputs}, step_generator(0, 0), training=True)
    out = tree({"p": inputs}, ["y"], params)
    corrupted = out.root_outputs["p"].is_corrupted.float().mean(1)
    assert float(corrupted.mean()) == pytest.approx(float(params["p"].frac.mean()), abs=0.12)
    # label smoothing is each example's corruption fraction
    assert torch.equal(task.smoothing(params), params["p"].frac)

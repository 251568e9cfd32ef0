"""fit_tree end to end on learnable synthetic tasks: learning, EMA, per-leaf steps, compile, resume."""

from __future__ import annotations

import math

import pytest
import torch

from cortex.errors import ConfigError, DataError
from cortex.tasks import ClassificationTask, DenoisingLMTask, RegressionTask, SequenceRegressionTask
from cortex.training import TrainSettings, build_tree, evaluate, fit_tree
from cortex.training.module import lr_lambda
from tests.training.conftest import synthetic_rows, tiny_tree_dict

TRAIN, VAL = synthetic_rows(320, seed=1), synthetic_rows(96, seed=2)


def _tasks():
    return [
        RegressionTask("frac", inputs={"seq": "sequence"}, targets=["frac_a"]),
        ClassificationTask("cls", inputs={"seq": "sequence"}, target="many_c", ensemble_size=3),
        DenoisingLMTask("lm", inputs={"seq": "sequence"}, weight=0.5),
    ]


def _settings(**kw) -> TrainSettings:
    base = dict(max_epochs=6, batch_size=32, lr=2e-2, warmup_steps=3, seed=0)
    return TrainSettings(**{**base, **kw})


def test_learns_and_beats_trivial_baselines():
    tasks = _tasks()
    torch.manual_seed(0)
    tree = build_tree(tiny_tree_dict(), tasks, train=TRAIN)
    result = fit_tree(tree, tasks, TRAIN, VAL, _settings())
    first, last = result.history[0], result.history[-1]
    assert last["val/loss"] < first["val/loss"]  # the summed loss falls
    frac = result.task_metrics("frac")
    y = torch.tensor(VAL["frac_a"])
    mean_rmse = math.sqrt(float(((y - torch.tensor(TRAIN["frac_a"]).mean()) ** 2).mean()))
    assert frac["rmse"] < 0.8 * mean_rmse  # beats the mean predictor
    assert frac["spearman_rho"] > 0.6
    cls = result.task_metrics("cls")
    majority = max(sum(VAL["many_c"]), len(VAL["many_c"]) - sum(VAL["many_c"])) / len(VAL["many_c"])
    assert cls["accuracy"] > majority + 0.05
    assert 0.5 < cls["auroc"] <= 1.0 and 0.0 <= cls["ece"] <= 1.0
    lm = result.task_metrics("lm")
    assert 1.0 < lm["perplexity"] < len(tree.root_tokenizers()["seq"])  # better than uniform over the vocabulary
    assert result.steps == 6 * 10 and result.epochs == 6
    assert not tree.training


def test_sequence_regression_task_learns_positions():
    task = SequenceRegressionTask("pos", inputs={"seq": "sequence"}, target="is_a")
    torch.manual_seed(1)
    tree = build_tree(tiny_tree_dict(), [task])
    result = fit_tree(tree, [task], TRAIN, VAL, _settings(max_epochs=4))
    assert result.task_metrics("pos")["spearman_rho"] > 0.5


def test_ema_weights_are_validated_and_saved(tmp_path):
    tasks = _tasks()[:1]
    torch.manual_seed(0)
    tree = build_tree(tiny_tree_dict(), tasks, train=TRAIN)
    result = fit_tree(tree, tasks, TRAIN, VAL, _settings(max_epochs=2, ema_decay=0.9, output_dir=str(tmp_path), loggers=[]))
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    final = {f"tree.{k}": v for k, v in tree.state_dict().items()}
    diffs = [k for k in averaged if k.endswith("weight") and not torch.equal(averaged[k], raw[k])]
    assert diffs, "EMA weights should differ from the raw weights"
    for k in averaged:  # the tree after training holds the averaged weights...
        torch.testing.assert_close(final[k], averaged[k])
    tree.save_pretrained(tmp_path / "saved")  # ...so that is what gets saved
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "saved" / "model.safetensors")
    k = diffs[0].removeprefix("tree.")
    torch.testing.assert_close(saved[k], averaged[diffs[0]])
    # the reported metrics are those of the averaged weights
    again = evaluate(tree, tasks, _datamodule(tree, tasks), TrainSettings(seed=0))
    assert again["val/frac/rmse"] == pytest.approx(result.metrics["val/frac/rmse"], rel=1e-5)


def _datamodule(tree, tasks):
    from cortex.training.datamodules import MultiTaskDataModule
    from cortex.training.fit import per_task_splits

    splits = per_task_splits(tasks, TRAIN, VAL)
    return MultiTaskDataModule.build(tasks, splits, tree.root_tokenizers(), batch_size=32)


def test_per_leaf_optimization_steps_once_per_task():
    tasks = _tasks()
    torch.manual_seed(0)
    tree = build_tree(tiny_tree_dict(), tasks, train=TRAIN)
    before = {k: v.clone() for k, v in tree.state_dict().items()}
    result = fit_tree(tree, tasks, TRAIN, VAL, _settings(max_epochs=1, optimization="per_leaf"))
    assert result.steps == 10 * len(tasks)  # one optimizer step per task per batch
    assert any(not torch.equal(before[k], v) for k, v in tree.state_dict().items())
    assert math.isfinite(result.metrics["val/loss"])


def test_compile_runs_the_training_path_through_dynamo():
    import torch._dynamo

    tasks = _tasks()[:1]
    torch.manual_seed(0)
    tree = build_tree(tiny_tree_dict(), tasks, train=TRAIN)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    result = fit_tree(tree, tasks, TRAIN, VAL, _settings(max_epochs=1, compile=True, compile_backend="eager"))
    assert counters["stats"]["unique_graphs"] >= 1  # the tree's forward was captured, not run eagerly
    assert math.isfinite(result.metrics["val/frac/rmse"])


def test_resume_continues_the_same_trajectory(tmp_path):
    """Kill a run after 2 of 4 epochs, resume from last.ckpt: same weights as the uninterrupted run."""
    from lightning.pytorch.callbacks import Callback

    class Kill(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise RuntimeError("killed")

    def run(out, callbacks=(), resume=None):
        tasks = _tasks()
        torch.manual_seed(0)
        tree = build_tree(tiny_tree_dict(), tasks, train=TRAIN)
        settings = _settings(max_epochs=4, ema_decay=0.8, output_dir=str(out), loggers=[], resume_from=resume)
        return tree, fit_tree(tree, tasks, TRAIN, VAL, settings, callbacks=callbacks)

    full_tree, full = run(tmp_path / "full")
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "killed", callbacks=[Kill()])
    resumed_tree, resumed = run(tmp_path / "killed", resume="last")
    assert resumed.steps == full.steps
    for (k, a), b in zip(full_tree.state_dict().items(), resumed_tree.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    assert resumed.metrics["val/loss"] == pytest.approx(full.metrics["val/loss"], rel=1e-5)


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    tasks = _tasks()[:1]
    tree = build_tree(tiny_tree_dict(), tasks, train=TRAIN)
    first = fit_tree(tree, tasks, TRAIN, None, _settings(max_epochs=1, output_dir=str(tmp_path), loggers=[]))
    wider = build_tree(tiny_tree_dict(width=7), tasks, train=TRAIN)
    with pytest.raises(ConfigError, match="different tree architecture"):
        fit_tree(wider, tasks, TRAIN, None, _settings(max_epochs=2, resume_from=first.last_checkpoint))


def test_bad_input_is_reported_before_training():
    task = RegressionTask("frac", inputs={"seq": "sequence"}, targets=["frac_a"])
    tree = build_tree(tiny_tree_dict(), [task])
    with pytest.raises(ConfigError) as err:  # a task pointing at a missing root and a missing leaf, together
        fit_tree(tree, [RegressionTask("y", inputs={"prot": "sequence"}, targets=["frac_a"])], TRAIN)
    assert "prot" in str(err.value) and "no leaf 'y'" in str(err.value)
    bad = dict(TRAIN, frac_a=[float("nan") if i in (3, 7) else v for i, v in enumerate(TRAIN["frac_a"])])
    with pytest.raises(DataError, match=r"rows \[3, 7\]"):
        fit_tree(tree, [task], bad)
    with pytest.raises(DataError, match="no column"):
        fit_tree(tree, [RegressionTask("frac", inputs={"seq": "seqs"}, targets=["frac_a"])], TRAIN)
    with pytest.raises(DataError, match="does not know"):
        fit_tree(tree, [task], dict(TRAIN, sequence=["ACDEZ" + s[5:] for s in TRAIN["sequence"]]))
    with pytest.raises(ConfigError, match="max_epoch"):
        fit_tree(tree, [task], TRAIN, settings={"max_epoch": 1})


def test_lr_schedule_closed_form():
    assert lr_lambda(0, 100, 10, "cosine", 0.0) == pytest.approx(0.1)
    assert lr_lambda(9, 100, 10, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_lambda(55, 100, 10, "cosine", 0.0) == pytest.approx(0.5)  # half-way through the decay
    assert lr_lambda(100, 100, 10, "cosine", 0.2) == pytest.approx(0.2)
    assert lr_lambda(55, 100, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_lambda(77, 100, 0, "constant", 0.0) == 1.0


def test_bf16_mixed_precision_trains():
    tasks = _tasks()[:1]
    torch.manual_seed(0)
    tree = build_tree(tiny_tree_dict(), tasks)
    result = fit_tree(tree, tasks, TRAIN, VAL, _settings(max_epochs=1, precision="bf16-mixed"))
    assert math.isfinite(result.metrics["val/loss"]) and next(tree.parameters()).dtype == torch.float32

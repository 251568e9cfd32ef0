"""Data sources, splits, column mapping, built-in data and the per-task / combined loaders."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from cortex.training.datamodules import (
    DataSpec,
    MultiTaskDataModule,
    ShardedSampler,
    TaskDataModule,
    load_splits,
)
from cortex.design.test_functions.datasets import ehrlich_dataset
from cortex.errors import ConfigError, DataError
from cortex.tasks import ClassificationTask, DenoisingLMTask, RegressionTask
from tests.training.conftest import synthetic_rows


def _write(tmp_path, rows: dict, fmt: str):
    import pandas as pd

    df = pd.DataFrame(rows)
    path = tmp_path / f"rows.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    else:
        df.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_local_files_with_column_mapping_and_seeded_split(tmp_path, fmt):
    rows = {"text": [f"s{i}" for i in range(13)], "label": [i % 3 for i in range(13)]}
    spec = DataSpec(source=str(_write(tmp_path, rows, fmt)), columns={"label": "group"}, val_fraction=0.3, seed=5)
    a, b = load_splits(spec, "toy"), load_splits(spec, "toy")
    assert sorted(a) == ["train", "val"]
    assert len(a["val"]) == round(0.3 * 13) and len(a["train"]) == 13 - len(a["val"])
    assert "group" in a["train"].column_names and "label" not in a["train"].column_names
    assert list(a["val"]["text"]) == list(b["val"]["text"])  # seeded
    assert sorted(list(a["train"]["text"]) + list(a["val"]["text"])) == sorted(rows["text"])  # disjoint and complete
    other = load_splits(DataSpec(source=spec.source, val_fraction=0.3, seed=6), "toy")
    assert list(other["val"]["text"]) != list(a["val"]["text"])


def test_existing_splits_are_used(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"x": list("ACDEFGH")}),
        "validation": datasets.Dataset.from_dict({"x": list("KL")}),
    })
    dd.save_to_disk(str(tmp_path / "saved"))
    splits = load_splits(DataSpec(source=str(tmp_path / "saved"), test_fraction=0.3), "saved")
    assert list(splits["val"]["x"]) == ["K", "L"] and len(splits["test"]) == 2 and len(splits["train"]) == 5


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(DataError, match="renames"):
        load_splits(DataSpec(source=str(_write(tmp_path, {"a": [1, 2, 3]}, "csv")), columns={"b": "c"}), "x")
    with pytest.raises(DataError, match="empty split"):
        load_splits(DataSpec(source=str(_write(tmp_path, {"a": [1, 2, 3]}, "csv")), val_fraction=0.1), "x")
    with pytest.raises(ConfigError, match="Did you mean 'val_fraction'"):
        from cortex.training.datamodules import parse_data_spec
        from cortex._validate import Problems

        problems = Problems()
        parse_data_spec("x", {"builtin": "ehrlich", "val_frac": 0.2}, problems)
        problems.raise_if_any()


def test_ehrlich_dataset_values_and_feasibility_match_the_function():
    from cortex.design.test_functions import Ehrlich

    ds = ehrlich_dataset(num_states=7, dim=11, num_motifs=2, motif_length=3, num_samples=13,
                         infeasible_fraction=0.3, seed=4)
    fn = Ehrlich(num_states=7, dim=11, num_motifs=2, motif_length=3)
    states = fn.from_strings(list(ds["sequence"]))
    feasible = fn.is_feasible(states)
    assert list(ds["feasible"]) == feasible.long().tolist() and sum(ds["feasible"]) == 13 - round(0.3 * 13)
    for value, ok, truth in zip(ds["value"], feasible, fn.evaluate_true(states)):
        assert (math.isnan(value) and not ok) or value == pytest.approx(float(truth))


def test_routing_data_is_read_from_the_shipped_sample():
    splits = load_splits(DataSpec(builtin="routing", options={"max_rows": 50}, val_fraction=0.2), "routing")
    assert len(splits["train"]) == 40 and {"prompt", "master"} <= set(splits["train"].column_names)
    sample = load_splits(DataSpec(builtin="routing", val_fraction=0.2), "routing")
    assert len(sample["train"]) + len(sample["val"]) == 350 and len(set(sample["train"]["master"])) == 7


def test_routing_data_is_read_from_a_path(shared_data):
    full = load_splits(DataSpec(builtin="routing", options={"path": str(shared_data / "routing" / "train.jsonl"),
                                                            "max_rows": 2000}, val_fraction=0.5), "routing")
    assert len(full["train"]) == 1000


def _tokenizers():
    from cortex.data.tokenizers import build_protein_tokenizer

    return {"seq": build_protein_tokenizer(model_max_length=13)}


def test_task_module_batches_and_balanced_sampler():
    rows = synthetic_rows(29, seed=3)
    rows["group"] = ["rare" if i < 4 else "common" for i in range(29)]
    task = ClassificationTask("g", inputs={"seq": "sequence"}, target="group", balance_by="group")
    dm = TaskDataModule(task, {"train": rows}, _tokenizers(), batch_size=5, pad_to_multiple_of=8)
    batches = list(dm.train_dataloader())
    labels = torch.cat([b["targets"]["g.label_id"] for b in batches])
    assert task.classes == ["common", "rare"]
    assert Counter(labels.tolist()) == {0: 25, 1: 25}  # the 4 rare rows cycle until the 25 common ones are used
    ids = batches[0]["inputs"]["seq"]["input_ids"]
    assert ids.shape == (5, 13)  # 11 tokens padded up to a multiple of 8 (16), capped at the root limit 13
    assert int(ids.max()) < 25 and batches[0]["inputs"]["seq"]["attention_mask"].sum() == 5 * 11


def test_multitask_loader_cycles_the_smaller_task_and_tokenizes_once():
    shared = synthetic_rows(21, seed=4)
    tasks = [RegressionTask("a", inputs={"seq": "sequence"}, targets=["frac_a"]),
             DenoisingLMTask("lm", inputs={"seq": "sequence"})]
    small = synthetic_rows(7, seed=5)
    import datasets

    ds = datasets.Dataset.from_dict(shared)
    dm = MultiTaskDataModule.build(tasks, {"a": {"train": ds, "val": ds}, "lm": {"train": small}}, _tokenizers(),
                                   batch_size=4)
    dm.setup()
    assert dm.eval_tasks == ["a"]
    assert len(dm.modules["a"]._cache) == 2  # `ds` (train and val of "a") once, `small` once
    steps = list(iter(dm.train_dataloader()))
    assert len(steps) == math.ceil(21 / 4)  # as long as the largest task
    assert all(set(s[0]) == {"a", "lm"} for s in steps)


def test_sharded_sampler_is_disjoint_across_ranks():
    parts = [list(ShardedSampler(11, shuffle=True, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(p) == 4 for p in parts)
    assert set().union(*parts) == set(range(11))
    evals = [list(ShardedSampler(11, shuffle=False, pad=False, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(evals, [])) == list(range(11))

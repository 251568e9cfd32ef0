"""HF datasets for training: load a source, rename columns, split, tokenize, and serve per-task batches.

- :class:`DataSpec` names a source: any HF dataset (``load_dataset`` on a Hub id, or on local
  csv/jsonl/json/parquet files or a folder), a dataset saved with ``save_to_disk``, or a built-in
  example (``ehrlich``: generated Ehrlich-function sequences with value and feasibility;
  ``routing``: text classification on routing prompts, by default the sample shipped with cortex). Columns are renamed
  with ``columns`` (``{source_name: new_name}``, e.g. HF ``label`` → a task's target), existing splits
  are used when present (``splits``) and seeded random ones are cut otherwise.
- :class:`TaskDataModule` is one task's ``LightningDataModule``: it encodes the task's targets,
  tokenizes its input columns once with :func:`cortex.data.tokenize_dataset` (never in ``forward``),
  checks the data before training and serves padded batches (:class:`~cortex.data.TreeCollator`).
- :class:`MultiTaskDataModule` combines task modules: training batches are
  ``{task: batch}`` from Lightning's ``CombinedLoader`` (``max_size_cycle``: shorter tasks cycle),
  validation is one loader per task.

Samplers are seeded and DDP-aware (each rank reads a disjoint slice of the same order), so a
resumed or multi-process run sees exactly the batches it should.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Sampler

from cortex._validate import (
    Problems,
    build_dataclass,
    check_bool,
    check_choice,
    check_fraction,
    check_known_keys,
    check_positive,
    check_type,
)
from cortex.data.builtin import builtin_data
from cortex.data.collators import TreeCollator, ids_column, root_max_length
from cortex.data.tokenization import tokenize_dataset
from cortex.errors import DataError
from cortex.tasks import Task

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}
SPLIT_ROLES = ("train", "val", "test")


# ------------------------------------------------------------------------------------------- specs
@dataclass
class DataSpec:
    """Where a training dataset comes from and how it is split.

    Attributes:
        source: an HF Hub dataset id, a ``datasets`` builder name (``csv``, ``json``, ``parquet``)
            used with ``data_files``, a local data file (``.csv .tsv .json .jsonl .parquet``), or a
            folder (``save_to_disk`` output or data files).
        data_files: files for a builder ``source`` (str, list, or ``{split: files}``).
        subset: HF config name (``load_dataset(source, subset)``).
        revision: Hub revision (commit, tag or branch).
        builtin: ``ehrlich`` or ``routing`` (then ``source`` stays empty); ``options`` are its arguments.
        options: keyword arguments of the built-in generator (see :func:`cortex.data.builtin.builtin_data`).
        columns: rename ``{source_name: new_name}`` right after loading.
        splits: role (``train``, ``val``, ``test``) → split name in the source; missing roles
            are cut from ``train`` at random.
        val_fraction, test_fraction: sizes of the random splits.
        seed: seed of the random splits (and of built-in generators unless they set their own).
        max_rows: keep at most this many training rows (a seeded random subset).
        truncation: cut inputs longer than their root's ``max_len`` instead of raising.
    """

    source: str | None = None
    data_files: Any = None
    subset: str | None = None
    revision: str | None = None
    builtin: str | None = None
    options: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)
    splits: dict = field(default_factory=lambda: {"train": "train", "val": "validation", "test": "test"})
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    max_rows: int | None = None
    truncation: bool = False

    def check(self, where: str, problems: Problems) -> None:
        """Record every problem of this spec (each names its field)."""
        if (self.source is None) == (self.builtin is None):
            problems.add(
                f"{where}: set exactly one of source (an HF dataset id, builder or local file) or builtin "
                f"({', '.join(builtin_data())}); got source={self.source!r}, builtin={self.builtin!r}."
            )
        if self.builtin is not None and check_choice(f"{where}.builtin", self.builtin, tuple(builtin_data()), problems):
            import inspect

            params = inspect.signature(builtin_data()[self.builtin]).parameters
            if isinstance(self.options, Mapping):
                check_known_keys(f"{where}.options", self.options, params, problems)
        mappings = {name: check_type(f"{where}.{name}", getattr(self, name), (Mapping,), problems)
                    for name in ("options", "columns", "splits")}
        if mappings["splits"]:
            check_known_keys(f"{where}.splits", self.splits, SPLIT_ROLES, problems)
        val_ok = check_fraction(f"{where}.val_fraction", self.val_fraction, problems, upper_open=True)
        test_ok = check_fraction(f"{where}.test_fraction", self.test_fraction, problems, upper_open=True)
        if val_ok and test_ok and self.val_fraction + self.test_fraction >= 1:
            problems.add(f"{where}: val_fraction + test_fraction = {self.val_fraction + self.test_fraction} leaves no training rows.")
        check_type(f"{where}.seed", self.seed, (int,), problems)
        check_bool(f"{where}.truncation", self.truncation, problems)
        if self.max_rows is not None:
            check_positive(f"{where}.max_rows", self.max_rows, problems)


def parse_data_spec(name: str, data: Any, problems: Problems) -> DataSpec | None:
    """A :class:`DataSpec` from a config dict, recording problems (unknown keys with the closest name)."""
    where = f"data.{name}"
    if isinstance(data, DataSpec):
        spec = data
    elif not isinstance(data, Mapping):
        problems.add(f"{where} must be a dict such as {{'source': 'csv', 'data_files': 'train.csv'}}; got {data!r}.")
        return None
    else:
        spec = build_dataclass(DataSpec, dict(data), where, problems)
    spec.check(where, problems)
    return spec


# ----------------------------------------------------------------------------------------- loading
def load_splits(spec: DataSpec, name: str = "data") -> dict[str, Any]:
    """Load ``spec`` into ``{"train": Dataset, "val": Dataset[, "test": Dataset]}``.

    Raises :class:`~cortex.errors.DataError` for a source that cannot be read, a rename of a column
    that does not exist, or an empty split.
    """
    problems = Problems()
    spec.check(f"data.{name}", problems)
    problems.raise_if_any(f"data.{name}")
    if spec.builtin is not None:
        raw = builtin_data()[spec.builtin](**{"seed": spec.seed, **spec.options}) if _takes_seed(spec.builtin, spec.options) \
            else builtin_data()[spec.builtin](**spec.options)
    else:
        raw = _load_source(spec, name)
    raw = _as_dict(raw)
    raw = {split: _rename(ds, spec.columns, name) for split, ds in raw.items()}
    return _split(raw, spec, name)


def _takes_seed(builtin: str, options: Mapping) -> bool:
    import inspect

    return "seed" in inspect.signature(builtin_data()[builtin]).parameters and "seed" not in options


def _load_source(spec: DataSpec, name: str):
    import datasets

    source, data_files = spec.source, spec.data_files
    path = Path(os.path.expanduser(source))
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise DataError(
                    f"data.{name}.source={source!r} is a file of unknown type {path.suffix!r}; use one of "
                    f"{', '.join(FILE_BUILDERS)} or name the builder in source with data_files."
                )
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            return datasets.load_dataset(builder, data_files=str(path), **kwargs)
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(
            str(path) if path.is_dir() else source, spec.subset, data_files=data_files, revision=spec.revision,
        )
    except DataError:
        raise
    except (FileNotFoundError, ValueError, OSError, ConnectionError) as e:
        raise DataError(
            f"data.{name}: cannot load source={source!r} (data_files={data_files!r}): {e}. Pass a local "
            "csv/jsonl/parquet file, a folder, or a Hub id that is cached or reachable."
        ) from e


def _as_dict(raw) -> dict[str, Any]:
    import datasets

    if isinstance(raw, datasets.DatasetDict):
        return dict(raw)
    if isinstance(raw, datasets.Dataset):
        return {"train": raw}
    if isinstance(raw, Mapping):
        return {k: _as_dataset(v) for k, v in raw.items()}
    return {"train": _as_dataset(raw)}


def _as_dataset(data):
    """A ``datasets.Dataset`` from a Dataset, a ``{column: list}`` dict or a pandas DataFrame."""
    import datasets

    if isinstance(data, datasets.Dataset):
        return data
    if isinstance(data, Mapping):
        return datasets.Dataset.from_dict(dict(data))
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        return datasets.Dataset.from_pandas(data, preserve_index=False)
    raise DataError(
        f"Cannot use a {type(data).__name__} as a dataset; pass a datasets.Dataset, a dict of columns or a pandas DataFrame."
    )


def _rename(ds, columns: Mapping[str, str], name: str):
    if not columns:
        return ds
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"data.{name}.columns renames {missing}, which the dataset lacks; its columns are {ds.column_names}."
        )
    return ds.rename_columns(dict(columns))


def _split(raw: dict[str, Any], spec: DataSpec, name: str) -> dict[str, Any]:
    roles = {role: raw.get(split) for role, split in spec.splits.items() if split in raw}
    if "train" not in roles:
        if len(raw) == 1:
            roles["train"] = next(iter(raw.values()))
        else:
            raise DataError(
                f"data.{name}: no split named {spec.splits.get('train', 'train')!r} for training; the source has "
                f"{sorted(raw)}. Set data.{name}.splits.train to one of them."
            )
    train = roles["train"]
    for role, frac in (("test", spec.test_fraction), ("val", spec.val_fraction)):
        if role in roles or not frac:
            continue
        n_cut = int(round(frac * len(train)))
        if n_cut < 1 or n_cut >= len(train):
            raise DataError(
                f"data.{name}: a {role}_fraction of {frac} of {len(train)} training rows gives an empty split; "
                "raise the fraction or provide more rows."
            )
        parts = train.train_test_split(test_size=n_cut, seed=spec.seed, shuffle=True)
        train, roles[role] = parts["train"], parts["test"]
    if spec.max_rows is not None and len(train) > spec.max_rows:
        train = train.shuffle(seed=spec.seed).select(range(spec.max_rows))
    roles["train"] = train
    for role, ds in roles.items():
        if len(ds) == 0:
            raise DataError(f"data.{name}: the {role} split is empty; check the source and its split names.")
    return roles




# ---------------------------------------------------------------------------------------- samplers
def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ShardedSampler(Sampler[int]):
    """Seeded, DDP-aware sampler: one order per epoch (shuffled or not), strided across ranks.

    Args:
        size: dataset rows.
        shuffle: permute with ``seed + epoch`` (training) or keep order (evaluation).
        pad: repeat rows so every rank gets the same count (training: equal step counts under DDP);
            evaluation leaves it off so no row is counted twice.
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, pad: bool = True,
                 num_replicas: int | None = None, rank: int | None = None):
        world, me = _world()
        self.size, self.shuffle, self.seed, self.pad = size, shuffle, seed, pad
        self.num_replicas = num_replicas if num_replicas is not None else world
        self.rank = rank if rank is not None else me
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            total = math.ceil(self.size / self.num_replicas) * self.num_replicas
            order = order + order[: total - len(order)]
        return iter(order[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))


# -------------------------------------------------------------------------------------- datamodules
class CappedCollator:
    """A :class:`TreeCollator` whose padding never exceeds a root's length limit.

    Rounding lengths up to ``pad_to_multiple_of`` could pass a root's ``max_len`` (13 → 16); the
    positions beyond the limit are padding only (tokenization already rejected longer rows), so
    they are cut off.
    """

    def __init__(self, collator: TreeCollator, limits: Mapping[str, int | None]):
        self.collator = collator
        self.limits = dict(limits)

    def __call__(self, rows):
        batch = self.collator(rows)
        for root, limit in self.limits.items():
            inputs = batch["inputs"][root]
            if limit is not None and inputs["input_ids"].shape[1] > limit:
                batch["inputs"][root] = {k: v[:, :limit] for k, v in inputs.items()}
        return batch


class TaskDataModule(LightningDataModule):
    """One task's data: encoded targets, tokenized inputs, checks, and seeded loaders.

    Args:
        task: the :class:`~cortex.tasks.Task`.
        splits: ``{"train": Dataset, "val": Dataset[, "test": Dataset]}`` (``val``/``test`` optional).
        tokenizers: root → tokenizer (``tree.root_tokenizers()``).
        batch_size, eval_batch_size: rows per training / evaluation batch.
        num_workers: DataLoader workers.
        seed: shuffling seed (epoch ``e`` uses ``seed + e``).
        pad_to_multiple_of: pad lengths to a multiple (fewer shapes for ``torch.compile``).
        truncation: cut inputs longer than a root's ``max_len`` instead of raising.
        strict_vocab_roots: roots whose tokenizer must know every character (built-in alphabets):
            rows with unknown tokens raise :class:`~cortex.errors.DataError`.
        tokenized_cache: shared between task modules so a dataset feeding several tasks is tokenized once.
        max_lengths: root → longest input the root accepts (default: the tokenizer's ``model_max_length``).

    Batches are ``{"inputs": {root: {"input_ids": (B, T), "attention_mask": (B, T)}},
    "targets": {column: (B, ...)}}``.
    """

    def __init__(
        self,
        task: Task,
        splits: Mapping[str, Any],
        tokenizers: Mapping[str, Any],
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        pad_to_multiple_of: int | None = 8,
        truncation: bool = False,
        strict_vocab_roots: Sequence[str] = (),
        tokenized_cache: dict | None = None,
        max_lengths: Mapping[str, int | None] | None = None,
    ):
        super().__init__()
        self.task = task
        self.raw_splits = {k: _as_dataset(v) for k, v in splits.items() if v is not None}
        self.tokenizers = dict(tokenizers)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.truncation = truncation
        self.strict_vocab_roots = list(strict_vocab_roots)
        self._cache = tokenized_cache if tokenized_cache is not None else {}
        # a root may accept fewer tokens than its tokenizer's model_max_length (an HF root with max_len)
        self.max_lengths = {r: (max_lengths or {}).get(r) or root_max_length(t, None, r) for r, t in self.tokenizers.items()}
        self.splits: dict[str, Any] = {}
        if "train" not in self.raw_splits:
            raise DataError(f"Task {task.name!r} has no training split; pass splits={{'train': ..., 'val': ...}}.")

    # -------------------------------------------------------------------------------- preparation
    def setup(self, stage: str | None = None) -> None:
        """Prepare every split once (idempotent): check, encode targets, tokenize, keep needed columns."""
        if self.splits:
            return
        task = self.task
        task.prepare(self.raw_splits["train"])  # learn class names first: the checks below need them
        task.check_dataset(self.raw_splits["train"], "train")  # raw columns: clear errors, nothing heavy yet
        for role, ds in self.raw_splits.items():
            if role != "train":
                task.check_dataset(ds, role)
            ds = self._tokenized(task.encode(ds))
            task.check_targets(ds, role)  # again with token ids: per-position targets need them
            self._check_vocab(ds, role)
            keep = [ids_column(r) for r in task.roots] + task.target_columns()
            if role == "train" and task.balance_by is not None:
                keep.append(task.balance_by)
            self.splits[role] = ds.select_columns(list(dict.fromkeys(keep)))

    def _tokenized(self, ds):
        columns = {root: self.task.inputs[root] for root in self.task.roots}
        limits = {r: self.max_lengths.get(r) for r in columns}
        key = (ds._fingerprint, tuple(sorted(columns.items())), tuple(sorted(limits.items())), self.truncation)
        if key not in self._cache:
            missing = [r for r in columns if r not in self.tokenizers]
            if missing:
                raise DataError(
                    f"Task {self.task.name!r} reads root(s) {missing} that have no tokenizer; tokenizers cover "
                    f"{sorted(self.tokenizers)}."
                )
            self._cache[key] = tokenize_dataset(
                ds, {r: self.tokenizers[r] for r in columns}, columns, max_length=limits, truncation=self.truncation,
            )
        return self._cache[key]

    def _check_vocab(self, ds, role: str) -> None:
        for root in self.task.roots:
            if root not in self.strict_vocab_roots:
                continue
            unk = self.tokenizers[root].unk_token_id
            if unk is None:
                continue
            bad = [i for i, ids in enumerate(ds[ids_column(root)]) if unk in ids]
            if bad:
                col = self.task.inputs[root]
                raise DataError(
                    f"Task {self.task.name!r}: column {col!r} ({role} split) has characters that root {root!r}'s "
                    f"alphabet does not know, at rows {bad[:10]} (e.g. {ds[bad[0]][col]!r}); set the root's "
                    "chars/tokenizer to cover them or clean the data."
                )

    # ---------------------------------------------------------------------------------- loaders
    def collator(self) -> "CappedCollator":
        limits = {r: self.max_lengths.get(r) for r in self.task.roots}
        return CappedCollator(
            TreeCollator(
                {r: self.tokenizers[r].pad_token_id for r in self.task.roots},
                target_columns=self.task.target_columns(),
                pad_to_multiple_of=self.pad_to_multiple_of,
            ),
            limits,
        )

    def train_sampler(self) -> Sampler[int]:
        """Round-robin minority upsampling when the task balances by a column, else a seeded shuffle."""
        ds = self.splits["train"]
        if self.task.balance_by is not None:
            from cortex.training.sampler import RoundRobinUpsampler

            return RoundRobinUpsampler(list(ds[self.task.balance_by]), seed=self.seed)
        return ShardedSampler(len(ds), shuffle=True, seed=self.seed, pad=True)

    def _loader(self, ds, sampler: Sampler[int], batch_size: int) -> DataLoader:
        return DataLoader(
            ds, batch_size=batch_size, sampler=sampler, collate_fn=self.collator(), num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.splits["train"], self.train_sampler(), self.batch_size)

    def eval_dataloader(self, role: str) -> DataLoader | None:
        """Loader over the ``val`` or ``test`` split (``None`` when absent); ranks read disjoint rows."""
        self.setup()
        if role not in self.splits:
            return None
        ds = self.splits[role]
        return self._loader(ds, ShardedSampler(len(ds), shuffle=False, pad=False), self.eval_batch_size)

    def val_dataloader(self) -> DataLoader | None:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader | None:
        return self.eval_dataloader("test")


class MultiTaskDataModule(LightningDataModule):
    """Several :class:`TaskDataModule` under one roof.

    Training yields ``{task_name: batch}`` per step (``CombinedLoader`` in ``max_size_cycle`` mode:
    an epoch runs as long as the largest task, smaller ones cycle); validation and test give one
    loader per task with a validation split, in :attr:`eval_tasks` order.
    """

    def __init__(self, modules: Mapping[str, TaskDataModule]):
        super().__init__()
        if not modules:
            raise DataError("MultiTaskDataModule needs at least one task data module.")
        self.modules = dict(modules)

    @classmethod
    def build(
        cls,
        tasks: Sequence[Task],
        splits: Mapping[str, Mapping[str, Any]],
        tokenizers: Mapping[str, Any],
        **kwargs,
    ) -> "MultiTaskDataModule":
        """One module per task from ``splits[task.name]``; datasets shared by tasks are tokenized once."""
        cache: dict = {}
        modules = {}
        for task in tasks:
            if task.name not in splits:
                raise DataError(f"No data for task {task.name!r}; data is given for {sorted(splits)}.")
            modules[task.name] = TaskDataModule(task, splits[task.name], tokenizers, tokenized_cache=cache, **kwargs)
        return cls(modules)

    def setup(self, stage: str | None = None) -> None:
        for module in self.modules.values():
            module.setup(stage)

    @property
    def eval_tasks(self) -> list[str]:
        """Tasks that have a validation split, in loader order."""
        self.setup()
        return [name for name, m in self.modules.items() if "val" in m.splits]

    def train_dataloader(self):
        from lightning.pytorch.utilities import CombinedLoader

        return CombinedLoader({name: m.train_dataloader() for name, m in self.modules.items()}, mode="max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        return [self.modules[name].val_dataloader() for name in self.eval_tasks]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.modules[name].test_dataloader() for name in self.modules if "test" in self.modules[name].splits]


__all__ = [
    "DataSpec", "MultiTaskDataModule", "ShardedSampler", "TaskDataModule",
    "load_splits", "parse_data_spec",
]

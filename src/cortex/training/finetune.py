"""Causal-LM fine-tuning of a registry model (full or LoRA), resumable, registered with its lineage.

Text is tokenized once, concatenated and cut into blocks of ``block_size`` tokens (the usual causal-LM
packing). Checkpoints (model, optimizer, step, RNG) go to ``$CORTEX_HOME/runs/finetune/<run-key>/``
every ``save_every`` steps; the run key hashes the base model, the data file and the settings, so
running the same command again after a kill resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cortex._fit import optimizer_step
from cortex.errors import ConfigError, DataError, RegistryError
from cortex.hub.entry import RegistryEntry
from cortex.hub.paths import validate_name
from cortex.hub.registry import Registry, atomic_write_text
from cortex.models.selection import ModelSelection
from cortex.training.settings import FinetuneSettings


def read_texts(data: str | os.PathLike, text_field: str = "text") -> list[str]:
    """Texts from a ``.txt`` file (whole file), a ``.jsonl`` file (``text_field`` of each line) or a
    local HF dataset folder (``save_to_disk`` output or data files; column ``text_field``)."""
    path = Path(data)
    if not path.exists():
        raise DataError(f"Data {str(data)!r} does not exist. Pass a .txt, .jsonl or a local dataset folder.")
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            ds = datasets.load_dataset(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        if text_field not in ds.column_names:
            raise DataError(
                f"Dataset {str(data)!r} has no column {text_field!r} (columns: {', '.join(ds.column_names)}). "
                "Pick one with --text-field."
            )
        texts = [t for t in ds[text_field] if isinstance(t, str)]
    elif path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i} is not valid JSON ({e.msg}). Fix or remove that line.") from e
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise DataError(f"{path}:{i} has no string field {text_field!r}. Pick one with --text-field.")
            texts.append(row[text_field])
    elif path.suffix in (".txt", ".md", ".py", ".text"):
        texts = [path.read_text(encoding="utf-8", errors="replace")]
    else:
        raise DataError(f"Unsupported data file {path.name!r}: use .txt, .jsonl or a local dataset folder.")
    if not any(t.strip() for t in texts):
        raise DataError(f"Data {str(data)!r} holds no text.")
    return texts


def pack_blocks(texts: list[str], tokenizer: Any, block_size: int) -> torch.Tensor:
    """Token ids of all texts, joined by EOS, cut into ``(N, block_size + 1)`` blocks (inputs + shifted targets)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    n = (len(ids) - 1) // block_size
    if n < 1:
        # short data: one block of whatever there is, so tiny files still train
        if len(ids) < 2:
            raise DataError("The data tokenizes to fewer than 2 tokens; give it more text.")
        return torch.tensor(ids, dtype=torch.long).unsqueeze(0)
    return torch.tensor(ids[: n * block_size + 1], dtype=torch.long).unfold(0, block_size + 1, block_size)


def run_key(base: str, data: str | os.PathLike, settings: FinetuneSettings, name: str | None) -> str:
    h = hashlib.sha256()
    p = Path(data)
    h.update(base.encode())
    h.update(str(p.resolve()).encode())
    if p.is_file():
        h.update(str(p.stat().st_size).encode())
        h.update(str(p.stat().st_mtime_ns).encode())
    h.update(json.dumps(asdict(settings), sort_keys=True).encode())
    h.update(str(name).encode())
    return h.hexdigest()[:16]


def _lr_at(step: int, s: FinetuneSettings) -> float:
    if s.warmup_steps and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.max_steps - s.warmup_steps)
    return s.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _apply_lora(model: nn.Module, s: FinetuneSettings) -> nn.Module:
    import warnings

    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, target_modules="all-linear", lora_dropout=0.0)
    with warnings.catch_warnings():
        # peft still reads transformers' deprecated `is_gradient_checkpointing`; nothing for users to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, cfg)


def _save_checkpoint(folder: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, losses: list[float]) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    # optimizer state is plain tensors and numbers; weights_only=True loads it back without pickle code
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    save_file({"torch_rng": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    py_version, py_state, py_gauss = random.getstate()
    atomic_write_text(tmp / "state.json", json.dumps({
        "step": step, "losses": losses, "python_rng": [py_version, list(py_state), py_gauss],
    }))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list[float]]:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch_rng"])
    state = json.loads((folder / "state.json").read_text())
    py_version, py_state, py_gauss = state["python_rng"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    return state["step"], state["losses"]


@dataclass
class FinetuneRun:
    """A fine-tuning run config (YAML or JSON): the model selection, the data, the result's name and
    the :class:`FinetuneSettings`, all as top-level keys::

        model_name: qwen2.5-0.5b        # a registry name; null = cortex's built-in char_lm
        char_lm: {hidden_size: 64, num_hidden_layers: 2}   # architecture when model_name is null
        data: notes.txt
        max_steps: 200
    """

    selection: ModelSelection
    settings: FinetuneSettings
    data: str | None = None
    name: str | None = None

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "FinetuneRun":
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"A fine-tuning run config is a mapping of keys, got {type(cfg).__name__}.")
        sel_keys = {f.name for f in fields(ModelSelection)}
        set_keys = {f.name for f in fields(FinetuneSettings)}
        known = sel_keys | set_keys | {"data", "name"}
        unknown = [k for k in cfg if k not in known]
        if unknown:
            raise ConfigError.unknown_key(unknown[0], known, "the fine-tuning run config")
        if "model_name" not in cfg:
            raise ConfigError(
                "The fine-tuning run config has no 'model_name'. Set it to a registry name, or to null for "
                "cortex's built-in char_lm (architecture under 'char_lm')."
            )
        return cls(
            selection=ModelSelection.from_mapping({k: v for k, v in cfg.items() if k in sel_keys}),
            settings=FinetuneSettings(**{k: v for k, v in cfg.items() if k in set_keys}),
            data=cfg.get("data"), name=cfg.get("name"),
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "FinetuneRun":
        """Read a ``.yaml``/``.yml``/``.json`` run config; a relative ``data`` path is taken from the file's folder."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Run config {str(path)!r} does not exist. Pass a .yaml or .json file.")
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8"))  # JSON is YAML too
        except yaml.YAMLError as e:
            raise ConfigError(f"Run config {str(path)!r} is not valid YAML/JSON ({e}). Fix the file.") from e
        run = cls.from_mapping(cfg if cfg is not None else {})
        if run.data is not None and not Path(run.data).is_absolute():
            run.data = str(p.parent / run.data)
        return run


def finetune(
    base: str | ModelSelection | Mapping[str, Any],
    data: str | os.PathLike,
    *,
    name: str | None = None,
    settings: FinetuneSettings | None = None,
    registry: Registry | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> RegistryEntry:
    """Fine-tune a causal LM on ``data`` and register the result.

    ``base`` is a registry name, or a model selection (:class:`~cortex.models.selection.ModelSelection`
    or its mapping, as in a run config): ``model_name`` resolves through the registry, and
    ``model_name=None`` trains cortex's built-in char_lm from scratch with the selection's ``char_lm``
    architecture. Returns the new entry, named ``name`` or ``{base}-finetuned-{YYYYmmdd-HHMMSS}``
    (``char_lm-trained-...`` from scratch), with ``fine_tuned_from=base`` and the settings and final
    loss in ``extra``; ``on_step(step, loss)`` is called after every optimizer step (the CLI's bar).
    """
    s = settings or FinetuneSettings()
    reg = registry or Registry()
    if name is not None:
        validate_name(name)
    run = _setup(base, data, s, reg)
    if s.lora:
        run.model = _apply_lora(run.model, s)
    run.model.train()
    params = [p for p in run.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    run_dir = reg.home / "runs" / "finetune" / run_key(run.base_key, data, s, name)
    step, losses = _resume(run_dir, run.model, opt)
    resumed_from = step
    run_dir.mkdir(parents=True, exist_ok=True)
    step = _fit(run, opt, s, step, losses, run_dir / "checkpoint", on_step)
    if s.lora:
        run.model = run.model.merge_and_unload()
    run.model.eval()
    entry = _register(run, reg, name, data, s, step, losses, resumed_from)
    shutil.rmtree(run_dir, ignore_errors=True)
    return entry


@dataclass
class _Run:
    """What a fine-tune trains: the model, its tokenizer and family, where it came from, the data blocks."""

    model: nn.Module
    tokenizer: Any
    family: Any
    selection: ModelSelection
    base_entry: RegistryEntry | None
    base_key: str  # identifies the starting point in the resume key
    blocks: torch.Tensor  # (N, block + 1) token ids


def _setup(base: str | ModelSelection | Mapping[str, Any], data: str | os.PathLike, s: FinetuneSettings,
           reg: Registry) -> _Run:
    """Stage 1: resolve the base model (registry entry, or a fresh char_lm), check it is a causal LM,
    and pack the texts into blocks."""
    from cortex.hub.loading import load_model
    from cortex.models.selection import build_model

    if isinstance(base, str):
        sel = ModelSelection(model_name=base)
    elif isinstance(base, ModelSelection):
        sel = base
    else:
        sel = ModelSelection.from_mapping(base)
    base_entry = reg.get(sel.model_name) if sel.model_name is not None else None
    texts = read_texts(data, s.text_field)
    if base_entry is not None:
        loaded = load_model(base_entry.name, registry=reg)
        model, tok, family = loaded.model, loaded.tokenizer, loaded.family
        base_key = base_entry.name
    else:
        torch.manual_seed(s.seed)  # the fresh weights are part of the run, so a resumed run rebuilds them alike
        model, tok, family = build_model(sel, registry=reg)
        base_key = "char_lm:" + json.dumps(asdict(sel), sort_keys=True)
    if family.task != "causal_lm":
        raise ConfigError(
            f"{sel.model_name!r} is in family {family.name!r} ({family.task}); fine-tuning here trains causal "
            "LMs. Pick a causal LM entry (family qwen or char_lm in: cortex models list)."
        )
    max_len = getattr(model.config, "max_position_embeddings", None) or 10**9
    blocks = pack_blocks(texts, tok, min(s.block_size, max_len - 1))
    torch.manual_seed(s.seed)
    random.seed(s.seed)
    return _Run(model, tok, family, sel, base_entry, base_key, blocks)


def _resume(run_dir: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list[float]]:
    """Stage 2: the step and losses of an interrupted run with this key (model and optimizer restored), or a fresh start."""
    ckpt = run_dir / "checkpoint"
    if not ckpt.exists():
        return 0, []
    try:
        return _load_checkpoint(ckpt, model, opt)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise RegistryError(
            f"The resume checkpoint {ckpt} is unreadable ({type(e).__name__}: {e}). Delete it to start this "
            f"fine-tune over: rm -r {run_dir}"
        ) from e


def _fit(run: _Run, opt: torch.optim.Optimizer, s: FinetuneSettings, step: int,
         losses: list[float], ckpt: Path, on_step: Callable[[int, float], None] | None) -> int:
    """Stage 3: next-token AdamW steps from ``step`` to ``s.max_steps``, checkpointing every ``save_every``."""
    gen = torch.Generator().manual_seed(s.seed)
    order = torch.randperm(len(run.blocks), generator=gen)
    while step < s.max_steps:
        # the batch depends only on the step, so a resumed run sees the same data
        idx = torch.arange(step * s.batch_size, (step + 1) * s.batch_size) % len(run.blocks)
        batch = run.blocks[order[idx]]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, s)
        logits = run.model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))
        optimizer_step(loss, opt, max_grad_norm=1.0)
        step += 1
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
        if step % s.save_every == 0 and step < s.max_steps:
            _save_checkpoint(ckpt, run.model, opt, step, losses)
    return step


def _register(run: _Run, reg: Registry, name: str | None, data: str | os.PathLike, s: FinetuneSettings,
              step: int, losses: list[float], resumed_from: int) -> RegistryEntry:
    """Stage 4: save the trained model into a new registry entry whose parent is the base model."""
    final_loss = float(sum(losses[-10:]) / len(losses[-10:]))
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    base = run.base_entry
    if base is not None:
        new_name = name or f"{base.name}-finetuned-{stamp}"
        lineage = dict(model_id=base.model_id, family=base.family, fine_tuned_from=base.name,
                       license=base.license, license_accepted=base.license_accepted)
    else:
        new_name = name or f"char_lm-trained-{stamp}"
        lineage = dict(model_id="cortex/char_lm", family=run.family.name, license="apache-2.0")
    with reg.stage() as tmp:
        run.family.save(run.model, run.tokenizer, tmp)
        return reg.register(
            tmp, name=new_name, kind="model", source="custom", on_conflict="version", **lineage,
            extra={"finetune": {**asdict(s), "data": str(Path(data).resolve()), "steps": step,
                                "final_loss": final_loss, "first_loss": losses[0] if losses else None,
                                "resumed_from_step": resumed_from, "model_selection": asdict(run.selection)},
                   "params": sum(p.numel() for p in run.model.parameters())},
        )

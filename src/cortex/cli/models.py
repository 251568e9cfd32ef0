"""Registry commands: ``import-model``, ``models ...``, ``finetune``, ``generate``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cortex.cli._common import console, human_bytes, print_columns, registry
from cortex.training.settings import FinetuneSettings

_FT = FinetuneSettings()  # the CLI's defaults are the settings' own (light import: no torch)

models_app = typer.Typer(help="List, inspect, copy, remove and verify registry entries.", no_args_is_help=True)


def import_model_cmd(
    source: str = typer.Argument(..., help="Hub id (org/name), hf://org/name@rev, a huggingface.co URL, or a local folder."),
    name: str = typer.Option(None, "--name", help="Registry name (default: derived from the source, e.g. qwen2.5-0.5b)."),
    revision: str = typer.Option(None, "--revision", help="Branch, tag or commit on the Hub (pinned to its commit)."),
    accept_license: bool = typer.Option(False, "--accept-license", help="Acknowledge a license that restricts use."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow .bin/.pt weights (converted to safetensors)."),
    force: bool = typer.Option(False, "--force", help="Import even if the model will not fit in RAM."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the repository's own model code."),
) -> None:
    """Import a model from the Hub or a local folder into the registry."""
    from cortex.hub.importer import import_model

    with console.status("importing") as status:
        report = import_model(
            source, name=name, revision=revision, accept_license=accept_license, allow_pickle=allow_pickle,
            force=force, trust_remote_code=trust_remote_code, registry=registry(),
            status=lambda msg: status.update(msg),
        )
    e = report.entry
    console.print(
        f"[green]imported[/] {e.name}  family={e.family}  params={report.params:,}  "
        f"size={human_bytes(e.size_bytes)}  license={e.license}  source={e.source}"
    )


@models_app.command("list")
def list_cmd(
    kind: str = typer.Option(None, "--kind", help="Only entries of this kind (model, tree, lens_pack, concept_pack, router)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List registry entries."""
    from cortex.errors import ConfigError
    from cortex.hub.entry import KINDS

    if kind is not None and kind not in KINDS:
        raise ConfigError.bad_choice("--kind", kind, KINDS)
    entries = registry().list(kind)
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries]))
        return
    rows = [
        (e.name, e.kind, e.family or "-", human_bytes(e.size_bytes), ", ".join(e.all_parents()) or "-",
         e.created_at[:16].replace("T", " "))
        for e in entries
    ]
    print_columns(("NAME", "KIND", "FAMILY", "SIZE", "PARENT", "CREATED (UTC)"), rows)


@models_app.command("show")
def show_cmd(name: str = typer.Argument(..., help="Registry name.")) -> None:
    """Show one entry's metadata as JSON."""
    e = registry().get(name)
    typer.echo(json.dumps(e.to_dict(), indent=2))


@models_app.command("rm")
def rm_cmd(
    name: str = typer.Argument(..., help="Registry name."),
    force: bool = typer.Option(False, "--force", help="Remove even if other entries descend from it."),
) -> None:
    """Remove an entry and its files."""
    e = registry().remove(name, force=force)
    console.print(f"removed {e.name}")


@models_app.command("cp")
def cp_cmd(src: str = typer.Argument(..., help="Existing entry."), dst: str = typer.Argument(..., help="New name.")) -> None:
    """Copy an entry under a new name."""
    e = registry().copy(src, dst)
    console.print(f"copied {src} -> {e.name}")


@models_app.command("lineage")
def lineage_cmd(
    name: str = typer.Argument(..., help="Registry name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a tree."),
) -> None:
    """Show what an entry was built from and what was built from it."""
    from rich.tree import Tree

    lin = registry().lineage(name)
    if as_json:
        typer.echo(json.dumps(lin))
        return

    def add_up(node: Tree, d: dict) -> None:
        for p in d["parents"]:
            add_up(node.add(f"{p['name']} [dim]({p['kind']})[/]"), p)

    def add_down(node: Tree, d: dict) -> None:
        for c in d["children"]:
            add_down(node.add(f"{c['name']} [dim]({c['kind']})[/]"), c)

    up = Tree(f"[bold]{lin['ancestors']['name']}[/] built from")
    add_up(up, lin["ancestors"])
    down = Tree(f"[bold]{lin['descendants']['name']}[/] used by")
    add_down(down, lin["descendants"])
    console.print(up)
    console.print(down)


@models_app.command("verify")
def verify_cmd(name: str = typer.Argument(None, help="Registry name (default: every entry).")) -> None:
    """Recompute every file's sha256 and compare with the registry."""
    from cortex.errors import ChecksumError

    reg = registry()
    names = [name] if name else reg.names()
    bad = []
    for n in names:
        report = reg.verify(n)
        problems = report["changed"] + report["missing"]
        status = "[green]ok[/]" if not problems else f"[red]{len(problems)} bad[/]: {', '.join(problems)}"
        extra = f"  [yellow]untracked: {', '.join(report['extra'])}[/]" if report["extra"] else ""
        console.print(f"{n}: {status}{extra}")
        if problems:
            bad.append(n)
    if bad:
        raise ChecksumError(
            f"Checksum mismatch in {', '.join(bad)}. Re-import or restore the changed files."
        )


@models_app.command("rebuild-index")
def rebuild_index_cmd() -> None:
    """Rewrite the registry index from each entry folder's metadata.json (after a damaged or lost index)."""
    names = registry().rebuild_index()
    console.print(f"rebuilt the index: {len(names)} entries")


@models_app.command("families")
def families_cmd() -> None:
    """List the architecture families cortex can import."""
    from cortex.hub.families import families

    for f in families().values():
        console.print(f"[bold]{f.name}[/] ({f.task}): {f.description}  model_types: {', '.join(f.model_types)}")


@models_app.command("new")
def new_cmd(
    name: str = typer.Argument(..., help="Registry name for the new model."),
    hidden_size: int = typer.Option(128, help="Residual width."),
    layers: int = typer.Option(4, help="Number of transformer blocks."),
    heads: int = typer.Option(4, help="Attention heads per block."),
    max_positions: int = typer.Option(512, help="Longest sequence in characters."),
    chars_from: Path = typer.Option(None, help="Build the character set from this text file (default: printable ASCII)."),
    seed: int = typer.Option(0, help="Initialization seed."),
) -> None:
    """Create a fresh (untrained) built-in char_lm entry, to train with `cortex finetune`."""
    import torch

    from cortex.models.selection import ModelSelection, build_model

    torch.manual_seed(seed)
    chars = None
    if chars_from is not None:
        from cortex.data.tokenizers import DEFAULT_CHARS

        chars = "".join(sorted(set(chars_from.read_text(encoding="utf-8", errors="replace")) | set(DEFAULT_CHARS)))
    model, tok, family = build_model(ModelSelection(
        model_name=None, chars=chars,
        char_lm={"hidden_size": hidden_size, "num_hidden_layers": layers, "num_attention_heads": heads,
                 "max_position_embeddings": max_positions},
    ))
    reg = registry()
    with reg.stage() as tmp:
        family.save(model, tok, tmp)
        e = reg.register(tmp, name=name, kind="model", source="custom", family="char_lm",
                         model_id="cortex/char_lm", license="apache-2.0", on_conflict="error",
                         extra={"params": sum(p.numel() for p in model.parameters())})
    console.print(f"created {e.name} (char_lm, {e.extra['params']:,} parameters, untrained)")


def finetune_cmd(
    name: str = typer.Argument(None, help="Registry model to fine-tune (a causal LM); or give --config."),
    data: Path = typer.Option(None, "--data", help=".txt, .jsonl (field 'text') or a local HF dataset folder."),
    config: Path = typer.Option(
        None, "--config",
        help="Run config (.yaml/.json): model_name (registry name, or null for a fresh char_lm built from its "
             "'char_lm' keys), data, name and any training setting. Replaces the setting options below.",
    ),
    new_name: str = typer.Option(None, "--name", help="Name of the result (default: {base}-finetuned-{timestamp})."),
    max_steps: int = typer.Option(_FT.max_steps, "--max-steps", help="Optimizer steps."),
    lr: float = typer.Option(_FT.lr, "--lr", help="Peak learning rate (cosine decay)."),
    batch_size: int = typer.Option(_FT.batch_size, "--batch-size", help="Blocks per step."),
    block_size: int = typer.Option(_FT.block_size, "--block-size", help="Tokens per block."),
    lora: bool = typer.Option(_FT.lora, "--lora", help="Train LoRA adapters (peft) and merge them, instead of all weights."),
    text_field: str = typer.Option(_FT.text_field, "--text-field", help="Text column of .jsonl / dataset data."),
    save_every: int = typer.Option(_FT.save_every, "--save-every", help="Checkpoint every N steps (for resuming)."),
    seed: int = typer.Option(_FT.seed, "--seed", help="Random seed."),
) -> None:
    """Fine-tune a registry causal LM on text; resumes from its last checkpoint if killed."""
    from dataclasses import replace

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from cortex.errors import ConfigError
    from cortex.models.selection import ModelSelection
    from cortex.training.finetune import FinetuneRun, finetune

    if config is not None:
        if name is not None:
            raise ConfigError(f"Give the model either as NAME ({name!r}) or as model_name in --config, not both.")
        run = FinetuneRun.from_file(config)
        base, s = run.selection, run.settings
        data = data or (Path(run.data) if run.data else None)
        new_name = new_name or run.name
    else:
        if name is None:
            raise ConfigError("Name the registry model to fine-tune (cortex finetune NAME --data FILE) or pass --config.")
        base = ModelSelection(model_name=name)
        s = replace(_FT, max_steps=max_steps, lr=lr, batch_size=batch_size, block_size=block_size, lora=lora,
                   text_field=text_field, save_every=save_every, seed=seed)
    if data is None:
        raise ConfigError("No training data: pass --data FILE (or set 'data' in the --config file).")
    progress = Progress(TextColumn("[bold]finetune"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console)
    task = progress.add_task("steps", total=s.max_steps, loss="-")

    def on_step(step: int, loss: float) -> None:
        # the bar appears with the first step, so bad input fails with only its error line
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=step, loss=f"{loss:.4f}")

    try:
        entry = finetune(base, data, name=new_name, settings=s, registry=registry(), on_step=on_step)
    finally:
        progress.stop()
    ft = entry.extra["finetune"]
    resumed = f", resumed from step {ft['resumed_from_step']}" if ft["resumed_from_step"] else ""
    console.print(
        f"[green]registered[/] {entry.name} (fine_tuned_from={entry.fine_tuned_from}, {ft['steps']} steps, "
        f"loss {ft['first_loss']:.4f} -> {ft['final_loss']:.4f}{resumed})"
    )


def generate_cmd(
    name: str = typer.Argument(..., help="Registry causal LM."),
    prompt: str = typer.Argument(..., help="Text to continue."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens to generate."),
    temperature: float = typer.Option(0.8, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    seed: int = typer.Option(None, "--seed", help="Random seed for reproducible samples."),
    quantize: str = typer.Option(None, "--quantize", help="'int8': PyTorch dynamic quantization of Linear layers (CPU)."),
) -> None:
    """Generate text from a registry model, streaming tokens as they come."""
    import sys

    from cortex.errors import InputError
    from cortex.hub.families import GenerationSettings
    from cortex.hub.loading import load_model

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    if quantize not in (None, "int8"):
        raise InputError(f"--quantize {quantize!r} is not supported; the only option is 'int8'.")
    loaded = load_model(name, registry=registry())
    if loaded.family.task != "causal_lm":
        raise InputError(
            f"{name!r} is in family {loaded.family.name!r} ({loaded.family.task}), which cannot generate text. Pick a "
            "causal LM entry (family qwen or char_lm in: cortex models list)."
        )
    model = loaded.model
    if quantize == "int8":
        from cortex.generation import quantize_int8

        model = quantize_int8(model)
    sys.stdout.write(prompt)
    sys.stdout.flush()

    def emit(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    loaded.family.generate(model, loaded.tokenizer, prompt, settings, on_text=emit)
    sys.stdout.write("\n")


def register(app: typer.Typer) -> None:
    app.command("import-model")(import_model_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("generate")(generate_cmd)
    app.add_typer(models_app, name="models")

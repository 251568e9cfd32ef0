"""Lens commands: ``cortex lens train | detect | eval``."""

from __future__ import annotations

import json

import typer

from cortex.cli._common import console, registry

lens_app = typer.Typer(help="Train concept lenses on a registry model, read texts with them, evaluate them.",
                       no_args_is_help=True)


def _int_list(text: str | None, what: str) -> list[int] | None:
    from cortex.errors import ConfigError

    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r} must be comma-separated integers, e.g. 1,3,5.") from None


@lens_app.command("train")
def train_cmd(
    model: str = typer.Option(..., "--model", help="Registry model to read hidden states from; 'minilm' is the "
                              "packaged MiniLM encoder (registered on first use)."),
    concepts: str = typer.Option(..., "--concepts", help="Registry concept pack (or a concept pack folder)."),
    layers: str = typer.Option(None, "--layers", help="Model layers to consider, e.g. 1,3,5 (default: all)."),
    concept_filter: str = typer.Option("examples", "--concept-filter",
                                       help="examples | all | re:<regex> | layer:<a>-<b> | Term1,Term2,..."),
    probe: str = typer.Option(None, "--probe", help="Probe kind: linear or mlp (default from LensTrainingConfig)."),
    layer_norm: bool = typer.Option(None, "--layer-norm/--no-layer-norm", help="LayerNorm at the probe input."),
    target_f1: float = typer.Option(None, "--target-f1", help="Validation F1 at which a probe graduates."),
    max_rounds: int = typer.Option(None, "--max-rounds",
                                   help="Graduation rounds at most (escalating negatives; default from the config)."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps per round (default from the config)."),
    bf16: bool = typer.Option(None, "--bf16/--fp32", help="Train the probe matmuls in bfloat16 autocast."),
    wordnet: bool = typer.Option(None, "--wordnet/--no-wordnet", help="Add WordNet glosses/usages (needs wordnet-base)."),
    seed: int = typer.Option(None, "--seed", help="Seed for splits, sampling and initialization."),
    name: str = typer.Option(None, "--name", help="Registry name (default: lens-<model>-<conceptpack>)."),
    threads: int = typer.Option(None, "--threads", help="Torch CPU threads (default: torch's choice)."),
) -> None:
    """Train a lens pack (one probe per concept and best layer per band) and register it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cortex.lenses.pipeline import train_lens_pack
    from cortex.lenses.training import LensTrainingConfig

    # options left unset keep LensTrainingConfig's defaults (defined once, there)
    given = {"layers": _int_list(layers, "--layers"), "probe": probe, "layer_norm": layer_norm, "target_f1": target_f1,
             "dtype": None if bf16 is None else ("bfloat16" if bf16 else "float32"), "steps": steps,
             "max_rounds": max_rounds, "seed": seed}
    data = {"wordnet": wordnet, "seed": seed}
    cfg = LensTrainingConfig(**{k: v for k, v in given.items() if v is not None},
                             data={k: v for k, v in data.items() if v is not None})
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("starting", total=1.0)
        report = train_lens_pack(model, concepts, cfg, concept_filter=concept_filter, name=name,
                                 registry=registry(), threads=threads,
                                 progress=lambda msg, frac: bar.update(task, description=msg, completed=frac))
    s = report.pack.info["summary"]
    t = report.seconds
    console.print(
        f"[green]trained[/] {report.entry.name}: {s['n_concepts']} concepts on layers {report.pack.info['layers']}, "
        f"median held-out F1 {s['median_test_f1']}, {s['graduated']} graduated; {report.n_texts} sentences; "
        f"{t['total']:.0f}s (encode {t['encode']:.0f}s, train {t['train']:.0f}s)"
    )


@lens_app.command("detect")
def detect_cmd(
    text: str = typer.Argument(..., help="Text to read."),
    lens: str = typer.Option(..., "--lens", help="Registry lens pack (or folder)."),
    model: str = typer.Option(None, "--model", help="Model to run (default: the pack's model)."),
    top_k: int = typer.Option(3, "--top-k", help="Concepts shown per token."),
    mode: str = typer.Option("prefix", "--mode", help="prefix (running mean, as trained) or token."),
    calibrated: bool = typer.Option(False, "--calibrated", help="Rank by background z-score instead of raw logit."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show each token's top concepts (and the whole text's) with their scores."""
    from cortex.hub.loading import load_model
    from cortex.lenses.detection import LensRunner
    from cortex.lenses.lens_pack import load_lens_pack

    reg = registry()
    pack = load_lens_pack(lens, registry=reg)
    loaded = load_model(model or pack.model, registry=reg)
    result = LensRunner(pack, loaded).detect(text, top_k=top_k, mode=mode, calibrated=calibrated)
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps(asdict(result)))
        return
    from rich.table import Table

    table = Table("#", "TOKEN", "TOP CONCEPTS", box=None)
    for t in result.tokens:
        table.add_row(str(t.position), t.token, "  ".join(_fmt(c) for c in t.top))
    console.print(table)
    console.print("[bold]whole text:[/] " + "  ".join(_fmt(c) for c in result.sentence))


def _fmt(c) -> str:
    """``Concept p=0.97 z=+4.1``: probability, and background z-score when calibrated."""
    z = f" z={c.calibrated:+.1f}" if c.calibrated is not None else ""
    return f"{c.concept} p={c.prob:.2f}{z}"


@lens_app.command("eval")
def eval_cmd(
    lens: str = typer.Option(..., "--lens", help="Registry lens pack (or folder)."),
    concepts: str = typer.Option(None, "--concepts", help="Concept pack to rebuild the test split from "
                                                           "(default: the pack's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Re-measure held-out F1 of the pack's probes through the batched bank."""
    from cortex.hub.loading import load_model
    from cortex.lenses.concepts.store import load_concept_pack
    from cortex.lenses.detection import evaluate_lens_pack
    from cortex.lenses.lens_pack import load_lens_pack

    reg = registry()
    pack = load_lens_pack(lens, registry=reg)
    loaded = load_model(pack.model, registry=reg)
    cpack = load_concept_pack(concepts or pack.info["concept_pack"]["name"], registry=reg)
    with console.status("encoding held-out sentences"):
        report = evaluate_lens_pack(pack, loaded, cpack)
    stored = pack.info.get("summary", {}).get("median_test_f1")
    if as_json:
        typer.echo(json.dumps({"median_f1": report.median_f1, "mean_f1": report.mean_f1,
                               "f1_at_0.85_fraction": report.f1_at_target_fraction, "by_band": report.by_band,
                               "stored_median_f1": stored}))
        return
    console.print(
        f"{pack.info.get('name')}: {len(report.per_concept)} concepts, median held-out F1 {report.median_f1} "
        f"(recorded at training: {stored}), mean {report.mean_f1}, F1>=0.85 for {report.f1_at_target_fraction}"
    )
    for band, v in report.by_band.items():
        console.print(f"  {band}: {v['n']} concepts, median F1 {v['median_f1']}")


def register(app: typer.Typer) -> None:
    app.add_typer(lens_app, name="lens")

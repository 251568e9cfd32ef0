"""``cortex lens monitor``: generate with per-token concept timelines, steering, bounds and divergence flags.

Added to the ``lens`` command group when it is registered before this module; otherwise to a ``steer`` group
(``cortex steer monitor``), so the command exists whichever areas are installed.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from cortex.cli._common import console, registry


def monitor_cmd(
    prompt: str = typer.Argument(..., help="Text the model continues."),
    model: str = typer.Option(..., "--model", help="Registry causal LM (or a local model folder)."),
    lens: str = typer.Option(..., "--lens", help="Lens pack trained on that model (registry name or folder)."),
    steer: list[str] = typer.Option([], "--steer", help="CONCEPT=STRENGTH; repeatable. Strength is a fraction of "
                                    "the hidden-state norm (negative steers away)."),
    bound: list[str] = typer.Option([], "--bound", help="CONCEPT<=X or CONCEPT>=X on the concept's probability; "
                                    "repeatable. Corrected toward the concept's opposite when crossed."),
    steer_mode: str = typer.Option("add", "--steer-mode", help="add | contrast (toward the concept, away from its "
                                   "opposite) | gradient (through the probe) | remove."),
    steer_layer: int = typer.Option(None, "--steer-layer",
                                    help="Layer to steer (default: the concept's primary layer)."),
    schedule: str = typer.Option("constant", "--schedule", help="Per-layer strength schedule: constant, sqrt_decay, "
                                 "linear_decay."),
    gain: float = typer.Option(1.0, "--gain", help="Controller gain: strength added per unit of score over bound."),
    decay: float = typer.Option(0.5, "--decay", help="Controller decay: fraction of last token's strength kept."),
    max_strength: float = typer.Option(0.5, "--max-strength", help="Largest correction, as a fraction of the "
                                       "hidden-state norm."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    top_k: int = typer.Option(3, "--top-k", help="Concepts listed per token in the timeline."),
    divergence: bool = typer.Option(True, "--divergence/--no-divergence",
                                    help="Compare internal lenses with a text-level detector (packaged MiniLM)."),
    window: int = typer.Option(24, "--window", help="Divergence window in tokens."),
    stride: int = typer.Option(8, "--stride", help="Divergence window stride in tokens."),
    threshold: float = typer.Option(0.5, "--threshold", help="Total-variation distance that flags a window."),
    encoder: Path = typer.Option(None, "--encoder", help="Sentence-encoder folder for divergence "
                                 "(default: the packaged MiniLM)."),
    out: Path = typer.Option(None, "--out", help="Folder for monitor.json, monitor.html and monitor.png "
                             "(default: ./monitor-<timestamp>)."),
) -> None:
    """Generate while reading every concept of a lens pack per token; write JSON, HTML and PNG reports."""
    from cortex.hub.loading import load_model
    from cortex.lenses.lens_pack import load_lens_pack
    from cortex.steering.autonomic import Bound, ControllerSettings
    from cortex.steering.divergence import DivergenceSettings, TextConceptDetector
    from cortex.steering.monitor import MonitorSettings, SteerRequest, pack_descriptions, pack_opposites, run_monitor
    from cortex.steering.report import write_report
    from cortex.steering.vectors import load_vectors, pack_folder

    requests = [SteerRequest.parse(s) for s in steer]
    bounds = [Bound.parse(b) for b in bound]
    settings = MonitorSettings(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, top_k=top_k,
        steer_mode=steer_mode, steer_layer=steer_layer, schedule=schedule,
        controller=ControllerSettings(gain=gain, decay=decay, max_strength=max_strength),
        divergence=DivergenceSettings(window=window, stride=stride, threshold=threshold) if divergence else None,
    )
    reg = registry()
    with console.status("loading model and lens pack"):
        loaded = load_model(model, registry=reg)
        pack = load_lens_pack(lens, registry=reg)
        vectors = load_vectors(pack_folder(lens, registry=reg))
        opposites = pack_opposites(pack, vectors, registry=reg)
        detector = None
        if divergence and len(pack.concepts()) >= 2:
            detector = TextConceptDetector(pack_descriptions(pack, registry=reg), encoder=encoder)
    with console.status("generating"):
        result = run_monitor(loaded, pack, prompt, steer=requests, bounds=bounds, settings=settings,
                             vectors=vectors, opposites=opposites, detector=detector)
    folder = out or Path(f"monitor-{datetime.now():%Y%m%d-%H%M%S}")
    paths = write_report(result, folder)
    console.print(f"[dim]prompt:[/] {result.prompt!r}")
    console.print(f"[dim]generated:[/] {result.text!r}")
    if bounds:
        for b, v in result.exceedance.items():
            console.print(f"bound {b}: {len(result.interventions)} interventions, tokens above bound "
                          f"{v['before']:.0%} before correction -> {v['after']:.0%} after")
    if result.divergence is not None:
        console.print(f"divergence: {len(result.divergence['spans'])} flagged span(s), max score "
                      f"{max((w['score'] for w in result.divergence['windows']), default=0):.2f}")
    console.print(f"[green]wrote[/] {paths.json}, {paths.html}, {paths.png}")


def _group(app: typer.Typer, name: str) -> typer.Typer | None:
    for g in app.registered_groups:
        instance = g.typer_instance
        if (g.name or (instance.info.name if instance is not None else None)) == name:
            return instance
    return None


def register(app: typer.Typer) -> None:
    group = _group(app, "lens")
    if group is None:
        group = typer.Typer(help="Steer generation and monitor concepts per token.", no_args_is_help=True)
        app.add_typer(group, name="steer")
    group.command("monitor")(monitor_cmd)

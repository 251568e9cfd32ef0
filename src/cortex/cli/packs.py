"""Pack commands: ``cortex packs import | show | list | status | pull | push``."""

from __future__ import annotations

import json

import typer

from cortex.cli._common import console, registry

packs_app = typer.Typer(help="Concept and lens packs: import, inspect, and share them on the Hub.",
                        no_args_is_help=True)


@packs_app.command("import")
def import_cmd(
    folder: str = typer.Argument(..., help="Concept pack folder (HatCat format or cortex format)."),
    name: str = typer.Option(None, "--name", help="Registry name (default: the pack's id, e.g. first-light)."),
) -> None:
    """Import a concept pack into the registry (rewritten in cortex's format)."""
    from cortex.lenses.concepts.store import import_concept_pack

    with console.status("reading concepts"):
        entry = import_concept_pack(folder, name=name, registry=registry())
    console.print(f"[green]imported[/] concept pack {entry.name}: {entry.extra['n_concepts']} concepts, "
                  f"{entry.extra['n_with_examples']} with examples")


@packs_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Registry concept pack."),
    concept: str = typer.Option(None, "--concept", help="Show one concept in full."),
) -> None:
    """Summarize a concept pack, or print one concept."""
    from cortex.lenses.concepts.store import load_concept_pack

    pack = load_concept_pack(name, registry=registry())
    if concept:
        typer.echo(json.dumps(pack.get(concept).to_dict(), indent=2))
        return
    layers: dict[int, int] = {}
    for c in pack:
        layers[c.layer] = layers.get(c.layer, 0) + 1
    console.print(f"{pack.name} {pack.version}: {len(pack)} concepts, {len(pack.with_examples())} with examples; "
                  f"by layer {dict(sorted(layers.items()))}; roots {', '.join(pack.roots()[:8])}")


@packs_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List lens and concept packs with their remote and locally-modified flag."""
    from cortex.lenses.hub_sync import list_packs

    rows = list_packs(registry())
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows]))
        return
    from rich.table import Table

    table = Table("NAME", "KIND", "REMOTE", "REVISION", "MODIFIED", box=None)
    for r in rows:
        table.add_row(r.name, r.kind, r.remote or "", (r.revision or "")[:12], "yes" if r.locally_modified else "")
    console.print(table)


@packs_app.command("status")
def status_cmd(name: str = typer.Argument(..., help="Registry pack.")) -> None:
    """Show a pack's remote, pinned revision, partial layers and local modifications."""
    from cortex.lenses.hub_sync import pack_status

    typer.echo(json.dumps(pack_status(name, registry()).to_dict(), indent=2))


@packs_app.command("pull")
def pull_cmd(
    remote: str = typer.Argument(..., help="hf://org/repo or hf://org/repo@revision."),
    name: str = typer.Option(None, "--name", help="Registry name (default: the pack's own)."),
    layers: str = typer.Option(None, "--layers", help="Lens packs: only these layers, e.g. 2,4."),
) -> None:
    """Download a pack from the Hub, pinned to a commit, and register it."""
    from cortex.cli.lens import _int_list
    from cortex.lenses.hub_sync import pull_pack

    with console.status(f"pulling {remote}"):
        entry = pull_pack(remote, name=name, layers=_int_list(layers, "--layers"), registry=registry())
    console.print(f"[green]pulled[/] {entry.kind} {entry.name} at {entry.extra['remote_revision'][:12]}")


@packs_app.command("push")
def push_cmd(
    name: str = typer.Argument(..., help="Registry pack to upload."),
    remote: str = typer.Argument(..., help="hf://org/repo (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
) -> None:
    """Upload a pack to the Hub and record the remote commit."""
    from cortex.lenses.hub_sync import push_pack

    with console.status(f"pushing {name}"):
        oid = push_pack(name, remote, registry=registry(), private=private)
    console.print(f"[green]pushed[/] {name} to {remote} at {oid[:12]}")


@packs_app.command("sample")
def sample_cmd(
    folder: str = typer.Argument("everyday-pack", help="Folder to write the sample concept pack into (new or empty)."),
) -> None:
    """Write the small concept pack shipped with cortex (12 everyday concepts with example sentences)."""
    from cortex.resources import write_sample_pack

    dest = write_sample_pack(folder)
    console.print(f"wrote the sample concept pack to {dest}; register it with: cortex packs import {dest}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(packs_app, name="packs")

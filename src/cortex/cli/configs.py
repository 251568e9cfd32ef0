"""``cortex configs list | show NAME | export DIR``: the configs shipped inside the package."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cortex.cli._common import console

configs_app = typer.Typer(help="List, print or copy out the configs shipped with cortex (Hydra groups, design, router).",
                          no_args_is_help=True)


@configs_app.command("list")
def list_cmd(group: str = typer.Argument(None, help="Only this group, e.g. experiment or design.")) -> None:
    """Names of the shipped configs, one per line (``experiment/ehrlich``, ``design/ehrlich``, ...)."""
    from cortex.configs import list_configs

    sys.stdout.write("".join(f"{name}\n" for name in list_configs(group)))


@configs_app.command("show")
def show_cmd(name: str = typer.Argument(..., help="Config name, e.g. design/ehrlich or experiment/ehrlich.")) -> None:
    """Print one shipped config."""
    from cortex.configs import config_path

    sys.stdout.write(config_path(name).read_text())


@configs_app.command("export")
def export_cmd(
    dest: Path = typer.Argument(..., help="Folder to copy the configs into (same layout)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files that already exist there."),
) -> None:
    """Copy every shipped config into DEST to edit; use it with --config-dir DEST or --config DEST/design/x.yaml."""
    from cortex.configs import export_configs

    written = export_configs(dest, overwrite=overwrite)
    console.print(f"wrote {len(written)} configs to {dest}; train with: cortex train --config-dir {dest} experiment=ehrlich",
                  soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(configs_app, name="configs")

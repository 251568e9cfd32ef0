"""Entry point of the ``cortex`` command.

Each area of cortex contributes one module under ``cortex/cli/`` exposing ``register(app)``; the
list below is the whole command surface. Modules import heavy libraries inside their commands so
``cortex --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console

from cortex._version import __version__
from cortex.errors import CortexError

# area modules, each with ``register(app: typer.Typer) -> None``
COMMAND_MODULES: list[str] = [
    "cortex.cli.models",
    "cortex.cli.train",
    "cortex.cli.rag",
    "cortex.cli.design",
    "cortex.cli.anomaly",
    "cortex.cli.route",
    "cortex.cli.lens",
    "cortex.cli.packs",
    "cortex.cli.monitor",  # after cortex.cli.lens: adds `monitor` to the lens group (else a `steer` group)
    "cortex.cli.configs",
]

err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="cortex",
    help="Build, train, steer and route with models on HuggingFace backbones, kept in a local registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cortex {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    home: str = typer.Option(
        None, "--home", help="Registry home folder (default: $CORTEX_HOME or ~/.cortex).", envvar="CORTEX_HOME"
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show the full traceback of an error (or set CORTEX_DEBUG=1)."
    ),
) -> None:
    """cortex command line."""
    if home:
        os.environ["CORTEX_HOME"] = os.path.abspath(os.path.expanduser(home))
    if verbose:
        os.environ["CORTEX_DEBUG"] = "1"
    silence_library_progress()


def silence_library_progress() -> None:
    """Silence transformers' and huggingface_hub's own progress bars and info logs ("Loading weights",
    "Writing model shards", download bars) between cortex's lines; cortex's rich progress stays.

    Environment variables cover libraries not imported yet, so commands that never touch a model never
    import transformers (and torch); the libraries' own switches cover those already imported.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "datasets" in sys.modules:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _is_click_exception(e: Exception) -> bool:
    """True for click's ClickException, whether from click itself or the copy typer vendors."""
    return any(cls.__name__ == "ClickException" and "click" in cls.__module__ for cls in type(e).__mro__)


def debugging() -> bool:
    """True when the user asked for tracebacks (``--verbose`` or ``CORTEX_DEBUG=1``)."""
    return os.environ.get("CORTEX_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _report(e: CortexError) -> int:
    """One line for the user; the traceback as well under ``--verbose`` / ``CORTEX_DEBUG=1``."""
    if debugging():
        err_console.print_exception()
    err_console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
    return e.exit_code


_SCOPED_ENV = ("CORTEX_DEBUG", "CORTEX_HOME")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`CortexError` prints one line and exits non-zero, without a traceback
    unless ``--verbose`` or ``CORTEX_DEBUG=1``.

    ``--verbose`` and ``--home`` hold for this invocation only: the environment they set is put back
    afterwards, so a later in-process call (a test, a notebook) does not inherit them.
    """
    saved = {name: os.environ.get(name) for name in _SCOPED_ENV}
    try:
        return _run(argv)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run(argv: list[str] | None) -> int:
    from cortex._extras import extra_for_module, missing_extra

    try:
        # in non-standalone mode typer *returns* the code of a `typer.Exit` (and turns Ctrl-C into
        # Exit(130)) instead of raising it, so the return value is the exit status
        rv = app(args=argv, standalone_mode=False)
    except CortexError as e:
        return _report(e)
    except ModuleNotFoundError as e:  # an optional library imported inside a command: name its extra
        if e.name is None or extra_for_module(e.name) is None:
            raise
        return _report(missing_extra(e.name))
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]: nothing partial was kept.")
        return 130
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except Exception as e:  # usage errors (bad option, unknown command) arrive here in non-standalone mode
        if _is_click_exception(e):
            e.show()
            return e.exit_code
        raise
    if rv == 130:
        err_console.print("[bold red]interrupted[/]: nothing partial was kept.")
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


if __name__ == "__main__":
    sys.exit(main())

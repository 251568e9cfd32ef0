"""CLI error reporting (one line, tracebacks on request) and optional extras that name themselves."""

import os
import subprocess
import sys

from cortex.cli.main import main


def test_errors_are_one_line_unless_verbose(capsys, monkeypatch):
    monkeypatch.delenv("CORTEX_DEBUG", raising=False)
    assert main(["configs", "show", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No shipped config named 'nope'") and "Traceback" not in err
    assert main(["--verbose", "configs", "show", "nope"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert "CORTEX_DEBUG" not in os.environ  # --verbose holds for that call only
    assert main(["configs", "show", "nope"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("CORTEX_DEBUG", "1")
    assert main(["configs", "show", "nope"]) == 1
    assert "Traceback" in capsys.readouterr().err


def _without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which ``modules`` cannot be imported (as if not installed)."""
    block = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", f"import sys\n{block}{code}"], capture_output=True, text=True,
                          timeout=120)


def test_a_missing_extra_is_named():
    serve = _without(["fastapi", "uvicorn"], "import cortex.routing.service")
    assert serve.returncode != 0 and "MissingExtraError" in serve.stderr and 'pip install "cortex-hf[serve]"' in serve.stderr
    rag = _without(["langchain_core"], "import cortex.retrieval.langchain")
    assert "MissingExtraError" in rag.stderr and "cortex-hf[rag]" in rag.stderr
    # import cortex and the CLI need no extra at all
    base = _without(["fastapi", "uvicorn", "langchain_core", "faiss", "chromadb", "botorch"],
                    "import cortex, cortex.cli.main, cortex.design, cortex.training, cortex.retrieval, cortex.routing")
    assert base.returncode == 0, base.stderr
    # the design library called from Python (not through the CLI) names its extra too
    design = _without(["botorch"], "import torch\nfrom cortex.design.acquisition import DesignObjective, EnsembleAcquisition\n"
                                   "EnsembleAcquisition(DesignObjective(objectives=('value',)), torch.zeros(2, 3, 1))")
    assert "MissingExtraError" in design.stderr and "cortex-hf[design]" in design.stderr, design.stderr


def test_cli_names_the_extra_of_a_library_imported_inside_a_command():
    from cortex._extras import missing_extra

    cli = _without(["botorch"], "from cortex._extras import require\nrequire('botorch.acquisition')")
    assert "cortex-hf[design]" in cli.stderr
    assert "cortex-hf[rag]" in str(missing_extra("faiss"))

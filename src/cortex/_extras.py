"""Optional dependencies, grouped in the extras of ``pyproject.toml``, and the error when one is missing.

Most users never serve the router over HTTP, index code for retrieval or run Bayesian acquisitions,
so those heavy libraries sit in extras (``pip install "cortex-hf[serve]"``). ``import cortex`` never
needs them; a module that does calls :func:`require` at import (or inside the function that needs
it), so a missing library is a :class:`~cortex.errors.MissingExtraError` that names the extra to
install, not a bare ``ModuleNotFoundError`` deep in a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cortex.errors import MissingExtraError

__all__ = ["EXTRAS", "extra_for_module", "missing_extra", "require"]

# extra name -> (importable top-level modules it provides, what it is for)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "serve": (("fastapi", "uvicorn", "starlette"), "the router's HTTP service (cortex route serve)"),
    "rag": (("langchain_core", "faiss"), "retrieval: the vector index and the LangChain adapters (cortex rag)"),
    "chroma": (("chromadb",), "the Chroma server backend of the retrieval index"),
    "design": (("botorch", "gpytorch", "linear_operator"), "LaMBO-2's acquisition functions (cortex design, cortex quickstart)"),
}


def extra_for_module(module: str) -> str | None:
    """The extra that provides importable ``module`` (``fastapi.responses`` -> ``serve``), or ``None``."""
    top = module.split(".")[0]
    return next((extra for extra, (mods, _) in EXTRAS.items() if top in mods), None)


def missing_extra(module: str, extra: str | None = None) -> MissingExtraError:
    """The error for optional module ``module`` not being importable."""
    extra = extra or extra_for_module(module) or "all"
    purpose = EXTRAS.get(extra, ((), "this part of cortex"))[1]
    return MissingExtraError(
        f"{purpose} needs {module.split('.')[0]!r}, which is not installed. "
        f'Install the extra with: pip install "cortex-hf[{extra}]"'
    )


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import optional ``module``; a :class:`MissingExtraError` naming its extra if it is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.split(".")[0] != e.name.split(".")[0]:
            raise  # the optional module is there but one of its own imports is broken: show that
        raise missing_extra(module, extra) from e

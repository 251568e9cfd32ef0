"""DESIGN.md's layering: only ``cortex.training`` imports Lightning; ``import cortex`` does not load torch."""

import subprocess
import sys

import pytest


def _loaded_after(statement: str, modules: list[str]) -> dict[str, bool]:
    code = f"import sys\n{statement}\nprint([m in sys.modules for m in {modules!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(zip(modules, eval(out.strip().splitlines()[-1])))


@pytest.mark.parametrize("package", ["cortex.models", "cortex.data", "cortex.tasks", "cortex.corruption",
                                     "cortex.hub", "cortex.design"])
def test_only_training_imports_lightning(package):
    assert _loaded_after(f"import {package}", ["lightning"]) == {"lightning": False}


def test_training_does_import_lightning_and_cortex_alone_stays_light():
    assert _loaded_after("import cortex.training.datamodules", ["lightning"]) == {"lightning": True}
    assert _loaded_after("import cortex", ["torch", "transformers"]) == {"torch": False, "transformers": False}

"""Loading a saved NeuralTree without ``import cortex``: the ``auto_map`` module written beside the weights.

``AutoModel.from_pretrained(folder)`` finds ``model_type="neural_tree"`` only once cortex has
registered it, which ``import cortex`` does. A process that never imported cortex (a generic HF
script, a serving stack) gets transformers' "does not recognize this architecture" instead. So
``save_pretrained`` also writes :data:`MODULE_FILE` and an ``auto_map`` in ``config.json`` naming its
classes; with ``trust_remote_code=True`` transformers imports that file, which imports the
installed cortex package and hands back cortex's own classes (thin subclasses, so that
transformers' ``register_for_auto_class`` bookkeeping lands on them and not on cortex's classes).

The contract is therefore: ``trust_remote_code=True`` works in a process that never ran
``import cortex``, as long as cortex is installed; the module holds no model code of its own, so
loading it runs nothing but cortex. Without ``trust_remote_code`` (the default) transformers
refuses with its own message asking for ``trust_remote_code=True``; ``import cortex`` first is
the other way.
"""

from __future__ import annotations

import os
from pathlib import Path

from cortex._atomic import atomic_write

MODULE_NAME = "cortex_neural_tree"
MODULE_FILE = f"{MODULE_NAME}.py"
AUTO_MAP = {"AutoConfig": f"{MODULE_NAME}.NeuralTreeConfig", "AutoModel": f"{MODULE_NAME}.NeuralTreeModel"}

MODULE_SOURCE = '''"""A cortex NeuralTree, for AutoModel.from_pretrained(folder, trust_remote_code=True).

Written by cortex's NeuralTreeModel.save_pretrained. It defines no model code: it imports the
installed cortex package (pip install cortex) and exposes its classes under the names that
config.json's auto_map gives. In a process that imports cortex, AutoModel finds the tree
without trust_remote_code.
"""

from cortex.models.neural_tree import NeuralTreeConfig as _CortexNeuralTreeConfig
from cortex.models.neural_tree import NeuralTreeModel as _CortexNeuralTreeModel


class NeuralTreeConfig(_CortexNeuralTreeConfig):
    """cortex's NeuralTreeConfig as loaded through auto_map."""


class NeuralTreeModel(_CortexNeuralTreeModel):
    """cortex's NeuralTreeModel as loaded through auto_map."""

    config_class = NeuralTreeConfig
'''


def set_auto_map(config) -> None:
    """Point ``config.auto_map`` at :data:`MODULE_FILE` (saved into ``config.json``)."""
    config.auto_map = dict(AUTO_MAP)


def write_remote_code(folder: str | os.PathLike) -> Path:
    """Write :data:`MODULE_FILE` into ``folder`` (atomically); returns its path."""
    path = Path(folder) / MODULE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: f.write(MODULE_SOURCE.encode("utf-8")))

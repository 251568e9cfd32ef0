"""cortex: multi-task NeuralTrees on HuggingFace backbones, guided sequence design, concept lenses,
a learned task router, and a local registry that keeps every model with its lineage.

``import cortex`` registers cortex's model types (``neural_tree``, ``cortex_char_lm``) with
transformers' ``AutoConfig``/``AutoModel`` so that ``from_pretrained`` works on saved folders.
"""

from cortex._version import __version__
from cortex import errors
from cortex.models import register_auto_classes as _register_auto_classes

_register_auto_classes()

__all__ = ["__version__", "errors"]

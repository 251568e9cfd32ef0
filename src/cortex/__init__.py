"""cortex: multi-task NeuralTrees on HuggingFace backbones, guided sequence design, concept lenses,
a learned task router, and a local registry that keeps every model with its lineage.

``import cortex`` registers cortex's model types (``neural_tree``, ``cortex_char_lm``) with
transformers' ``AutoConfig``/``AutoModel`` so that ``from_pretrained`` works on saved folders. The
registration waits until transformers is imported, so ``import cortex`` itself does not load torch.
"""

from cortex._version import __version__
from cortex import errors
from cortex import _autoregister

_autoregister.install()

__all__ = ["__version__", "errors"]

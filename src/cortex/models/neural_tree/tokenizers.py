"""Each root's tokenizer, kept next to the tree: ``<tree folder>/tokenizer_<root>/``.

Built-in roots build theirs from the config (protein or char alphabet). HF roots use the
tokenizer of their source, copied into the tree folder by ``save_pretrained`` so that the saved
tree is self-contained. Tokenizers are used by the data pipeline (``cortex.data``), never by
``forward``.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from cortex.errors import ConfigError
from cortex.hub.paths import safe_join
from cortex.models.neural_tree.specs import RootSpec

TOKENIZER_DIR = "tokenizer_{root}"


def tokenizer_dir(folder: str | os.PathLike, root: str) -> Path:
    """``<folder>/tokenizer_<root>``, refusing names that would escape ``folder``."""
    return safe_join(folder, TOKENIZER_DIR.format(root=root))


def builtin_tokenizer(spec: RootSpec) -> PreTrainedTokenizerBase:
    """A fresh protein or char tokenizer for a built-in root (``model_max_length`` = the root's ``max_len``)."""
    from cortex.data.tokenizers import build_char_tokenizer, build_protein_tokenizer

    if spec.tokenizer == "protein":
        return build_protein_tokenizer(model_max_length=spec.max_len)
    if spec.chars is not None:
        return build_char_tokenizer(spec.chars, model_max_length=spec.max_len)
    return build_char_tokenizer(model_max_length=spec.max_len)


def find_root_tokenizer(
    name: str, spec: RootSpec, folder: str | os.PathLike | None = None
) -> PreTrainedTokenizerBase | None:
    """The tokenizer of root ``name``, or ``None`` if an HF root's source has none.

    Looked up in order: the copy saved in ``folder/tokenizer_<name>``, the built-in alphabet, the
    HF root's source folder or registry entry.
    """
    trust = getattr(spec, "trust_remote_code", False)
    if folder is not None:
        saved = tokenizer_dir(folder, name)
        if saved.is_dir():
            return AutoTokenizer.from_pretrained(saved, trust_remote_code=trust)
    if spec.builtin:
        return builtin_tokenizer(spec)
    source = getattr(spec, "source", None)
    if source is None:
        return None
    from cortex.errors import CortexError
    from cortex.hub.registry import resolve_model_path

    try:
        path = resolve_model_path(source)
    except CortexError:
        return None
    if not any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust)


def root_tokenizer(name: str, spec: RootSpec, folder: str | os.PathLike | None = None) -> PreTrainedTokenizerBase:
    """As :func:`find_root_tokenizer`, raising :class:`ConfigError` when there is none."""
    tok = find_root_tokenizer(name, spec, folder)
    if tok is None:
        raise ConfigError(
            f"Root {name!r} has no tokenizer: its source {getattr(spec, 'source', None)!r} holds no tokenizer files "
            f"and none was saved with the tree. Attach one with tree.set_root_tokenizer({name!r}, tokenizer)."
        )
    return tok

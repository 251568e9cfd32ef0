"""Real ``PreTrainedTokenizerFast`` tokenizers built from a fixed alphabet: protein and characters.

Both split text into single characters and map each to an id with a word-level vocabulary, so
they save, load and batch exactly like any HF tokenizer (``save_pretrained`` writes
``tokenizer.json``; ``AutoTokenizer.from_pretrained`` reads it back).
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from cortex.errors import InputError

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
                  "bos_token": "<cls>", "eos_token": "<eos>"}
# the printable ASCII set plus newline: enough for code and English prose
DEFAULT_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n\t"


def _char_level(alphabet: Iterable[str], specials: dict[str, str], model_max_length: int) -> PreTrainedTokenizerFast:
    vocab: dict[str, int] = {}
    for tok in specials.values():
        vocab.setdefault(tok, len(vocab))
    for ch in alphabet:
        if len(ch) != 1:
            raise InputError(f"Alphabet entry {ch!r} is not a single character; pass single characters.")
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk_token"]))
    # every character is its own token, whitespace included; special tokens are matched first
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **specials)
    return fast


def build_protein_tokenizer(model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Tokenizer over the 20 canonical amino acids plus ``<pad> <unk> <mask> <cls> <eos>``.

    Ids: 0 pad, 1 unk, 2 mask, 3 cls, 4 eos, then ``ACDEFGHIKLMNPQRSTVWY`` as 5..24.
    """
    return _char_level(AMINO_ACIDS, SPECIAL_TOKENS, model_max_length)


def build_char_tokenizer(chars: str | Iterable[str] = DEFAULT_CHARS, model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """Character tokenizer over ``chars`` (default: printable ASCII and newline) plus the special tokens."""
    return _char_level(sorted(set(chars)), SPECIAL_TOKENS, model_max_length)


def load_tokenizer(name_or_path: str | os.PathLike, trust_remote_code: bool = False):
    """Load a tokenizer from a registry name or a local folder (never from the network)."""
    from cortex.hub.registry import resolve_model_path

    path = resolve_model_path(name_or_path)
    if not (Path(path) / "tokenizer.json").exists() and not (Path(path) / "tokenizer_config.json").exists():
        raise InputError(f"No tokenizer files in {path}. Save one there with tokenizer.save_pretrained(...).")
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


BUILTIN_TOKENIZERS = {"protein": build_protein_tokenizer, "char": build_char_tokenizer}


def get_tokenizer(name: str | os.PathLike, trust_remote_code: bool = False):
    """``"protein"`` or ``"char"`` for a built-in tokenizer, else a registry name or local folder."""
    if isinstance(name, str) and name in BUILTIN_TOKENIZERS:
        return BUILTIN_TOKENIZERS[name]()
    return load_tokenizer(name, trust_remote_code=trust_remote_code)

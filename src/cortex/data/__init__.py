"""Data: tokenizers, collators and datasets. Tokenization happens here, never in a model's forward."""

from cortex.data.tokenizers import (
    AMINO_ACIDS,
    build_char_tokenizer,
    build_protein_tokenizer,
    load_tokenizer,
)

__all__ = ["AMINO_ACIDS", "build_char_tokenizer", "build_protein_tokenizer", "load_tokenizer"]

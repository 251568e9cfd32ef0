"""Data: tokenizers, collators and datasets. Tokenization happens here, never in a model's forward."""

from cortex.data.collators import TokenizingCollator, TreeCollator, ids_column, pad_ids
from cortex.data.tokenization import tokenize_dataset
from cortex.data.tokenizers import (
    AMINO_ACIDS,
    build_char_tokenizer,
    build_protein_tokenizer,
    get_tokenizer,
    load_tokenizer,
)

__all__ = [
    "AMINO_ACIDS", "TokenizingCollator", "TreeCollator", "build_char_tokenizer", "build_protein_tokenizer",
    "get_tokenizer", "ids_column", "load_tokenizer", "pad_ids", "tokenize_dataset",
]

"""Tokenize a ``datasets.Dataset`` for a NeuralTree with ``Dataset.map(batched=True)``.

Tokenization belongs to the data pipeline: it runs once here (cached by ``datasets``, optionally
in ``num_proc`` processes) or in DataLoader workers (:class:`~cortex.data.collators.TokenizingCollator`),
never inside a model's ``forward``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.data.collators import _check_maps, encode, ids_column, root_max_length
from cortex.errors import DataError


def tokenize_dataset(
    dataset,
    tokenizers: Mapping[str, Any],
    column_map: Mapping[str, str],
    max_length: int | Mapping[str, int] | None = None,
    truncation: bool = False,
    batch_size: int = 1000,
    num_proc: int | None = None,
    remove_columns: bool = False,
):
    """Add a ``"<root>.input_ids"`` column per root (unpadded id lists; pad with :class:`TreeCollator`).

    Args:
        dataset: a ``datasets.Dataset``.
        tokenizers: root → tokenizer (e.g. ``tree.root_tokenizers()``).
        column_map: root → the text column it reads.
        max_length: root → limit (or one int); default each tokenizer's ``model_max_length``.
            Longer rows raise :class:`~cortex.errors.DataError` unless ``truncation=True``.
        batch_size, num_proc: passed to ``Dataset.map``.
        remove_columns: drop the text columns after tokenizing.

    Returns:
        The tokenized ``datasets.Dataset``.
    """
    _check_maps(tokenizers, column_map)
    columns = list(getattr(dataset, "column_names", []) or [])
    missing = {root: col for root, col in column_map.items() if col not in columns}
    if missing:
        raise DataError(
            f"column_map names columns {missing} that the dataset lacks; its columns are {columns}. "
            "Rename the column or fix column_map."
        )
    limits = {root: root_max_length(tok, max_length, root) for root, tok in tokenizers.items()}
    tokenizers = dict(tokenizers)
    column_map = dict(column_map)

    def _tokenize(batch: dict[str, list]) -> dict[str, list]:
        return {
            ids_column(root): encode(tok, batch[column_map[root]], limits[root], truncation, column_map[root])
            for root, tok in tokenizers.items()
        }

    drop = sorted(set(column_map.values())) if remove_columns else None
    return dataset.map(_tokenize, batched=True, batch_size=batch_size, num_proc=num_proc, remove_columns=drop,
                       desc="tokenizing")

"""Padding collators that turn rows into the nested tensors a NeuralTree's ``forward`` takes.

A batch is ``{"inputs": {root: {"input_ids": (B, T), "attention_mask": (B, T)}}, "targets": {column: tensor}}``,
so a training step calls ``tree(batch["inputs"])`` and reads ``batch["targets"]``. Collators run
in DataLoader workers: :class:`TreeCollator` pads rows that ``tokenize_dataset`` already tokenized,
:class:`TokenizingCollator` tokenizes raw text there first (never in ``forward``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cortex.errors import DataError

IGNORE_INDEX = -100


def ids_column(root: str) -> str:
    """Name of the column holding ``root``'s token ids in a tokenized dataset."""
    return f"{root}.input_ids"


def _padded_length(lengths: list[int], pad_to: int | None, multiple: int | None) -> int:
    T = max(lengths) if lengths else 0
    if pad_to is not None:
        if T > pad_to:
            raise DataError(f"A row has {T} tokens but pad_to={pad_to}; raise pad_to or truncate when tokenizing.")
        return pad_to
    if multiple:
        T = int(math.ceil(T / multiple) * multiple)
    return max(T, 1)


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, pad_to: int | None = None,
            multiple: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``input_ids`` ``(B, T)`` long and ``attention_mask`` ``(B, T)`` long."""
    T = _padded_length([len(r) for r in rows], pad_to, multiple)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r)
        if n:
            ids[i, :n] = torch.as_tensor(r, dtype=torch.long)
            mask[i, :n] = 1
    return ids, mask


def stack_targets(values: Sequence[Any], column: str) -> torch.Tensor:
    """Targets of one column: scalars → ``(B,)``; equal-length lists → ``(B, K)``; ragged lists are
    right-padded with NaN (floats) or -100 (ints), the values losses ignore."""
    if any(v is None for v in values):
        values = [float("nan") if v is None else v for v in values]
    first = values[0]
    if isinstance(first, (list, tuple)) or (torch.is_tensor(first) and first.dim() > 0):
        seqs = [torch.as_tensor(v) for v in values]
        is_float = any(s.is_floating_point() for s in seqs)
        T = max(s.shape[0] for s in seqs)
        fill = float("nan") if is_float else IGNORE_INDEX
        out = torch.full((len(seqs), T, *seqs[0].shape[1:]), fill, dtype=torch.float32 if is_float else torch.long)
        for i, s in enumerate(seqs):
            out[i, : s.shape[0]] = s
        return out
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError) as e:
        raise DataError(f"Target column {column!r} holds values that are not numbers ({first!r}); map them to numbers first.") from e
    return t.float() if t.is_floating_point() else t.long()


class TreeCollator:
    """Pad tokenized rows (from :func:`cortex.data.tokenize_dataset`) per root and stack targets.

    Args:
        pad_token_ids: root → pad id (``{r: tok.pad_token_id for r, tok in tree.root_tokenizers().items()}``).
        target_columns: columns copied into ``batch["targets"]``.
        pad_to: root → fixed length (or one int for all): stable shapes for ``torch.compile``.
        pad_to_multiple_of: round the padded length up (fewer distinct shapes than exact padding).
    """

    def __init__(
        self,
        pad_token_ids: Mapping[str, int],
        target_columns: Sequence[str] = (),
        pad_to: int | Mapping[str, int] | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        for root, pid in pad_token_ids.items():
            if pid is None:
                raise DataError(f"Root {root!r} has no pad token id; set tokenizer.pad_token before collating.")
        self.pad_token_ids = dict(pad_token_ids)
        self.target_columns = list(target_columns)
        self.pad_to = pad_to
        self.pad_to_multiple_of = pad_to_multiple_of

    @classmethod
    def from_tokenizers(cls, tokenizers: Mapping[str, Any], **kwargs) -> "TreeCollator":
        """A collator padding each root with its tokenizer's pad id."""
        return cls({root: tok.pad_token_id for root, tok in tokenizers.items()}, **kwargs)

    def _pad_to(self, root: str) -> int | None:
        return self.pad_to.get(root) if isinstance(self.pad_to, Mapping) else self.pad_to

    def pad(self, root: str, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_ids(rows, self.pad_token_ids[root], self._pad_to(root), self.pad_to_multiple_of)
        return {"input_ids": ids, "attention_mask": mask}

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict]:
        if not rows:
            raise DataError("Cannot collate an empty batch.")
        inputs = {}
        for root in self.pad_token_ids:
            col = ids_column(root)
            if col not in rows[0]:
                raise DataError(
                    f"Rows lack column {col!r}; tokenize the dataset first with cortex.data.tokenize_dataset, "
                    f"or use TokenizingCollator. Columns present: {sorted(rows[0])}."
                )
            inputs[root] = self.pad(root, [r[col] for r in rows])
        return {"inputs": inputs, "targets": self._targets(rows)}

    def _targets(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        out = {}
        for col in self.target_columns:
            if col not in rows[0]:
                raise DataError(f"Target column {col!r} is not in the rows; columns are {sorted(rows[0])}.")
            out[col] = stack_targets([r[col] for r in rows], col)
        return out


class TokenizingCollator(TreeCollator):
    """Tokenize raw text columns inside the DataLoader worker, then pad like :class:`TreeCollator`.

    Args:
        tokenizers: root → tokenizer (``tree.root_tokenizers()``).
        column_map: root → text column.
        max_length: root → longest allowed sequence (or one int); longer rows raise :class:`DataError`
            unless ``truncation=True``. Default: each tokenizer's ``model_max_length``.
        truncation: cut long rows to ``max_length`` instead of raising.
    """

    def __init__(
        self,
        tokenizers: Mapping[str, Any],
        column_map: Mapping[str, str],
        target_columns: Sequence[str] = (),
        max_length: int | Mapping[str, int] | None = None,
        truncation: bool = False,
        pad_to: int | Mapping[str, int] | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        _check_maps(tokenizers, column_map)
        super().__init__({r: t.pad_token_id for r, t in tokenizers.items()}, target_columns, pad_to, pad_to_multiple_of)
        self.tokenizers = dict(tokenizers)
        self.column_map = dict(column_map)
        self.max_length = {r: root_max_length(t, max_length, r) for r, t in self.tokenizers.items()}
        self.truncation = truncation

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict]:
        if not rows:
            raise DataError("Cannot collate an empty batch.")
        inputs = {}
        for root, tok in self.tokenizers.items():
            col = self.column_map[root]
            if col not in rows[0]:
                raise DataError(f"Rows lack text column {col!r} for root {root!r}; columns are {sorted(rows[0])}.")
            ids = encode(tok, [r[col] for r in rows], self.max_length[root], self.truncation, col)
            inputs[root] = self.pad(root, ids)
        return {"inputs": inputs, "targets": self._targets(rows)}


def _check_maps(tokenizers: Mapping[str, Any], column_map: Mapping[str, str]) -> None:
    if set(tokenizers) != set(column_map):
        raise DataError(
            f"tokenizers cover roots {sorted(tokenizers)} but column_map covers {sorted(column_map)}; "
            "give one text column per root that has a tokenizer."
        )


def root_max_length(tokenizer: Any, max_length: int | Mapping[str, int] | None, root: str) -> int | None:
    """The length limit for ``root``: explicit, else the tokenizer's ``model_max_length`` when it is real."""
    if isinstance(max_length, Mapping):
        max_length = max_length.get(root)
    if max_length is not None:
        return int(max_length)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit < 1_000_000 else None  # HF uses 1e30 for "no limit"


def encode(tokenizer: Any, texts: Sequence[Any], max_length: int | None, truncation: bool, column: str) -> list[list[int]]:
    """Token id lists of ``texts``; rows over ``max_length`` raise :class:`DataError` unless truncating."""
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"Column {column!r} has non-text values at rows {bad[:5]} (e.g. {texts[bad[0]]!r}); fill or drop them.")
    enc = tokenizer(list(texts), truncation=truncation and max_length is not None, max_length=max_length)
    ids = enc["input_ids"]
    if max_length is not None and not truncation:
        long_rows = [i for i, r in enumerate(ids) if len(r) > max_length]
        if long_rows:
            raise DataError(
                f"Column {column!r}: {len(long_rows)} rows are longer than {max_length} tokens (first at batch row "
                f"{long_rows[0]}, {len(ids[long_rows[0]])} tokens). Filter them out, or pass truncation=True."
            )
    return ids

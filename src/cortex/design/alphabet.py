"""Integer-coded sequences (states ``0..V-1``) to and from strings, and the matching tokenizer.

Black boxes in the BoTorch / pytorch-holo convention take ``LongTensor [batch, length]`` of states;
cortex's trees read text through a tokenizer. The default alphabets map state ``i`` to a character
so that ``build_char_tokenizer(chars=alphabet)`` gives state ``i`` the token id ``5 + i`` (ids 0-4 are
``<pad> <unk> <mask> <cls> <eos>``), because the char tokenizer sorts its characters and every default
alphabet is already sorted:

* ``V <= 20``: the first ``V`` amino acids of ``ACDEFGHIKLMNPQRSTVWY`` (V = 20 is the protein alphabet).
* ``20 < V <= 52``: the first ``V`` letters of ``A..Z`` then ``a..z``; e.g. V = 32 is ``A..Z`` + ``a..f``.
  (So for V > 20 a letter no longer means an amino acid: state 1 is ``B``, not ``C``.)

Larger vocabularies need an explicit ``alphabet`` of distinct, non-whitespace characters.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from cortex.errors import DesignError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
_LETTERS = string.ascii_uppercase + string.ascii_lowercase
MAX_DEFAULT_STATES = len(_LETTERS)
NUM_SPECIAL_TOKENS = 5  # <pad> <unk> <mask> <cls> <eos> come first in cortex char tokenizers


def default_alphabet(num_states: int) -> str:
    """The documented printable alphabet for ``num_states`` states (see the module docstring)."""
    if not 1 <= num_states <= MAX_DEFAULT_STATES:
        raise DesignError(
            f"num_states={num_states} has no default alphabet (1..{MAX_DEFAULT_STATES} do); "
            "pass alphabet='...' with one distinct character per state."
        )
    return AMINO_ACIDS[:num_states] if num_states <= len(AMINO_ACIDS) else _LETTERS[:num_states]


def check_alphabet(alphabet: str, num_states: int | None = None) -> str:
    """Validate a user alphabet: distinct single non-whitespace characters, one per state."""
    if len(set(alphabet)) != len(alphabet):
        raise DesignError(f"alphabet={alphabet!r} repeats a character; pass each character once.")
    if any(ch.isspace() for ch in alphabet) or any(ch in "<>" for ch in alphabet):
        raise DesignError(f"alphabet={alphabet!r} contains whitespace or '<'/'>'; those clash with special tokens.")
    if num_states is not None and len(alphabet) != num_states:
        raise DesignError(
            f"alphabet={alphabet!r} has {len(alphabet)} characters but there are {num_states} states; "
            "pass one character per state."
        )
    return alphabet


def states_to_strings(states: torch.Tensor, alphabet: str) -> list[str]:
    """``LongTensor [B, L]`` of states -> ``B`` strings of length ``L`` over ``alphabet``."""
    if states.dim() != 2:
        raise DesignError(f"states has shape {tuple(states.shape)}; pass a [batch, length] tensor.")
    if states.numel() and (int(states.min()) < 0 or int(states.max()) >= len(alphabet)):
        raise DesignError(
            f"states hold values outside 0..{len(alphabet) - 1}; the alphabet has {len(alphabet)} characters."
        )
    chars = list(alphabet)
    return ["".join(chars[i] for i in row) for row in states.tolist()]


def strings_to_states(sequences: Sequence[str], alphabet: str, length: int | None = None) -> torch.LongTensor:
    """``B`` strings over ``alphabet`` (all the same length) -> ``LongTensor [B, L]`` of states."""
    lookup = {ch: i for i, ch in enumerate(alphabet)}
    if isinstance(sequences, str):
        raise DesignError("sequences is a single string; pass a list of strings, e.g. [seq].")
    if not sequences:
        raise DesignError("sequences is empty; pass at least one string.")
    expected = length if length is not None else len(sequences[0])
    rows = []
    for n, seq in enumerate(sequences):
        if len(seq) != expected:
            raise DesignError(f"sequences[{n}] has length {len(seq)}, expected {expected}; pass equal-length strings.")
        try:
            rows.append([lookup[ch] for ch in seq])
        except KeyError as err:
            raise DesignError(
                f"sequences[{n}] contains {err.args[0]!r}, which is not in the alphabet {alphabet!r}; "
                "use only alphabet characters."
            ) from None
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), expected)


def alphabet_tokenizer(alphabet: str, model_max_length: int = 2048) -> "PreTrainedTokenizerFast":
    """A cortex char tokenizer over ``alphabet`` (plus the five special tokens).

    For sorted alphabets (all defaults) state ``i`` has token id ``5 + i``; in general use
    :func:`state_token_ids` to map states to ids.
    """
    from cortex.data.tokenizers import build_char_tokenizer

    return build_char_tokenizer(chars=check_alphabet(alphabet), model_max_length=model_max_length)


def state_token_ids(tokenizer: "PreTrainedTokenizerFast", alphabet: str) -> torch.LongTensor:
    """Token id of each state's character, shape ``[V]`` (``ids[state]``); errors if a character is unknown."""
    ids = tokenizer.convert_tokens_to_ids(list(alphabet))
    unk = tokenizer.unk_token_id
    missing = [ch for ch, i in zip(alphabet, ids) if i is None or i == unk]
    if missing:
        raise DesignError(
            f"The tokenizer has no token for {''.join(missing)!r}; build it with alphabet_tokenizer(alphabet)."
        )
    return torch.tensor(ids, dtype=torch.long)

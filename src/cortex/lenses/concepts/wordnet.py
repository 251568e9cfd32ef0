"""Glosses and usage examples from WordNet 3.0 database files (Debian's ``wordnet-base``).

Synset ids come in two shapes in concept packs: NLTK names (``deception.n.01``: lemma, part of speech,
sense number, found through ``index.<pos>``) and offsets (``00012071.s``: a byte offset into
``data.<pos>``; ``s`` satellite adjectives live in ``data.adj``). Data lines end with
``| gloss; "example one"; "example two"``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cortex.errors import DataError

DEFAULT_ROOT = Path("/usr/share/wordnet")
_POS_FILE = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
_QUOTED = re.compile(r'"([^"]+)"')


def default_wordnet_root() -> Path:
    """``$CORTEX_WORDNET`` or ``/usr/share/wordnet``."""
    return Path(os.environ.get("CORTEX_WORDNET", DEFAULT_ROOT))


class WordNet:
    """Read-only access to a WordNet 3.0 ``dict`` folder (``data.noun``, ``index.noun``, ...)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_wordnet_root()
        if not (self.root / "data.noun").is_file():
            raise DataError(
                f"No WordNet database at {self.root} (data.noun missing). Install it with "
                "`apt-get install wordnet-base`, or set CORTEX_WORDNET to a WordNet 3.0 dict folder."
            )
        self._index: dict[str, dict[str, list[str]]] = {}

    @classmethod
    def available(cls, root: str | os.PathLike | None = None) -> bool:
        return ((Path(root) if root else default_wordnet_root()) / "data.noun").is_file()

    def _offsets(self, pos: str) -> dict[str, list[str]]:
        """``lemma -> [offsets in sense order]`` from ``index.<pos>`` (read once per part of speech)."""
        if pos not in self._index:
            table: dict[str, list[str]] = {}
            with open(self.root / f"index.{_POS_FILE[pos]}", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith(" "):
                        continue  # license header
                    parts = line.split()
                    n_senses = int(parts[2])
                    table[parts[0]] = parts[-n_senses:]
            self._index[pos] = table
        return self._index[pos]

    def _data_line(self, offset: str, pos: str) -> str | None:
        with open(self.root / f"data.{_POS_FILE[pos]}", "rb") as f:
            f.seek(int(offset))
            line = f.readline().decode("utf-8", errors="replace")
        return line if line.startswith(offset) else None

    def _locate(self, synset_id: str) -> tuple[str, str] | None:
        parts = synset_id.split(".")
        if len(parts) == 2 and parts[0].isdigit() and parts[1] in _POS_FILE:
            return parts[0], parts[1]
        if len(parts) >= 3 and parts[-2] in _POS_FILE and parts[-1].isdigit():
            lemma, pos, sense = ".".join(parts[:-2]).lower(), parts[-2], int(parts[-1])
            offsets = self._offsets("a" if pos == "s" else pos).get(lemma, [])
            if 1 <= sense <= len(offsets):
                return offsets[sense - 1], pos
        return None

    def gloss(self, synset_id: str) -> tuple[str, list[str]] | None:
        """``(definition, usage examples)`` of a synset, or ``None`` when the id is unknown."""
        where = self._locate(synset_id)
        if where is None:
            return None
        line = self._data_line(*where)
        if line is None or "|" not in line:
            return None
        text = line.split("|", 1)[1].strip()
        examples = _QUOTED.findall(text)
        definition = _QUOTED.sub("", text).strip(" ;")
        return definition, [e.strip() for e in examples if len(e.split()) >= 3]

    def examples(self, synset_id: str) -> list[str]:
        """Usage examples of a synset (sentences of at least three words)."""
        g = self.gloss(synset_id)
        return g[1] if g else []

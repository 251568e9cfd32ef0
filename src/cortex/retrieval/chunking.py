"""Split source files into retrievable chunks by their structure.

Python splits by top-level function and class (a large class by method) through ``ast``; Markdown
by heading; any other text by windows of lines with overlap. Any chunk longer than
``max_lines`` is cut into overlapping line windows so that no chunk dwarfs the embedder's limit.
The chunker for a file is picked from a registry keyed by file suffix, not by type checks.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from cortex.errors import ConfigError


@dataclass(frozen=True)
class Chunk:
    """One retrievable piece of a file (or of a free-standing document).

    ``start_line``/``end_line`` are 1-based and inclusive. ``kind`` is one of ``function``,
    ``class``, ``method``, ``module`` (top-level code between definitions), ``section``
    (Markdown), ``lines`` (plain text) or ``document`` (added through the LangChain store).
    ``name`` is the qualified symbol (``Registry.register``) or the heading path.
    """

    id: str
    path: str
    start_line: int
    end_line: int
    kind: str
    name: str
    text: str
    file_hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Chunk":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    @property
    def citation(self) -> str:
        """``path:L12-L40`` (or ``path`` for documents without lines)."""
        return f"{self.path}:L{self.start_line}-L{self.end_line}" if self.start_line else self.path

    def embed_text(self) -> str:
        """What the dense encoder sees: where the chunk lives and what it is called, then its text.

        The path and symbol carry most of the meaning a question about code refers to, and they
        sit first so truncation at the encoder's limit never drops them. Free-standing documents
        (added through LangChain) are embedded as they are, as LangChain users expect.
        """
        if self.kind == "document":
            return self.text
        head = f"{self.path} {self.kind} {self.name}".strip()
        return f"{head}\n{self.text}"


def chunk_id(path: str, start: int, end: int, text: str, kind: str = "", name: str = "") -> str:
    """Stable id from where a chunk is, what it is and what it says (16 hex chars).

    An unchanged function in an edited file keeps its id, so it is not embedded again.
    """
    key = "\x00".join((path, str(start), str(end), kind, name, text))
    return hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass
class ChunkingConfig:
    """How files are cut into chunks.

    Args:
        max_lines: longest chunk kept whole; longer ones are cut into windows.
        window_lines: lines per window for plain text and for cut-up long chunks.
        overlap_lines: lines shared by consecutive windows (so a sentence cut at a border is whole in one).
        max_file_bytes: files larger than this are skipped and reported (generated or data files).
    """

    max_lines: int = 80
    window_lines: int = 40
    overlap_lines: int = 8
    max_file_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_lines", "window_lines", "max_file_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"chunking.{name}={getattr(self, name)} must be at least 1.")
        if not 0 <= self.overlap_lines < self.window_lines:
            raise ConfigError(
                f"chunking.overlap_lines={self.overlap_lines} must be in [0, window_lines={self.window_lines}); "
                "lower the overlap or raise window_lines."
            )


@dataclass(frozen=True)
class _Span:
    start: int  # 1-based inclusive
    end: int
    kind: str
    name: str


class Chunker:
    """Base: turn a file's text into spans; :meth:`chunk` makes them chunks and cuts long ones."""

    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ChunkingConfig):
        self.config = config

    def spans(self, lines: list[str]) -> list[_Span]:
        """Spans of the file in order; the base class cuts the whole file into windows."""
        return self._windows(1, len(lines), "lines", "")

    def _windows(self, start: int, end: int, kind: str, name: str) -> list[_Span]:
        cfg = self.config
        if end - start + 1 <= cfg.max_lines and kind != "lines":
            return [_Span(start, end, kind, name)]
        step = cfg.window_lines - cfg.overlap_lines
        out, s = [], start
        while True:
            e = min(s + cfg.window_lines - 1, end)
            out.append(_Span(s, e, kind, name))
            if e >= end:
                return out
            s += step

    def chunk(self, path: str, text: str, file_hash: str) -> list[Chunk]:
        """Chunks of one file, in file order, blank-only spans dropped."""
        lines = text.splitlines()
        out = []
        for sp in self.spans(lines):
            for piece in self._windows(sp.start, sp.end, sp.kind, sp.name) if sp.kind != "lines" else [sp]:
                body = "\n".join(lines[piece.start - 1 : piece.end])
                if not body.strip():
                    continue
                out.append(
                    Chunk(chunk_id(path, piece.start, piece.end, body, piece.kind, piece.name), path, piece.start, piece.end,
                          piece.kind, piece.name, body, file_hash)
                )
        return out


class TextChunker(Chunker):
    """Any text: windows of ``window_lines`` lines overlapping by ``overlap_lines``."""


class PythonChunker(Chunker):
    """Python by top-level function and class; a class longer than ``max_lines`` by method.

    Code between definitions (imports, constants, the module docstring) becomes ``module`` spans.
    A file that does not parse falls back to line windows.
    """

    suffixes = (".py", ".pyi")
    _DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)

    @staticmethod
    def _first_line(node: ast.AST) -> int:
        decorators = getattr(node, "decorator_list", [])
        return min([node.lineno, *(d.lineno for d in decorators)])

    def _class_spans(self, node: ast.ClassDef) -> list[_Span]:
        start, end = self._first_line(node), node.end_lineno or node.lineno
        if end - start + 1 <= self.config.max_lines:
            return [_Span(start, end, "class", node.name)]
        methods = [n for n in node.body if isinstance(n, self._DEFS)]
        spans, cursor = [], start
        for m in methods:
            m_start = self._first_line(m)
            if m_start > cursor:  # the class header, docstring and attributes before this method
                spans.append(_Span(cursor, m_start - 1, "class", node.name))
            kind = "class" if isinstance(m, ast.ClassDef) else "method"
            spans.append(_Span(m_start, m.end_lineno or m_start, kind, f"{node.name}.{m.name}"))
            cursor = (m.end_lineno or m_start) + 1
        if cursor <= end:
            spans.append(_Span(cursor, end, "class", node.name))
        return spans

    def spans(self, lines: list[str]) -> list[_Span]:
        try:
            tree = ast.parse("\n".join(lines))
        except (SyntaxError, ValueError):
            return super().spans(lines)
        spans, cursor = [], 1
        for node in tree.body:
            if not isinstance(node, self._DEFS):
                continue
            start, end = self._first_line(node), node.end_lineno or node.lineno
            if start > cursor:
                spans.append(_Span(cursor, start - 1, "module", ""))
            if isinstance(node, ast.ClassDef):
                spans.extend(self._class_spans(node))
            else:
                spans.append(_Span(start, end, "function", node.name))
            cursor = end + 1
        if cursor <= len(lines):
            spans.append(_Span(cursor, len(lines), "module", ""))
        return spans


class MarkdownChunker(Chunker):
    """Markdown by heading (any level), named by the heading path ``Title > Section``.

    Headings inside fenced code blocks are not headings.
    """

    suffixes = (".md", ".markdown", ".rst.md")
    _HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
    _FENCE = re.compile(r"^\s*(```|~~~)")

    def spans(self, lines: list[str]) -> list[_Span]:
        starts: list[tuple[int, str]] = []
        stack: list[tuple[int, str]] = []
        in_fence = False
        for i, line in enumerate(lines, start=1):
            if self._FENCE.match(line):
                in_fence = not in_fence
                continue
            m = None if in_fence else self._HEADING.match(line)
            if m:
                level = len(m.group(1))
                stack = [(lv, t) for lv, t in stack if lv < level] + [(level, m.group(2))]
                starts.append((i, " > ".join(t for _, t in stack)))
        if not starts or starts[0][0] > 1:
            starts.insert(0, (1, ""))
        spans = []
        for j, (s, name) in enumerate(starts):
            e = starts[j + 1][0] - 1 if j + 1 < len(starts) else len(lines)
            if e >= s:
                spans.append(_Span(s, e, "section", name))
        return spans


CHUNKERS: dict[str, type[Chunker]] = {
    suffix: cls for cls in (PythonChunker, MarkdownChunker) for suffix in cls.suffixes
}


def chunker_for(path: str, config: ChunkingConfig) -> Chunker:
    """The chunker registered for ``path``'s suffix, else :class:`TextChunker`."""
    lower = path.lower()
    for suffix, cls in CHUNKERS.items():
        if lower.endswith(suffix):
            return cls(config)
    return TextChunker(config)


def chunk_file(path: str, text: str, file_hash: str, config: ChunkingConfig | None = None) -> list[Chunk]:
    """Chunks of one file's text (``path`` is the posix path relative to the indexed root)."""
    return chunker_for(path, config or ChunkingConfig()).chunk(path, text, file_hash)

from __future__ import annotations

import pytest

from cortex.errors import ConfigError
from cortex.retrieval.chunking import ChunkingConfig, chunk_file, chunk_id

from .conftest import GUIDE_MD, NOTES_TXT, REGISTRY_PY


def spans(chunks):
    return [(c.kind, c.name, c.start_line, c.end_line) for c in chunks]


def test_python_by_function_and_class():
    chunks = chunk_file("pkg/registry.py", REGISTRY_PY, "h")
    # Line numbers read off REGISTRY_PY by hand; the blank gaps between definitions (12-13, 22-23)
    # are module spans with no text and are dropped.
    assert spans(chunks) == [
        ("module", "", 1, 6),
        ("function", "validate_name", 7, 11),
        ("function", "atomic_write", 14, 21),
        ("class", "Registry", 24, 34),
    ]
    assert chunks[1].text.splitlines()[0] == "def validate_name(name):"
    assert all(c.file_hash == "h" for c in chunks)
    assert chunks[1].citation == "pkg/registry.py:L7-L11"


def test_large_class_splits_by_method_and_decorators_belong_to_their_function():
    src = "\n".join([
        "import functools",            # 1
        "",                            # 2
        "@functools.lru_cache",        # 3
        "def cached(x):",              # 4
        "    return x",                # 5
        "",                            # 6
        "class Big:",                  # 7
        '    """Doc."""',              # 8
        "    size = 5",                # 9
        "",                            # 10
        "    def a(self):",            # 11
        "        return 1",            # 12
        "",                            # 13
        "    @property",               # 14
        "    def b(self):",            # 15
        "        return 2",            # 16
        "    tail = 7",                # 17
    ])
    chunks = chunk_file("m.py", src, "h", ChunkingConfig(max_lines=5, window_lines=4, overlap_lines=1))
    assert spans(chunks) == [
        ("module", "", 1, 2),
        ("function", "cached", 3, 5),
        ("class", "Big", 7, 10),       # header, docstring, attributes (line 6 is the blank module gap, dropped)
        ("method", "Big.a", 11, 12),
        ("method", "Big.b", 14, 16),   # starts at its decorator
        ("class", "Big", 17, 17),
    ]


def test_long_function_is_cut_into_overlapping_windows():
    body = "\n".join(f"    x{i} = {i}" for i in range(12))
    src = f"def long():\n{body}\n"  # 13 lines
    chunks = chunk_file("f.py", src, "h", ChunkingConfig(max_lines=5, window_lines=5, overlap_lines=2))
    # windows of 5 lines stepping by 3 over lines 1..13: 1-5, 4-8, 7-11, 10-13
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 5), (4, 8), (7, 11), (10, 13)]
    assert {c.name for c in chunks} == {"long"} and {c.kind for c in chunks} == {"function"}


def test_python_syntax_error_falls_back_to_lines():
    chunks = chunk_file("bad.py", "def broken(:\n    pass\n", "h")
    assert spans(chunks) == [("lines", "", 1, 2)]


def test_markdown_by_heading_ignores_headings_in_code():
    chunks = chunk_file("GUIDE.md", GUIDE_MD, "h")
    assert [(c.name, c.start_line, c.end_line) for c in chunks] == [
        ("Guide", 1, 4),
        ("Guide > Installing", 5, 8),
        ("Guide > Training a model", 9, 17),
        ("Guide > Troubleshooting", 18, 20),
    ]
    assert "# not a heading" in chunks[2].text


def test_text_windows_closed_form():
    cfg = ChunkingConfig(window_lines=7, overlap_lines=2)
    chunks = chunk_file("notes.txt", NOTES_TXT, "h", cfg)
    n, step = 23, 5
    starts = list(range(1, n - 7 + step + 1, step))  # 1, 6, 11, 16, 21
    assert [(c.start_line, c.end_line) for c in chunks] == [(s, min(s + 6, n)) for s in starts]
    assert all(c.kind == "lines" for c in chunks)


def test_ids_are_stable_and_depend_on_content():
    a = chunk_file("pkg/registry.py", REGISTRY_PY, "h1")
    b = chunk_file("pkg/registry.py", REGISTRY_PY, "h2")
    assert [c.id for c in a] == [c.id for c in b]  # same text at the same place: same id
    assert chunk_id("p", 1, 2, "x") != chunk_id("p", 1, 2, "y") != chunk_id("q", 1, 2, "y")


@pytest.mark.parametrize("kwargs, field", [
    ({"overlap_lines": 7, "window_lines": 7}, "overlap_lines"),
    ({"max_lines": 0}, "max_lines"),
    ({"max_file_bytes": 0}, "max_file_bytes"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ChunkingConfig(**kwargs)

"""Fixtures for retrieval tests: the real MiniLM (loaded once) and a tiny repository in tmp_path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REGISTRY_PY = '''\
"""A tiny registry of named things."""

import json
import os


def validate_name(name):
    """Refuse names that could escape their folder."""
    if "/" in name or name.startswith("."):
        raise ValueError(f"bad name {name!r}")
    return name


def atomic_write(path, text):
    """Write text to a temporary file, fsync it, then rename it over path."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Registry:
    """Names mapped to folders, stored as JSON."""

    def __init__(self, root):
        self.root = root

    def register(self, name, folder):
        """Add a named folder to the index."""
        index = self.load()
        index[validate_name(name)] = folder
        atomic_write(os.path.join(self.root, "index.json"), json.dumps(index))
'''

MATH_PY = '''\
def gaussian_kernel(x, y, lengthscale):
    """Squared exponential kernel between two points."""
    import math
    return math.exp(-((x - y) ** 2) / (2 * lengthscale ** 2))


def learning_rate_schedule(step, warmup, peak):
    """Linear warmup to the peak learning rate, then inverse square root decay."""
    if step < warmup:
        return peak * step / warmup
    return peak * (warmup / step) ** 0.5
'''

GUIDE_MD = '''\
# Guide

How to use the toolkit.

## Installing

Run pip install toolkit inside a virtual environment.

## Training a model

Call train() with a config file; checkpoints are written every epoch.

```python
# not a heading: a comment inside a code block
train("config.yaml")
```

## Troubleshooting

If the GPU runs out of memory, lower the batch size.
'''

NOTES_TXT = "\n".join(f"note line {i}: the weather on day {i} was {'rainy' if i % 3 else 'sunny'}" for i in range(1, 24))


def write_repo(root: Path) -> Path:
    """A small repository: two Python files, a Markdown guide, plain text, and three files to skip."""
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "registry.py").write_text(REGISTRY_PY)
    (root / "pkg" / "mathutil.py").write_text(MATH_PY)
    (root / "GUIDE.md").write_text(GUIDE_MD)
    (root / "notes.txt").write_text(NOTES_TXT + "\n")
    (root / "weights.bin").write_bytes(b"\x00\x01\x02binary" * 10)
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "big.log").write_text("x" * 5000)
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "registry.cpython-311.pyc").write_bytes(b"\x00pyc")
    return root


@pytest.fixture(scope="session")
def embedder():
    """The real packaged MiniLM, shared by all retrieval tests (loaded once: the process-wide default)."""
    from cortex.retrieval.embedder import default_embedder

    emb = default_embedder()
    emb.embed(["warm up"], warn=False)
    return emb


@pytest.fixture(scope="session")
def built(tmp_path_factory, embedder):
    """``(index, report)``: one index over the tiny repository, shared by tests that only read it."""
    from cortex.retrieval.chunking import ChunkingConfig
    from cortex.retrieval.index import CodeIndex

    tmp = tmp_path_factory.mktemp("built")
    index = CodeIndex.open(tmp / "idx", embedder, chunking=ChunkingConfig(max_file_bytes=4096))
    return index, index.update(write_repo(tmp / "repo"))


@pytest.fixture
def repo(tmp_path) -> Path:
    return write_repo(tmp_path / "repo")


def dedent(s: str) -> str:
    return textwrap.dedent(s)

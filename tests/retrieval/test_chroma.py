"""The chroma backend against a real ``chroma run`` server on loopback (started and stopped here).

The server is chromadb's own (``pip install chromadb``, in the dev extras). Each test module run
starts one on a free port with a temporary data folder and stops it at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

pytest.importorskip("chromadb")

from cortex.cli.main import main  # noqa: E402
from cortex.errors import ConfigError, RetrievalError  # noqa: E402
from cortex.retrieval.index import CodeIndex  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = ["how do I install cortex", "linear probes for concept packs", "train a lens pack on a model",
             "which layer does the probe read", "run the test suite"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChromaServer:
    """``chroma run`` on 127.0.0.1:``port`` storing into ``path``; start/stop/kill are blocking."""

    def __init__(self, path: Path, port: int):
        self.path, self.port, self.proc = path, port, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}  # nothing leaves the machine
        cmd = [sys.executable, "-c", "import sys; from chromadb.cli.cli import app; sys.argv[0] = 'chroma'; app()",
               "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chroma run exited with {self.proc.returncode}")
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"chroma run did not answer on {self.url} within {timeout} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    server = ChromaServer(tmp_path_factory.mktemp("chroma-data"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def docs_tree(tmp_path_factory) -> Path:
    """This repository's docs (docs/ and README.md), copied so the index root holds nothing else."""
    root = tmp_path_factory.mktemp("docs-tree")
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "README.md", root / "README.md")
    return root


def top_ids(index: CodeIndex, mode: str, k: int = 5) -> list[list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [[h.chunk.id for h in index.search(q, k=k, mode=mode).hits] for q in QUESTIONS]


def test_chroma_server_backs_the_index_like_the_embedded_backend(chroma_server, docs_tree, embedder, tmp_path):
    embedded = CodeIndex.open(tmp_path / "embedded", embedder)
    embedded.update(docs_tree)
    served = CodeIndex.open(tmp_path / "served", embedder, backend="chroma", backend_options={"url": chroma_server.url})
    report = served.update(docs_tree)
    assert report.chunks_embedded == len(embedded) == len(served) > 10
    assert type(served.collection.backend).__name__ == "ChromaBackend"
    # Chroma's HNSW is approximate, but on a few dozen vectors it must find exactly what exact search finds
    assert top_ids(served, "dense") == top_ids(embedded, "dense")
    assert top_ids(served, "hybrid") == top_ids(embedded, "hybrid")
    pointer = json.loads((tmp_path / "served" / "collection.json").read_text())
    assert pointer["backend"]["url"] == chroma_server.url and pointer["backend"]["name"] == "chroma"

    # reopened from the folder alone (the URL is in the pointer), a deleted file leaves the server at commit
    again = CodeIndex.open(tmp_path / "served", embedder, create=False)
    assert top_ids(again, "dense") == top_ids(embedded, "dense")
    (docs_tree / "README.md").rename(docs_tree / "README.keep")
    try:
        report = again.update(docs_tree)
        embedded.update(docs_tree)
    finally:
        (docs_tree / "README.keep").rename(docs_tree / "README.md")
    assert report.removed == ["README.md"] and len(again) == len(embedded)
    assert again.collection.backend.server.call("count", lambda c: c.count()) == len(again)
    assert top_ids(again, "dense") == top_ids(embedded, "dense")


def test_rag_cli_on_a_chroma_server(chroma_server, docs_tree, tmp_path, capsys):
    idx = str(tmp_path / "cli-idx")
    code = main(["rag", "index", str(docs_tree), "--index-dir", idx, "--backend", "chroma", "--url", chroma_server.url])
    out = capsys.readouterr().out
    assert code == 0 and "chroma" in out, out
    code = main(["rag", "query", "linear probes for concept packs", "--index-dir", idx, "--url", chroma_server.url,
                 "--json", "-k", "3"])
    hits = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(hits) == 3 and hits[0]["path"] == "docs/packs.md"
    code = main(["rag", "context", "train a lens pack", "--index-dir", idx, "--json", "--budget", "400"])
    ctx = json.loads(capsys.readouterr().out)
    assert code == 0 and ctx["citations"] and ctx["tokens"] <= 400
    code = main(["rag", "query", "x", "--index-dir", idx, "--backend", "embedded"])
    assert code == 1 and "chroma" in capsys.readouterr().err


class CountingEmbedder:
    """LangChain's deterministic fake embedding behind cortex's embedder protocol, counting embedded texts."""

    def __init__(self):
        from langchain_core.embeddings import DeterministicFakeEmbedding

        from cortex.retrieval.langchain import LangChainEmbedder

        self.inner = LangChainEmbedder(DeterministicFakeEmbedding(size=32))
        self.id, self.dim, self.max_tokens = self.inner.id, self.inner.dim, self.inner.max_tokens
        self.embedded = 0

    def embed(self, texts, warn=True):
        self.embedded += len(texts)
        return self.inner.embed(texts, warn)

    def embed_queries(self, texts, warn=True):
        return self.inner.embed_queries(texts, warn)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


def test_server_down_mid_index_then_resume_without_re_embedding(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(150):  # 150 one-chunk files: three embedding batches of 64
        (root / f"note{i:03d}.txt").write_text(f"note {i}: the value of item {i} is {i * 7 % 13}\n")
    server = ChromaServer(tmp_path / "data", free_port())
    server.start()
    options = {"url": server.url, "retries": 2, "backoff_s": 0.1}
    try:
        emb = CountingEmbedder()
        index = CodeIndex.open(tmp_path / "idx", emb, backend="chroma", backend_options=options)

        def kill_after_first_batch(stage, done, total):
            if stage == "embed" and done == 64:
                server.stop(signal.SIGKILL)

        with pytest.raises(RetrievalError, match=f"Cannot reach the Chroma server at {server.url}.*chroma run"):
            index.update(root, progress=kill_after_first_batch)
        assert not (tmp_path / "idx" / "collection.json").exists()  # nothing committed locally

        server.start()  # same data folder and port: the first batch is still there
        emb = CountingEmbedder()
        index = CodeIndex.open(tmp_path / "idx", emb, backend="chroma", backend_options=options)
        report = index.update(root)
        assert report.chunks_recovered == 64 and report.chunks_embedded == emb.embedded == 150 - 64
        assert len(index) == 150
        for path in ("note003.txt", "note117.txt"):  # one recovered, one embedded after the restart
            chunk = next(c for c in index.chunks.values() if c.path == path)
            # the fake embedding hashes the whole text: a chunk's own text finds exactly that chunk
            assert index.search(chunk.embed_text(), k=1, mode="dense").hits[0].chunk.path == path
    finally:
        server.stop()
    with pytest.raises(RetrievalError, match="Cannot reach the Chroma server"):
        CodeIndex.open(tmp_path / "idx", emb, create=False, backend_options=options).search("note 1", mode="dense")


def test_chroma_settings_are_checked(tmp_path):
    from cortex.retrieval.chroma import ChromaConfig

    with pytest.raises(ConfigError, match="url.*collection.*retries"):
        ChromaConfig("localhost:8000", collection="x", retries=0)
    with pytest.raises(ConfigError, match="--url"):
        CodeIndex.open(tmp_path / "i", CountingEmbedder(), backend="chroma")
    with pytest.raises(ConfigError, match="embedded backend takes no options"):
        CodeIndex.open(tmp_path / "j", CountingEmbedder(), backend_options={"url": "http://127.0.0.1:1"})

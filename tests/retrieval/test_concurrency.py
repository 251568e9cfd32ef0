"""Many writers on one index folder: threads, asyncio tasks and processes lose and duplicate nothing.

A small foreign embedder (the deterministic fake, 8 dims) keeps this fast: what is tested is the
commit protocol of :mod:`cortex.retrieval.collection`, not the encoder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

from filelock import FileLock
from langchain_core.embeddings import DeterministicFakeEmbedding

from cortex.retrieval.collection import LOCK_FILE, POINTER, Collection
from cortex.retrieval.langchain import CortexVectorStore

DIM = 8

WORKER = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from langchain_core.embeddings import DeterministicFakeEmbedding
    import cortex.retrieval.collection as collection
    from cortex.retrieval.langchain import CortexVectorStore

    mode, folder, tag, batches, per_batch, signal_file = sys.argv[1:7]
    batches, per_batch = int(batches), int(per_batch)
    store = CortexVectorStore.open(folder, DeterministicFakeEmbedding(size=8))
    if mode == "hang":
        # Stop inside commit, after the new generation's files are written and before the pointer
        # switches to them, and tell the parent, which then kills us with SIGKILL.
        def stop_before_pointer(path, data):
            if Path(path).name == collection.POINTER:
                Path(signal_file).touch()
                time.sleep(600)
        collection.atomic_write_json = stop_before_pointer
        store.add_texts([f"{tag} doomed {i}" for i in range(per_batch)], ids=[f"{tag}-doomed-{i}" for i in range(per_batch)])
    elif mode == "loop":  # commit batch after batch until killed
        b = 0
        while True:
            store.add_texts([f"{tag} {b} {i}" for i in range(per_batch)], ids=[f"{tag}-{b}-{i}" for i in range(per_batch)])
            print(b, flush=True)
            b += 1
    else:  # rounds: wait for the parent's go file, write with the others at once, say done
        for r in range(3):
            while not os.path.exists(f"{signal_file}{r}"):
                time.sleep(0.01)
            for b in range(batches):
                ids = [f"{tag}r{r}-{b}-{i}" for i in range(per_batch)]
                meta = [{"tag": tag, "round": r, "b": b}] * per_batch
                store.add_texts([f"{tag} round {r} batch {b} doc {i}" for i in range(per_batch)], meta, ids=ids)
            store.delete([f"{tag}r{r}-0-{i}" for i in range(per_batch)])  # deletes interleave with the others' adds
            Path(f"{signal_file}{r}.{tag}.done").touch()
''')


def _worker(mode: str, folder, tag: str, signal_file, batches: int = 0, per_batch: int = 2, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, mode, str(folder), tag, str(batches), str(per_batch),
                             str(signal_file)], **kw)


def _reopen(folder) -> CortexVectorStore:
    """A fresh store on the folder: Collection.open refuses records and vectors that disagree."""
    return CortexVectorStore.open(folder, DeterministicFakeEmbedding(size=DIM))


def test_concurrent_aadd_texts_and_thread_writers_lose_nothing(tmp_path):
    folder = tmp_path / "vs"
    store, other = _reopen(folder), _reopen(folder)  # two objects on one folder in one process
    expected: set[str] = set()
    for trial in range(4):
        async def eight_adds(trial=trial):
            return await asyncio.gather(*[
                store.aadd_texts([f"t{trial} task {j} doc {i}" for i in range(3)], [{"task": j}] * 3)
                for j in range(8)])

        with ThreadPoolExecutor(2) as pool:  # meanwhile the other object adds and deletes from threads
            side = [pool.submit(other.add_texts, [f"t{trial} side {j}"], ids=[f"t{trial}-side-{j}"]) for j in range(4)]
            ids = [i for batch in asyncio.run(eight_adds()) for i in batch]
            [f.result() for f in side]
            pool.submit(other.delete, [f"t{trial}-side-0"]).result()
        expected |= set(ids) | {f"t{trial}-side-{j}" for j in range(1, 4)}
        assert len(ids) == len(set(ids)) == 24
        reopened = _reopen(folder)
        assert set(reopened.index.chunks) == expected, f"trial {trial}"
        # Both long-lived objects see everything committed, by each other too
        assert {d.id for d in store.get_by_ids(sorted(expected))} == expected
        assert len(other.similarity_search("task", k=1000)) == len(expected)


def test_processes_adding_at_once_lose_nothing(tmp_path):
    folder, go = tmp_path / "vs", tmp_path / "go"
    reader = _reopen(folder)
    reader.add_texts(["seed document"], ids=["seed"])
    expected = {"seed"}
    procs = {f"p{p}": _worker("add", folder, f"p{p}", go, batches=4, per_batch=3) for p in range(4)}
    for r in range(3):  # three rounds of four processes writing at once (each started once: imports are slow)
        (tmp_path / f"go{r}").touch()
        deadline = time.monotonic() + 180
        while not all((tmp_path / f"go{r}.{tag}.done").exists() for tag in procs):
            assert all(p.poll() in (None, 0) for p in procs.values()) and time.monotonic() < deadline
            time.sleep(0.02)
        expected |= {f"{tag}r{r}-{b}-{i}" for tag in procs for b in range(1, 4) for i in range(3)}
        assert set(_reopen(folder).index.chunks) == expected, f"round {r}"
        assert {d.id for d in reader.get_by_ids(sorted(expected))} == expected  # an old reader sees the last commit
    assert all(p.wait(timeout=60) == 0 for p in procs.values())
    got = reader.similarity_search("batch", k=100, filter={"tag": "p3", "round": 2, "b": 3})
    assert sorted(d.id for d in got) == [f"p3r2-3-{i}" for i in range(3)]


def test_writer_killed_mid_commit_leaves_last_commit_and_lock_free(tmp_path):
    folder, ready = tmp_path / "vs", tmp_path / "ready"
    first = _reopen(folder)
    first.add_texts([f"kept {i}" for i in range(5)], ids=[f"kept-{i}" for i in range(5)])
    pointer_before = (folder / POINTER).read_bytes()

    proc = _worker("hang", folder, "k", ready, per_batch=3)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "worker did not reach the commit"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # holding the lock, new generation on disk, pointer not switched
    proc.wait(timeout=30)
    orphans = sorted(p.name for p in folder.iterdir() if ".g2." in p.name)
    assert orphans, "the killed commit should have left its generation's files"

    assert (folder / POINTER).read_bytes() == pointer_before
    survivor = _reopen(folder)
    assert sorted(survivor.index.chunks) == [f"kept-{i}" for i in range(5)]
    lock = FileLock(str(folder / LOCK_FILE))
    lock.acquire(timeout=5)  # raises Timeout if the dead writer's lock were still held
    assert lock.is_locked  # the kernel dropped the dead writer's lock
    lock.release()
    first.add_texts(["after the crash"], ids=["after"])  # a later writer proceeds, building on the last commit
    assert sorted(_reopen(folder).index.chunks) == sorted([f"kept-{i}" for i in range(5)] + ["after"])
    names = {p.name for p in folder.iterdir()}
    assert not any(n.endswith(".tmp") for n in names)
    # The crashed generation 2 was written over by the next commit; nothing older than its predecessor stays
    assert json.loads((folder / POINTER).read_text())["generation"] == 2
    assert {int(m.group(1)) for n in names if (m := re.search(r"\.g(\d+)\.", n))} <= {1, 2}


def test_writer_killed_at_a_random_moment_leaves_a_readable_index(tmp_path):
    folder = tmp_path / "vs"
    for attempt in range(2):
        proc = _worker("loop", folder, f"a{attempt}", tmp_path / "unused", per_batch=4, stdout=subprocess.PIPE, text=True)
        done = int(proc.stdout.readline())  # at least one commit landed
        time.sleep(0.05 + 0.1 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        chunks = _reopen(folder).index.chunks  # opens: records and vectors agree
        mine = [i for i in chunks if i.startswith(f"a{attempt}-")]
        assert len(mine) % 4 == 0 and len(mine) >= 4 * (done + 1)  # whole batches only
        coll = Collection.open(folder, _reopen(folder).index.collection.embedder, kind="code-index", create=False)
        assert len(coll) == len(coll.backend)

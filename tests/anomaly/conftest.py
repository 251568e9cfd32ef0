"""Fixtures for anomaly tests: synthetic worker streams and one small trained autoencoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r.as_dict() if hasattr(r, "as_dict") else r) + "\n")
    return path


@pytest.fixture(scope="session")
def streams():
    from cortex.anomaly.synthetic import make_streams

    return make_streams(3, 420, 420, events_per_worker=2, kinds=("error_burst", "dropout"), seed=11)


@pytest.fixture(scope="session")
def trained(streams):
    import torch

    from cortex.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector

    torch.set_num_threads(1)
    return AutoencoderDetector.fit(streams.history, AutoencoderConfig(window=5, hidden_size=13, latent_size=4,
                                                                      epochs=25, seed=0))

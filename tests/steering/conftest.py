"""Fixtures for steering tests: a tiny trained demo (char LM + kind lens pack) and tiny random Qwen2 models.

The demo is built once per test session into its own registry home and only ever read by tests, so test
order does not matter; tests that change a pack work on a copy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from cortex.hub.registry import Registry
from tests.hub.conftest import make_tiny_qwen

DEMO_SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "steering_demo.py"

TINY_DEMO = dict(name="tiny-kinds", chars_per_kind=16_000, doc_chars=300, hidden_size=21, heads=3, layers=3,
                 steps=25, batch_size=8, block_size=96, probe_docs=24, probe_chars=72, warmup=8, probe_steps=80)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread avoids OpenMP spin-waiting on a shared 2-core machine (50x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_steering_demo() -> ModuleType:
    """``examples/steering_demo.py`` as the module ``steering_demo`` (examples/ is not a package, and the
    demo is not part of cortex); loaded once, then taken from ``sys.modules``."""
    if "steering_demo" not in sys.modules:
        spec = importlib.util.spec_from_file_location("steering_demo", DEMO_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["steering_demo"] = module   # dataclasses look their module up while the file runs
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["steering_demo"]
            raise
    return sys.modules["steering_demo"]


@pytest.fixture(scope="session")
def steering_demo() -> ModuleType:
    """The example module that builds the demo (corpus, judge, build_demo, DEFINITIONS)."""
    return load_steering_demo()


@pytest.fixture(scope="session")
def demo(tmp_path_factory, steering_demo):
    """``(registry home, DemoArtifacts)`` of a tiny demo: char LM, concept pack, lens pack with vectors."""
    DemoSettings, build_demo = steering_demo.DemoSettings, steering_demo.build_demo

    home = tmp_path_factory.mktemp("steering-demo-home")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        artifacts = build_demo(DemoSettings(**TINY_DEMO), registry=Registry(home))
    finally:
        torch.set_num_threads(before)
    return home, artifacts


@pytest.fixture
def demo_loaded(demo):
    """Fresh ``(registry, loaded model, lens pack, vectors)`` of the demo for one test."""
    from cortex.hub.loading import load_model
    from cortex.lenses.lens_pack import load_lens_pack
    from cortex.steering.vectors import load_vectors, pack_folder

    home, art = demo
    reg = Registry(home)
    return reg, load_model(art.model, registry=reg), load_lens_pack(art.lens_pack, registry=reg), \
        load_vectors(pack_folder(art.lens_pack, registry=reg))


@pytest.fixture(scope="session")
def text_detector(steering_demo):
    """The packaged MiniLM as a text-level detector of the demo's two concepts (stateless, read-only)."""
    from cortex.steering.divergence import TextConceptDetector

    DEFINITIONS = steering_demo.DEFINITIONS

    return TextConceptDetector({
        "python": [DEFINITIONS["python"], "x = foo(bar)\nreturn x", "def get(self, key):\n    return self.data[key]"],
        "prose": [DEFINITIONS["prose"], "A sentence written in plain English.",
                  "People talk about what happened, where and why, in words."],
    })


@pytest.fixture
def tiny_qwen(tmp_path):
    """A tiny random Qwen2 causal LM (hidden 32, 2 layers) loaded through cortex."""
    from cortex.hub.loading import load_model

    return load_model(make_tiny_qwen(tmp_path / "qwen", seed=3))


def linear_pack(loaded, probes: dict[int, dict[str, "torch.nn.Module"]], primary: dict[str, int]):
    """A lens pack in memory from probes of one kind ``{layer: {concept: probe}}`` (one normalizer per layer)."""
    from cortex.lenses.lens_pack import FORMAT, FORMAT_VERSION, LayerProbes, LensPack, model_identity
    from cortex.lenses.probes import stack_tensors

    name, revision = model_identity(loaded)
    layers = {}
    for layer, by_concept in probes.items():
        order = sorted(by_concept)
        first = by_concept[order[0]]
        layers[layer] = LayerProbes(layer=layer, kind=first.kind, order=order,
                                    tensors=stack_tensors([by_concept[c].to_tensors() for c in order]),
                                    input_mean=first.input_mean.clone(), input_std=first.input_std.clone())
    d = next(iter(next(iter(probes.values())).values())).input_dim
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": "test-pack",
            "model": {"name": name, "revision": revision}, "concept_pack": {"name": "none", "version": "0"},
            "hidden_size": d, "layers": sorted(probes), "concepts": dict(primary), "probe": {"kind": "linear"}}
    return LensPack(info, layers)


def random_linear_probe(d: int, seed: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
    """A linear probe with random weights and the given (or random) input statistics."""
    from cortex.lenses.probes import LinearProbe

    g = torch.Generator().manual_seed(seed)
    probe = LinearProbe(d)
    probe.linear.weight.data = torch.randn(1, d, generator=g)
    probe.linear.bias.data = torch.randn(1, generator=g)
    mean = torch.randn(d, generator=g) if mean is None else mean
    std = (torch.rand(d, generator=g) + 0.5) if std is None else std
    return probe.set_normalizer(mean, std).eval()


@pytest.fixture
def demo_home(demo) -> Path:
    return demo[0]

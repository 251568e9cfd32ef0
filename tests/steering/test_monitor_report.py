"""Monitored generation and its reports, on the demo char LM and on a tiny random Qwen2."""

from __future__ import annotations

import json
import statistics
from html.parser import HTMLParser

import pytest
import torch

from cortex.errors import ConfigError, PackError
from cortex.steering.autonomic import Bound
from cortex.steering.divergence import DivergenceSettings
from cortex.steering.monitor import MonitorResult, MonitorSettings, SteerRequest, run_monitor
from cortex.steering.report import render_html, visible, write_report
from tests.steering.conftest import linear_pack, random_linear_probe


class _Cells(HTMLParser):
    """Collects the heatmap's token headers, intervention markers and divergence cells."""

    def __init__(self):
        super().__init__()
        self.tokens: list[tuple[int, str]] = []
        self.ctl = 0
        self.div = 0
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "th" and a.get("class") == "tok":
            self.tokens.append((int(a["data-i"]), a["data-token"]))
        if tag == "td" and a.get("class") == "ctl":
            self.ctl += 1
        if tag == "td" and a.get("class") == "div":
            self.div += 1


def _special_free(tokens: list[str], tokenizer) -> str:
    specials = set(tokenizer.all_special_tokens)
    return "".join(t for t in tokens if t not in specials)


def test_monitor_timeline_steering_bounds_divergence_and_reports(demo_loaded, text_detector, tmp_path):
    reg, loaded, pack, vectors = demo_loaded
    settings = MonitorSettings(max_new_tokens=30, top_k=3, divergence=DivergenceSettings(window=12, stride=6,
                                                                                           threshold=0.3))
    r = run_monitor(loaded, pack, "def load(self, path):\n", steer=[SteerRequest("prose", 0.4)],
                    bounds=[Bound.parse("python<=0.3")], vectors=vectors, opposites=vectors.opposites,
                    detector=text_detector, settings=settings)
    T = len(r.tokens)
    assert T == len(r.token_ids) == len(r.scores) == len(r.top_k) == 30
    assert r.concepts == ["prose", "python"] and r.layers == pack.concepts()
    assert _special_free(r.tokens, loaded.tokenizer) == r.text
    assert len(r.prompt_tokens) == len(r.prompt_scores) == len("def load(self, path):\n")
    for row, top in zip(r.scores, r.top_k):
        assert len(top) == 2 and top[0][1] >= top[1][1]
        assert {c: s for c, s in top} == pytest.approx(dict(zip(r.concepts, row)), abs=1e-4)
    assert r.steering == [{"concept": "prose", "strength": 0.4, "mode": "add", "layer": pack.concepts()["prose"],
                           "schedule": "constant"}]
    assert r.divergence is not None and len(r.divergence["windows"]) >= 4
    # JSON round trip
    back = MonitorResult.from_dict(json.loads(r.to_json()))
    assert back == r
    # reports
    paths = write_report(r, tmp_path / "out")
    page = paths.html.read_text(encoding="utf-8")
    cells = _Cells()
    cells.feed(page)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "src=" not in page and "href=" not in page
    assert [t for _, t in cells.tokens] == r.tokens and [i for i, _ in cells.tokens] == list(range(T))
    assert cells.ctl == len({i["step"] for i in r.interventions})
    flagged = {t for s in r.divergence["spans"] for t in range(s["start"], s["end"])}
    assert cells.div == len(flagged)
    png = paths.png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(paths.png)
    assert img.shape[1] > img.shape[0] > 100
    assert json.loads(paths.json.read_text())["tokens"] == r.tokens


def test_steering_below_the_read_layer_moves_the_reading(demo_loaded):
    reg, loaded, pack, vectors = demo_loaded
    read_layer = pack.concepts()["prose"]
    means = {}
    for s in (-1.0, 0.0, 1.0):
        r = run_monitor(loaded, pack, "The value of the ", steer=[SteerRequest("prose", s)], vectors=vectors,
                        settings=MonitorSettings(max_new_tokens=16, steer_layer=0, divergence=None))
        means[s] = statistics.fmean(row[r.concepts.index("prose")] for row in r.scores)
    assert read_layer > 0
    assert means[-1.0] < means[0.0] < means[1.0]


def test_monitor_on_tiny_qwen_without_stored_vectors(tiny_qwen, text_detector, tmp_path):
    """Everything runs unchanged on a real Qwen2: probe directions stand in for missing vectors."""
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(32, generator=g), torch.rand(32, generator=g) + 0.5
    probes = {0: {"python": random_linear_probe(32, 1, mean, std), "prose": random_linear_probe(32, 2, mean, std)},
              1: {"python": random_linear_probe(32, 3, mean, std), "prose": random_linear_probe(32, 4, mean, std)}}
    pack = linear_pack(tiny_qwen, probes, {"python": 0, "prose": 1})
    opposites = {"python": ["prose"], "prose": ["python"]}
    for mode in ("add", "contrast", "gradient", "remove"):
        r = run_monitor(tiny_qwen, pack, "hello qwen", steer=[SteerRequest("python", 0.5)],
                        bounds=[Bound.parse("prose<=0.2")], opposites=opposites, detector=text_detector,
                        settings=MonitorSettings(max_new_tokens=9, steer_mode=mode,
                                                 divergence=DivergenceSettings(window=4, stride=2)))
        assert len(r.tokens) == len(r.scores) == 9 and r.layers == {"prose": 1, "python": 0}
        assert all(rec["layer"] == 1 and rec["toward"] == "python" for rec in r.interventions)
        assert r.steering[0]["mode"] == mode
    assert sum(len(b._forward_hooks) for b in tiny_qwen.layers()) == 0
    paths = write_report(r, tmp_path)
    assert paths.png.stat().st_size > 1000
    with pytest.raises(ConfigError, match="opposite"):
        run_monitor(tiny_qwen, pack, "x", steer=[SteerRequest("python", 0.5)], opposites={},
                    settings=MonitorSettings(max_new_tokens=2, steer_mode="contrast"))
    with pytest.raises(PackError, match="Unknown concept"):
        run_monitor(tiny_qwen, pack, "x", steer=[SteerRequest("poetry", 0.5)],
                    settings=MonitorSettings(max_new_tokens=2))


def test_pack_for_another_model_is_refused(demo_loaded, tiny_qwen):
    reg, loaded, pack, vectors = demo_loaded
    with pytest.raises(PackError, match="was trained on model"):
        run_monitor(tiny_qwen, pack, "x", settings=MonitorSettings(max_new_tokens=2))


def test_request_parsing_and_visible_tokens():
    assert SteerRequest.parse("Honesty = -0.25") == SteerRequest("Honesty", -0.25)
    for bad in ("Honesty", "=0.2", "Honesty=much"):
        with pytest.raises(ConfigError):
            SteerRequest.parse(bad)
    with pytest.raises(ConfigError, match="steer_mode"):
        MonitorSettings(steer_mode="push")
    assert visible(" a\n\t") == "␣a↵⇥" and visible("") == "∅"


def test_html_escapes_hostile_tokens():
    r = MonitorResult(model="m", lens_pack="p", prompt="<b>", text="<script>x", tokens=["<script>", "x", '"'],
                      token_ids=[1, 2, 3], concepts=["a"], layers={"a": 0}, scores=[[0.1], [0.5], [0.9]],
                      top_k=[[("a", 0.1)], [("a", 0.5)], [("a", 0.9)]], prompt_tokens=["<b>"], prompt_scores=[[0.2]])
    page = render_html(r)
    assert "<script>" not in page and "&lt;script&gt;" in page
    cells = _Cells()
    cells.feed(page)
    assert [t for _, t in cells.tokens] == ["<script>", "x", '"']


def test_remove_mode_puts_the_lens_on_its_null_value(demo_loaded):
    reg, loaded, pack, vectors = demo_loaded
    layer = pack.concepts()["prose"]
    r = run_monitor(loaded, pack, "import os\n", steer=[SteerRequest("prose", 1.0)], vectors=vectors,
                    settings=MonitorSettings(max_new_tokens=8, steer_mode="remove", divergence=None))
    bias = float(pack.layers[layer].tensors["b"][pack.layers[layer].index("prose")])
    null = 1 / (1 + torch.exp(torch.tensor(-bias)))
    col = r.concepts.index("prose")
    assert all(abs(row[col] - float(null)) < 1e-3 for row in r.scores)


def test_opposites_and_descriptions_come_from_the_registered_concept_pack(demo_loaded, steering_demo):
    from cortex.steering.monitor import pack_descriptions, pack_opposites

    DEFINITIONS = steering_demo.DEFINITIONS

    reg, loaded, pack, vectors = demo_loaded
    assert pack_opposites(pack, None, registry=reg) == {"python": ["prose"], "prose": ["python"]}
    desc = pack_descriptions(pack, registry=reg)
    assert desc["python"][0] == DEFINITIONS["python"] and len(desc["python"]) == 4
    # without the concept pack (another registry) only stored opposites and humanized names remain
    from cortex.hub.registry import Registry

    empty = Registry(reg.home.parent / "elsewhere")
    assert pack_opposites(pack, vectors, registry=empty) == vectors.opposites
    assert pack_descriptions(pack, registry=empty) == {"prose": ["prose"], "python": ["python"]}


def test_monitor_with_mlp_probes_on_tiny_qwen(tiny_qwen):
    """The lens default (MLP probes): bank scoring, probe-gradient vectors for add, and bounds all work."""
    from cortex.lenses.probes import MLPClassifier

    torch.manual_seed(2)
    mean, std = torch.zeros(32), torch.ones(32)
    probes = {1: {c: MLPClassifier(32, hidden=8, dropout=0.0).set_normalizer(mean, std).eval()
                  for c in ("python", "prose")}}
    pack = linear_pack(tiny_qwen, probes, {"python": 1, "prose": 1})
    r = run_monitor(tiny_qwen, pack, "mlp lenses", steer=[SteerRequest("python", 0.3)],
                    bounds=[Bound.parse("prose<=0.01")], opposites={"prose": ["python"]},
                    settings=MonitorSettings(max_new_tokens=5, divergence=None))
    assert len(r.scores) == 5 and r.interventions
    assert all(rec["score_after"] <= rec["score_before"] + 1e-6 for rec in r.interventions)

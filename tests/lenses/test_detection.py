"""LensRunner and GenerationMonitor on a tiny causal LM: per-step scores equal a full forward pass."""

from __future__ import annotations

import torch

from cortex.hub.loading import load_model
from cortex.lenses.capture import ActivationCapture
from cortex.lenses.detection import GenerationMonitor, LensRunner
from cortex.lenses.lens_pack import FORMAT, FORMAT_VERSION, LayerProbes, LensPack, model_identity
from cortex.lenses.probes import LinearProbe, stack_tensors


def _pack_for(loaded, n: int = 5) -> LensPack:
    torch.manual_seed(3)
    d = loaded.model.config.hidden_size
    probes = [LinearProbe(d) for _ in range(n)]
    names = [f"K{i}" for i in range(n)]
    lp = LayerProbes(1, "linear", names, stack_tensors([p.to_tensors() for p in probes]), torch.zeros(d), torch.ones(d))
    name, rev = model_identity(loaded)
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"name": name, "revision": rev},
            "concept_pack": {"name": "c"}, "hidden_size": d, "layers": [1], "probe": {"kind": "linear"},
            "concepts": {n_: 1 for n_ in names}}
    return LensPack(info, {1: lp})


def test_generation_monitor_scores_each_new_token(tiny_qwen):
    loaded = load_model(tiny_qwen)
    runner = LensRunner(_pack_for(loaded), loaded)
    ids = loaded.tokenizer("abc", return_tensors="pt")["input_ids"]
    with GenerationMonitor(runner, top_k=5, mode="token") as mon:
        out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                                    pad_token_id=0)
    assert len(mon.steps) == 3                                  # prompt step + 2 cached steps (last token unscored)
    with ActivationCapture(loaded.layers(), [1]) as cap:
        loaded.model(out[:, :-1])
    full = runner.logits({1: cap.tokens(1)[0]})                  # (T, 5)
    for step, pos in zip(mon.steps, [ids.shape[1] - 1, ids.shape[1], ids.shape[1] + 1]):
        best = max(step, key=lambda c: c.logit)
        assert abs(best.logit - float(full[pos].max())) < 1e-4


def test_runner_detect_prefix_mode_matches_running_mean(tiny_qwen):
    loaded = load_model(tiny_qwen)
    runner = LensRunner(_pack_for(loaded), loaded)
    det = runner.detect("abcabc", top_k=5, mode="prefix")
    enc = loaded.tokenizer("abcabc", return_tensors="pt")["input_ids"]
    with ActivationCapture(loaded.layers(), [1]) as cap:
        loaded.model(enc)
    h = cap.tokens(1)[0]
    z = runner.logits({1: h[:3].mean(0, keepdim=True)})[0]
    got = {c.concept: c.logit for c in det.tokens[2].top}
    assert all(abs(got[n] - float(z[i])) < 1e-4 for i, n in enumerate(runner.names))
    assert len(det.sentence) == 5

"""Concept vectors: extraction against closed forms, contrast geometry, storage in lens packs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cortex.errors import InputError, PackError
from cortex.lenses.probes import MLPClassifier
from cortex.steering.vectors import (
    VECTORS_FILE,
    ConceptVector,
    VectorSet,
    attach_vectors,
    contrast_direction,
    load_vectors,
    mean_difference,
    pca_difference,
    probe_direction,
    save_vectors,
)
from tests.steering.conftest import random_linear_probe


def test_mean_difference_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(7, 5, generator=g) + 1.0, torch.randn(7, 5, generator=g)
    v = mean_difference("c", 2, pos, neg)
    p, n = pos.numpy().astype(np.float64), neg.numpy().astype(np.float64)
    want = (p - n).mean(0)
    want /= np.linalg.norm(want)
    origin = (p.mean(0) + n.mean(0)) / 2
    np.testing.assert_allclose(v.direction.numpy(), want, atol=1e-6)
    np.testing.assert_allclose(v.origin.numpy(), origin, atol=1e-6)
    assert v.pos_proj == pytest.approx(float(((p - origin) @ want).mean()), abs=1e-5)
    assert v.neg_proj == pytest.approx(float(((n - origin) @ want).mean()), abs=1e-5)
    assert v.pos_proj > 0 > v.neg_proj and v.layer == 2 and v.method == "mean_diff"
    # unpaired: class means of different-sized sets
    u = mean_difference("c", 0, pos[:4], neg, paired=False)
    want_u = p[:4].mean(0) - n.mean(0)
    np.testing.assert_allclose(u.direction.numpy(), want_u / np.linalg.norm(want_u), atol=1e-6)
    with pytest.raises(InputError, match="pairs"):
        mean_difference("c", 0, pos[:4], neg)


def test_pca_difference_is_top_eigenvector_of_difference_second_moment():
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(11, generator=g), dim=0)
    scale = torch.rand(13, 1, generator=g) + 0.5
    neg = torch.randn(13, 11, generator=g)
    pos = neg + scale * u + 0.05 * torch.randn(13, 11, generator=g)
    v = pca_difference("c", 1, pos, neg)
    D = (pos - neg).numpy().astype(np.float64)
    w, vecs = np.linalg.eigh(D.T @ D)
    top = vecs[:, -1] * np.sign(D.mean(0) @ vecs[:, -1])
    np.testing.assert_allclose(v.direction.numpy(), top, atol=1e-5)
    assert float(v.direction @ u) > 0.99


def test_probe_direction_of_linear_probe_is_w_over_sigma():
    probe = random_linear_probe(7, seed=2)
    v = probe_direction("c", 0, probe)
    w = probe.linear.weight.detach()[0].numpy().astype(np.float64) / probe.input_std.numpy()
    np.testing.assert_allclose(v.direction.numpy(), w / np.linalg.norm(w), atol=1e-6)
    np.testing.assert_allclose(v.origin.numpy(), probe.input_mean.numpy())
    # the same whatever points the gradient is averaged over (the probe is affine)
    at = torch.randn(5, 7)
    np.testing.assert_allclose(probe_direction("c", 0, probe, at=at).direction.numpy(), v.direction.numpy(), atol=1e-6)


def test_probe_direction_of_mlp_matches_finite_differences():
    torch.manual_seed(3)
    probe = MLPClassifier(5, hidden=12, dropout=0.0)
    probe.set_normalizer(torch.randn(5), torch.rand(5) + 0.5).eval()
    x0 = probe.input_mean.clone().double()
    eps = 1e-4
    with torch.no_grad():
        p64 = probe.double()
        basis = torch.eye(5, dtype=torch.float64)
        fd = torch.stack([(p64(x0 + eps * e) - p64(x0 - eps * e)) / (2 * eps) for e in basis])
        probe.float()
    v = probe_direction("c", 0, probe)
    np.testing.assert_allclose(v.direction.numpy(), (fd / fd.norm()).numpy(), atol=1e-4)


def test_contrast_direction_geometry():
    a, b = torch.eye(5)[0], torch.eye(5)[1]
    np.testing.assert_allclose(contrast_direction(a, b).numpy(), ((a - b) / 2 ** 0.5).numpy(), atol=1e-7)
    # general case: raises A, lowers B, and is orthogonal to neither's shared part
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(13, generator=g), torch.randn(13, generator=g)
    d = contrast_direction(a, b)
    assert float(d @ a) > 0 > float(d @ b) and float(d.norm()) == pytest.approx(1.0)
    # antiparallel (a concept and its exact opposite): falls back to â - b̂ = 2â
    np.testing.assert_allclose(contrast_direction(a, -a).numpy(), (a / a.norm()).numpy(), atol=1e-6)
    # per-row batch
    rows = contrast_direction(torch.stack([a, b]), torch.stack([b, a]))
    np.testing.assert_allclose(rows[0].numpy(), d.numpy(), atol=1e-6)
    with pytest.raises(InputError, match="identical"):
        contrast_direction(a, 3 * a)


def test_zero_vector_is_refused():
    with pytest.raises(InputError, match="do not differ"):
        mean_difference("c", 0, torch.ones(3, 4), torch.ones(3, 4))


def test_save_load_merge_round_trip(tmp_path):
    g = torch.Generator().manual_seed(5)
    vs = VectorSet(opposites={"a": ["b"]})
    for layer in (0, 3):
        for c in ("b", "a"):
            vs.add(ConceptVector(c, layer, torch.randn(7, generator=g), torch.randn(7, generator=g), "pca", 0.5, -0.25))
    path = save_vectors(tmp_path, vs)
    assert path.name == VECTORS_FILE and not list(tmp_path.glob(".*.tmp"))
    back = load_vectors(tmp_path)
    assert len(back) == 4 and back.opposites == {"a": ["b"]} and back.layers() == [0, 3]
    for key, v in vs.vectors.items():
        w = back.vectors[key]
        assert torch.equal(w.direction, v.direction) and torch.equal(w.origin, v.origin)
        assert (w.method, w.pos_proj, w.neg_proj) == ("pca", 0.5, -0.25)
    # merging keeps other vectors and replaces the same (concept, layer)
    new = ConceptVector("a", 3, torch.ones(7), torch.zeros(7), "mean_diff")
    save_vectors(tmp_path, [new])
    merged = load_vectors(tmp_path)
    assert len(merged) == 4 and merged.get("a", 3).method == "mean_diff"
    assert torch.equal(merged.get("b", 0).direction, vs.get("b", 0).direction)
    assert load_vectors(tmp_path / "nothing-here").vectors == {}


def test_corrupt_vectors_file_is_a_pack_error(tmp_path):
    (tmp_path / VECTORS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(PackError, match="Re-extract"):
        load_vectors(tmp_path)


def test_attach_vectors_to_registered_pack_keeps_registry_consistent(demo, tmp_path):
    from cortex.hub.registry import Registry

    home, art = demo
    copy = tmp_path / "home"
    shutil.copytree(home, copy)          # the session demo stays untouched
    reg = Registry(copy)
    before = reg.get(art.lens_pack)
    d = int(load_vectors(reg.path(art.lens_pack)).get("python", 0).dim)
    attach_vectors(art.lens_pack, [ConceptVector("python", 0, torch.ones(d), torch.zeros(d), "probe")], registry=reg)
    after = reg.get(art.lens_pack)
    reg.check(art.lens_pack, fast=False)  # recorded hashes cover the rewritten vectors file
    assert after.parents == before.parents and after.extra == before.extra
    assert after.files[VECTORS_FILE] != before.files[VECTORS_FILE]
    vs = load_vectors(reg.path(art.lens_pack))
    assert vs.get("python", 0).method == "probe" and vs.get("prose", 0).method == "mean_diff"


def test_extract_vectors_on_a_real_qwen_matches_pooled_activations(tiny_qwen):
    from cortex.lenses.capture import encode_texts
    from cortex.steering.vectors import extract_vectors

    pos = ["def f(x): return x", "import os, sys", "for i in range(5): pass"]
    neg = ["the cat sat on the mat", "we walked home slowly", "a quiet evening by the sea"]
    vecs = extract_vectors(tiny_qwen, "code", pos, neg, [1, 0], method="mean_diff")
    acts = encode_texts(tiny_qwen.model, tiny_qwen.tokenizer, tiny_qwen.layers(), pos + neg, [0, 1])
    assert [v.layer for v in vecs] == [0, 1]
    for v in vecs:
        want = mean_difference("code", v.layer, acts[v.layer][:3], acts[v.layer][3:])
        torch.testing.assert_close(v.direction, want.direction, atol=1e-5, rtol=0)
    pca = extract_vectors(tiny_qwen, "code", pos, neg, [1], method="pca")[0]
    assert pca.method == "pca" and float(pca.direction @ vecs[1].direction) > 0
    with pytest.raises(InputError, match="method"):
        extract_vectors(tiny_qwen, "code", pos, neg, [1], method="probe")


def test_probe_vectors_of_a_pack(demo_loaded):
    from cortex.steering.vectors import probe_vectors

    reg, loaded, pack, vectors = demo_loaded
    vs = probe_vectors(pack, [0])
    assert sorted(vs.vectors) == [("prose", 0), ("python", 0)]
    assert all(v.method == "probe" for v in vs.vectors.values())
    # the demo's two probes read opposite kinds: their directions point (mostly) apart
    assert float(vs.get("prose", 0).direction @ vs.get("python", 0).direction) < 0
    with pytest.raises(PackError, match="no layer 9"):
        probe_vectors(pack, [9])

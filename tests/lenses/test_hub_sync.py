"""cortex packs push / pull / status / list through huggingface_hub over a fake transport."""

from __future__ import annotations

import json

import pytest

from cortex.cli.main import main
from cortex.errors import PackError, SourceError
from cortex.hub.registry import Registry
from cortex.lenses.concepts import import_concept_pack
from cortex.lenses.hub_sync import pack_status, parse_remote, pull_pack, push_pack
from cortex.lenses.lens_pack import FORMAT, FORMAT_VERSION, LayerProbes, LensPack, load_lens_pack, register_lens_pack


def _lens_pack() -> None:
    import torch

    layers = {}
    for layer in (2, 4):
        n = 3
        t = {"W": torch.randn(n, 7), "b": torch.randn(n), "ln_w": torch.ones(n, 7), "ln_b": torch.zeros(n, 7),
             "has_ln": torch.zeros(n, dtype=torch.uint8)}
        layers[layer] = LayerProbes(layer, "linear", [f"C{layer}{i}" for i in range(n)], t, torch.zeros(7), torch.ones(7))
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"name": "m7", "revision": "sha256:x"},
            "concept_pack": {"name": "cp"}, "hidden_size": 7, "layers": [2, 4], "probe": {"kind": "linear"},
            "concepts": {c: l for l, lp in layers.items() for c in lp.order}}
    register_lens_pack(LensPack(info, layers), name="lp")


def test_push_pull_partial_status(fake_hub, capsys):
    _lens_pack()
    oid = push_pack("lp", "hf://org/lenses")
    assert (fake_hub.root / "org/lenses/pack_info.json").is_file()
    assert not (fake_hub.root / "org/lenses/metadata.json").exists()
    st = pack_status("lp")
    assert st.remote == "hf://org/lenses" and st.revision == oid and not st.locally_modified
    entry = pull_pack("hf://org/lenses", name="lp-part", layers=[4])
    assert entry.extra["layers_pulled"] == [4] and entry.source.startswith("hf://org/lenses@")
    folder = Registry().path("lp-part")
    assert (folder / "layer4/probes.safetensors").is_file() and not (folder / "layer2").exists()
    assert sorted(load_lens_pack("lp-part").layers) == [4]
    with pytest.raises(PackError, match="incomplete"):
        push_pack("lp-part", "hf://org/other")
    # local modification is flagged
    (folder / "layer4" / "results.json").write_text("{}")
    assert pack_status("lp-part").locally_modified
    assert main(["packs", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["lp-part"]["locally_modified"] and not rows["lp"]["locally_modified"]


def test_pull_pins_the_revision(fake_hub, mini_pack_dir, tmp_path):
    import_concept_pack(mini_pack_dir, name="mini")
    push_pack("mini", "hf://org/concepts")
    first = pull_pack("hf://org/concepts", name="mini-a")
    old = tmp_path / "old"
    import shutil

    shutil.copytree(fake_hub.root / "org/concepts", old)
    fake_hub.add_revision("org/concepts", "v1", old)
    (fake_hub.root / "org/concepts/README.md").write_text("changed\n")
    second = pull_pack("hf://org/concepts@v1", name="mini-b")
    assert second.kind == "concept_pack" and second.extra["remote_revision"] == first.extra["remote_revision"]
    with pytest.raises(SourceError, match="does not exist"):
        pull_pack("hf://org/concepts@nope", name="mini-c")


def test_pull_refuses_escaping_files_and_non_packs(fake_hub):
    repo = fake_hub.root / "org/evil"
    (repo / "sub").mkdir(parents=True)
    (repo / "pack_info.json").write_text("{}")
    (repo / "sub" / "x.json").write_text("{}")
    # the fake hub lists files as stored; craft a listing entry that climbs out
    real = fake_hub._revision

    def listing(request, repo_id, rev, tail):
        resp = real(request, repo_id, rev, tail)
        body = json.loads(resp.content)
        body["siblings"].append({"rfilename": "../../outside.txt"})
        import httpx2

        return httpx2.Response(200, json=body)

    fake_hub._revision = listing
    with pytest.raises(PackError, match="escapes"):
        pull_pack("hf://org/evil")
    fake_hub._revision = real
    (fake_hub.root / "org/plain").mkdir(parents=True)
    (fake_hub.root / "org/plain/readme.txt").write_text("hi")
    with pytest.raises(PackError, match="neither"):
        pull_pack("hf://org/plain")
    with pytest.raises(SourceError, match="hf://"):
        parse_remote("org/repo")

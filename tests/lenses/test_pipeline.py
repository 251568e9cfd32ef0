"""Training through the CLI on registry models, lens-pack files, detection, evaluation, bad packs."""

from __future__ import annotations

import json

import pytest
import torch

from cortex.cli.main import main
from cortex.errors import PackError
from cortex.hub.importer import import_model
from cortex.hub.loading import load_model
from cortex.hub.registry import Registry
from cortex.lenses.concepts import import_concept_pack, read_concept_pack
from cortex.lenses.dataset import DatasetConfig, build_dataset
from cortex.lenses.lens_pack import LensPack, load_lens_pack


def test_dataset_keeps_heldout_sentences_out_of_training(mini_pack_dir):
    pack = read_concept_pack(mini_pack_dir)
    ds = build_dataset(pack, ["Animal", "Vehicle", "Food"], DatasetConfig(background=2))
    heldout = {i for s in ds.splits for i in s.test_pos + s.test_neg + s.val_pos + s.val_neg}
    for s in ds.splits:
        assert not heldout & set(s.train_pos + s.train_neg)
        assert len(s.test_pos) == 2 and s.val_pos and s.train_pos
        own_neg = set(pack.get(s.term).negative_examples)
        own_val_neg = s.val_hint_rows - set(s.val_pos)  # val rows of its own hand-written negatives
        assert set(s.val_pos) <= s.val_hint_rows <= set(s.val_pos + s.val_neg)
        assert len(own_val_neg) == 1 and all(ds.texts[i] in own_neg for i in own_val_neg)
        assert not s.val_hint_rows & set(s.test_pos + s.test_neg)
    animal = ds.splits[0]
    assert {ds.texts[i] for i in animal.test_neg} - set(pack.get("Animal").negative_examples)  # distant ones too


def test_cli_train_detect_eval_on_a_tiny_registry_model(tiny_bert, mini_pack_dir, capsys):
    import_model(str(tiny_bert), name="tinybert")
    import_concept_pack(mini_pack_dir, name="mini")
    rc = main(["lens", "train", "--model", "tinybert", "--concepts", "mini", "--concept-filter", "all", "--probe", "mlp",
               "--steps", "5", "--max-rounds", "2", "--threads", "1"])
    assert rc == 0
    reg = Registry()
    entry = reg.get("lens-tinybert-mini")
    assert entry.kind == "lens_pack" and set(entry.parents) == {"tinybert", "mini"}
    folder = reg.path(entry.name)
    assert (folder / "pack_info.json").is_file() and not list(folder.rglob("*.pt")) and not list(folder.rglob("*.bin"))
    pack = load_lens_pack("lens-tinybert-mini")
    assert set(pack.concepts()) == {"Thing", "Animal", "Vehicle", "Food", "Dog"}
    assert pack.info["hierarchy"]["Dog"] == ["Animal"] and pack.info["hierarchy"]["Thing"] == []
    for layer, lp in pack.layers.items():
        assert lp.tensors["W1"].shape == (len(lp.order), 128, 12)
        bands = {r["band"] for r in lp.results.values()}
        assert bands <= {"early", "mid", "late"}
    capsys.readouterr()
    assert main(["lens", "detect", "--lens", "lens-tinybert-mini", "a dog ran", "--json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["token"] for t in out["tokens"]] == ["[CLS]", "a", "dog", "ran", "[SEP]"]
    assert all(len(t["top"]) == 2 and 0 <= t["top"][0]["prob"] <= 1 for t in out["tokens"])
    assert main(["lens", "eval", "--lens", "lens-tinybert-mini", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["median_f1"] == pytest.approx(ev["stored_median_f1"], abs=1e-3)  # bank path = training path


def test_minilm_lenses_separate_easy_concepts(minilm_dir, mini_pack_dir):
    """On the real MiniLM, animals / vehicles / foods are easy: held-out F1 must be high."""
    from cortex.lenses.pipeline import train_lens_pack
    from cortex.lenses.training import LensTrainingConfig

    import_model(str(minilm_dir), name="minilm")
    import_concept_pack(mini_pack_dir, name="mini")
    report = train_lens_pack("minilm", "mini", LensTrainingConfig(layers=[3, 5], data=DatasetConfig(background=4)),
                             threads=1)
    primary = {c: layer for c, layer in report.pack.concepts().items()}
    f1 = [report.pack.layers[l].results[c]["test_f1"] for c, l in primary.items()]
    assert min(f1) >= 0.79, f1
    from cortex.lenses.detection import LensRunner

    runner = LensRunner(load_lens_pack(report.entry.name), load_model("minilm"))
    top = runner.detect("The hungry puppy chased a squirrel up the tree.", top_k=1).sentence[0]
    assert top.concept in {"Animal", "Dog"}


def _tiny_pack(tmp_path, tiny_bert):
    import_model(str(tiny_bert), name="tinybert")
    import_concept_pack(tmp_path / "mini-pack", name="mini")
    main(["lens", "train", "--model", "tinybert", "--concepts", "mini", "--concept-filter", "Animal,Vehicle", "--probe", "mlp",
          "--steps", "3", "--max-rounds", "1", "--layers", "2", "--name", "tl"])
    return Registry().path("tl")


def test_pack_refuses_another_model_bad_shapes_and_escapes(tmp_path, tiny_bert, tiny_qwen, mini_pack_dir):
    folder = _tiny_pack(tmp_path, tiny_bert)
    pack = LensPack.load(folder)
    import_model(str(tiny_qwen), name="tinyqwen")
    with pytest.raises(PackError, match="trained on model 'tinybert'.*'tinyqwen'"):
        pack.check_model(load_model("tinyqwen"))
    pack.check_model(load_model("tinybert"))
    # a probe file whose width does not match the layer
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(folder, bad)
    t = load_file(str(bad / "layer2" / "probes.safetensors"))
    t["W1"] = t["W1"][..., :7].contiguous()
    save_file(t, str(bad / "layer2" / "probes.safetensors"))
    with pytest.raises(PackError, match="does not match the layer"):
        LensPack.load(bad)
    # a layer folder escaping the pack
    info = json.loads((folder / "pack_info.json").read_text())
    info["layer_dirs"] = {"2": "../../elsewhere"}
    esc = tmp_path / "esc"
    shutil.copytree(folder, esc)
    (esc / "pack_info.json").write_text(json.dumps(info))
    with pytest.raises(PackError, match="escapes"):
        LensPack.load(esc)
    with pytest.raises(PackError, match="Unknown concept 'Animl'.*Animal"):
        pack.primary("Animl")


def test_lazy_pack_reads_only_requested_rows(tmp_path, tiny_bert, mini_pack_dir):
    folder = _tiny_pack(tmp_path, tiny_bert)
    eager, lazy = LensPack.load(folder), LensPack.load(folder, lazy=True)
    assert lazy.layers[2].tensors == {}
    x = torch.randn(3, 12)
    torch.testing.assert_close(lazy.layers[2].probe("Vehicle")(x), eager.layers[2].probe("Vehicle")(x))
    # select: one gather per tensor when loaded, rows from disk when lazy; same tensors, in the asked order
    order = ["Vehicle", "Animal"]
    got, want = eager.layers[2].select(order), lazy.layers[2].select(order)
    assert set(got) == set(want)
    for k in got:
        torch.testing.assert_close(got[k], want[k])
        torch.testing.assert_close(got[k][0], eager.layers[2].tensors[k][eager.layers[2].index("Vehicle")])
    with pytest.raises(PackError, match="'Plant' has no probe at layer 2"):
        eager.layers[2].select(["Animal", "Plant"])

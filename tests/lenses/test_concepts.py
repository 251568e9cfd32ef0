"""Concept packs: HatCat import (tiny and real), cortex format round trip, bad packs, examples, WordNet."""

from __future__ import annotations

import json
import os

import pytest

from cortex.errors import DataError, PackError
from cortex.hub.registry import Registry
from cortex.lenses.concepts import (
    WordNet,
    concept_examples,
    humanize,
    import_concept_pack,
    load_concept_pack,
    read_concept_pack,
    write_concept_pack,
)
from tests.lenses.conftest import write_hatcat_pack


def test_read_tiny_hatcat_pack(mini_pack_dir):
    pack = read_concept_pack(mini_pack_dir)
    assert (pack.name, pack.version, len(pack)) == ("mini", "0.1", 5)
    assert sorted(pack.with_examples()) == ["Animal", "Food", "Vehicle"]
    assert set(pack.children_of("Thing")) == {"Animal", "Vehicle", "Food"}
    assert pack.ancestors("Dog") == {"Animal", "Thing"} and pack.descendants("Thing") == {"Animal", "Vehicle", "Food", "Dog"}
    assert set(pack.siblings("Animal")) == {"Vehicle", "Food"}
    assert pack.get("Animal").opposites == ["Vehicle"]
    with pytest.raises(PackError, match="Did you mean 'Animal'"):
        pack.get("Animl")


def test_cortex_format_round_trip_and_registry(mini_pack_dir, tmp_path):
    pack = read_concept_pack(mini_pack_dir)
    out = write_concept_pack(pack, tmp_path / "cortex-format")
    again = read_concept_pack(out)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in pack]
    entry = import_concept_pack(mini_pack_dir, name="mini")
    assert entry.kind == "concept_pack" and entry.extra["n_with_examples"] == 3
    assert load_concept_pack("mini").get("Dog").parents == ["Animal"]
    assert (Registry().path("mini") / "concepts.jsonl").is_file()


def test_cycle_is_refused(tmp_path):
    folder = write_hatcat_pack(tmp_path / "cyc", [
        {"term": "A", "parent_concepts": ["C"]}, {"term": "B", "parent_concepts": ["A"]},
        {"term": "C", "parent_concepts": ["B"]},
    ])
    with pytest.raises(PackError, match="cycle.*A|cycle.*B|cycle.*C"):
        read_concept_pack(folder)


def test_escaping_paths_are_refused(tmp_path, mini_pack_dir):
    pack_json = json.loads((mini_pack_dir / "pack.json").read_text())
    pack_json["concept_metadata"] = {"hierarchy_file": "../../etc"}
    (mini_pack_dir / "pack.json").write_text(json.dumps(pack_json))
    with pytest.raises(PackError, match="escapes"):
        read_concept_pack(mini_pack_dir)
    # a symlinked concept file pointing outside the pack
    other = write_hatcat_pack(tmp_path / "other", [{"term": "X"}])
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"term": "Secret"}))
    os.symlink(outside, other / "concepts" / "layer0" / "secret.json")
    with pytest.raises(PackError, match="outside"):
        read_concept_pack(other)
    # a cortex pack whose manifest names a file outside it
    cfolder = write_concept_pack(read_concept_pack(write_hatcat_pack(tmp_path / "ok", [{"term": "Y"}])), tmp_path / "cx")
    manifest = json.loads((cfolder / "concept_pack.json").read_text())
    manifest["concepts_file"] = "../secret.json"
    (cfolder / "concept_pack.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match="escapes"):
        read_concept_pack(cfolder)


def test_duplicate_terms_and_not_a_pack(tmp_path):
    folder = write_hatcat_pack(tmp_path / "dup", [{"term": "A"}])
    (folder / "concepts" / "layer0" / "again.json").write_text(json.dumps({"term": "A"}))
    with pytest.raises(PackError, match="twice"):
        read_concept_pack(folder)
    with pytest.raises(PackError, match="neither"):
        read_concept_pack(tmp_path)


def test_examples_from_hints_definitions_and_templates(mini_pack_dir):
    pack = read_concept_pack(mini_pack_dir)
    ex = concept_examples(pack.get("Animal"))
    assert ex.by_source("hint")[:2] == pack.get("Animal").positive_examples[:2]
    assert "A living creature that moves." in ex.by_source("definition")
    assert any("animal" in t for t in ex.by_source("template")) and len(ex.negatives) == 6
    assert humanize("DeceptionSignal") == "deception signal" and humanize("AI_Safety") == "ai safety"


@pytest.mark.skipif(not WordNet.available(), reason="WordNet database not installed (apt-get install wordnet-base)")
def test_wordnet_glosses_both_id_styles():
    wn = WordNet()
    definition, examples = wn.gloss("dog.n.01")
    assert "domesticated" in definition
    by_offset = wn.gloss("02084071.n")
    assert by_offset is not None and by_offset[0] == definition
    assert wn.gloss("no_such_word.n.01") is None


def test_wordnet_missing_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="wordnet-base"):
        WordNet(tmp_path)


def test_real_first_light_pack(shared_data):
    pack = read_concept_pack(shared_data / "hatcat-first-light")
    assert len(pack) == 7947 and len(pack.with_examples()) == 1085
    layers = {}
    for c in pack:
        layers[c.layer] = layers.get(c.layer, 0) + 1
    assert layers == {0: 5, 1: 23, 2: 241, 3: 1283, 4: 2603, 5: 2687, 6: 1105}
    assert sorted(pack.roots()) == ["CreatedThings", "Information", "LivingThings", "MindsAndAgents", "PhysicalWorld"]
    assert "Deception" in pack.ancestors("DeceptionSignal")

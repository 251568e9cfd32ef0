"""Files shipped inside the package: the routing sample, the sample concept pack, the packaged MiniLM by name."""

import json

import pytest

from cortex.cli.main import main
from cortex.errors import DataError
from cortex.resources import concept_pack_dir, minilm_dir, routing_sample_path, write_sample_pack


def test_routing_sample_has_every_group_and_the_fields_of_the_full_data():
    rows = [json.loads(line) for line in routing_sample_path().read_text().splitlines()]
    assert len(rows) == 350 and len({r["id"] for r in rows}) == 350
    groups = {r["master"] for r in rows}
    assert len(groups) == 7 and all(sum(r["master"] == g for r in rows) == 50 for g in groups)
    assert {"prompt", "weak_correct", "strong_correct", "source", "subject"} <= set(rows[0])


def test_sample_pack_is_written_read_and_imported(tmp_path, capsys):
    from cortex.lenses.concepts.store import load_concept_pack, read_concept_pack

    pack = read_concept_pack(concept_pack_dir())
    assert len(pack) == 12 and sorted(pack.roots()) == ["Commerce", "Emotion", "Nature"]
    assert all(len(c.positive_examples) == 6 and len(c.negative_examples) == 6 for c in pack)
    dest = write_sample_pack(tmp_path / "pack")
    with pytest.raises(DataError, match="not empty"):
        write_sample_pack(dest)
    assert main(["packs", "sample", str(tmp_path / "cli-pack")]) == 0
    assert main(["packs", "import", str(tmp_path / "cli-pack")]) == 0
    assert len(load_concept_pack("everyday")) == 12
    capsys.readouterr()


@pytest.mark.slow
def test_minilm_is_registered_by_name_on_first_use():
    from cortex.hub.bundled import ensure_bundled
    from cortex.hub.registry import Registry

    reg = Registry()
    assert (minilm_dir() / "config.json").is_file()
    assert ensure_bundled("minilm", reg) is True
    assert reg.get("minilm").kind == "model" and (reg.path("minilm") / "config.json").is_file()
    assert ensure_bundled("minilm", reg) is False  # already there: left alone
    assert ensure_bundled("not-bundled", reg) is False


def test_route_sample_writes_the_shipped_prompts(tmp_path, capsys):
    out = tmp_path / "r" / "routing.jsonl"
    assert main(["route", "sample", str(out)]) == 0
    assert out.read_bytes() == routing_sample_path().read_bytes() and "cortex route train --data" in capsys.readouterr().out

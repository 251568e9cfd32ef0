"""Issue 16's serving path: one tokenization per decision, a shortened text encoder, the shared hidden
layer (and old configs reading as the layout they were saved with), the kNN vote only where it is used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cortex.routing.model import RouterConfig, RouterModel, truncate_encoder
from cortex.routing.policy import PolicyConfig
from cortex.routing.router import Router

from .conftest import MASTERS, save_random_bert

TEXTS = ["fix the flaky CI job", "Which drug interactions matter for a patient on warfarin who starts antibiotics? " * 3,
         "é unicode ñ 42", "refactor"]


@pytest.fixture(scope="module")
def two_layer_encoder(tmp_path_factory, minilm_dir):
    """A 2-layer random BERT with MiniLM's tokenizer (for shortening to one layer)."""
    return save_random_bert(tmp_path_factory.mktemp("two-layer-encoder"), minilm_dir, layers=2, seed=1)


def test_word_ids_give_the_tokenizers_truncated_batch(tiny_encoder):
    model = RouterModel.from_pretrained_text(RouterConfig(masters=MASTERS, text_source=str(tiny_encoder),
                                                          max_text_tokens=12))
    ids, mask = model.encoder_inputs(model.word_ids(TEXTS))
    ref = model.text_tokenizer()(TEXTS, truncation=True, max_length=12, padding=True, return_tensors="pt")
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
    bags = model.lexical_bags_from_ids(model.word_ids(TEXTS))
    again = model.lexical_bags(TEXTS)
    assert torch.equal(bags.ids, again.ids) and torch.equal(bags.offsets, again.offsets)


def test_shortened_encoder_equals_the_full_ones_hidden_state(two_layer_encoder, tmp_path):
    from transformers import AutoModel

    config = RouterConfig(masters=MASTERS, text_source=str(two_layer_encoder), text_depth=1, text_layers=[-1])
    model = RouterModel.from_pretrained_text(config)
    assert model.tree.roots["text"].model.config.num_hidden_layers == 1
    full = AutoModel.from_pretrained(two_layer_encoder).eval()
    ids, mask = model.encoder_inputs(model.word_ids(TEXTS))
    with torch.no_grad():
        h = full(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]
        m = mask[..., None].float()
        torch.testing.assert_close(model.text_features(ids, mask), (h * m).sum(1) / m.sum(1))
    model.save_pretrained(tmp_path)
    again = RouterModel.from_pretrained(tmp_path)
    assert again.config.text_depth == 1 and len(again.tree.roots["text"].model.encoder.layer) == 1
    truncate_encoder(full, 5)  # deeper than the encoder: left whole
    assert len(full.encoder.layer) == 2


def test_head_layout_new_and_saved(tiny_encoder):
    new = RouterConfig(masters=MASTERS, text_source=str(tiny_encoder))
    assert new.head_layout == "shared_hidden" and new.tree["branches"]["route"]["num_layers"] == 0
    # a config saved before the field existed (tree given, no head_layout) keeps its MLP branches
    old = RouterConfig(masters=MASTERS, tree=RouterConfig(masters=MASTERS, text_source=str(tiny_encoder),
                                                           head_layout="branch_mlp").tree)
    assert old.head_layout == "branch_mlp" and old.text_depth == 0
    model = RouterModel(old)
    assert isinstance(model.hidden, torch.nn.Identity)
    with pytest.raises(Exception, match="head_layout"):
        RouterConfig(masters=MASTERS, text_source=str(tiny_encoder), head_layout="wide")


def test_vote_only_for_unsure_rows_gives_the_same_decisions(trained):
    texts = [f"task {i}: refactor the pipeline readme" for i in range(6)] + ["deploy docker runner now", "x"]
    lazy = Router(trained.model, PolicyConfig(confidence_threshold=0.6), None, trained.knn, trace=False)
    always = Router(trained.model, PolicyConfig(confidence_threshold=0.6), None, trained.knn, trace=False)
    always._vote = lambda feats, preds: trained.knn.vote(feats)  # the vote for every row, as before
    a, b = lazy.route_many(texts), always.route_many(texts)
    assert [(d.master, d.path) for d in a] == [(d.master, d.path) for d in b]
    assert {d.path for d in b} & {"model"}  # some rows never needed the vote


def test_saved_router_with_topics_predicts_as_before(tiny_encoder, tmp_path):
    topics = [{"name": f"t{i}", "master": MASTERS[i % len(MASTERS)]} for i in range(8)]
    model = RouterModel.from_pretrained_text(RouterConfig(masters=MASTERS, text_source=str(tiny_encoder),
                                                          topics=topics, lexical_buckets=0))
    x = torch.randn(6, model.text_dim)
    before = model.predict(x).probs
    model.save_pretrained(tmp_path)
    after = RouterModel.from_pretrained(tmp_path).predict(x).probs
    np.testing.assert_allclose(after, before, atol=1e-6)

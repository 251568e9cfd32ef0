"""The lexical root (hashed n-gram bags, TF-IDF weights) and the topic leaf summed per master."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cortex.errors import DataError
from cortex.routing.lexical import LexicalRoot, hash_bags
from cortex.routing.masters import Master
from cortex.routing.model import RouterConfig, RouterModel
from cortex.routing.training import TrainConfig, frame_topics, train_router

from .conftest import MASTERS

VOCAB, BUCKETS = 11, 1009


def test_hash_bags_count_unigrams_and_bigrams_and_subset():
    bags = hash_bags([[3, 4, 3, 4], [5], [7, 7]], VOCAB, BUCKETS)
    assert bags.offsets.tolist()[0] == 0 and len(bags) == 3
    first = dict(zip(bags.ids[: bags.offsets[1]].tolist(), bags.counts[: bags.offsets[1]].tolist()))
    assert first[3] == 2 and first[4] == 2  # unigrams keep their ids
    bigrams = {k: v for k, v in first.items() if k >= VOCAB}
    assert sorted(bigrams.values()) == [1, 2]  # (3,4) twice, (4,3) once: different buckets
    assert all(VOCAB <= k < BUCKETS for k in bigrams)
    assert bags.offsets[2] - bags.offsets[1] == 1  # one token, no bigram
    sub = bags.subset(torch.tensor([2, 0]))
    again = hash_bags([[7, 7], [3, 4, 3, 4]], VOCAB, BUCKETS)
    for a, b in ((sub.ids, again.ids), (sub.counts, again.counts), (sub.offsets, again.offsets)):
        torch.testing.assert_close(a, b)


def test_tfidf_weights_match_the_formula():
    bags = hash_bags([[1, 2, 2], [2, 5], [6]], VOCAB, BUCKETS)
    root = LexicalRoot(BUCKETS, 4, 5)
    root.fit_idf(bags)
    df = {1: 1, 2: 2, 5: 1, 6: 1}
    n = 3
    ids, w = bags.ids[:3].tolist(), root.weights(bags)
    # row 0 holds unigrams 1, 2 and bigrams (1,2), (2,2), each with its own document frequency
    raw = []
    for i, c in zip(bags.ids[: bags.offsets[1]].tolist(), bags.counts[: bags.offsets[1]].tolist()):
        raw.append((1 + np.log(c)) * (np.log((1 + n) / (1 + df.get(i, 1))) + 1))
    raw = np.asarray(raw) / np.linalg.norm(raw)
    np.testing.assert_allclose(w[: bags.offsets[1]].numpy(), raw, rtol=1e-5)
    assert ids[0] == 1
    out = root(bags)
    assert out.shape == (3, 1, 5)


def test_topic_leaf_sums_topic_probabilities_per_master(tiny_encoder):
    topics = [{"name": "t0", "master": MASTERS[1]}, {"name": "t1", "master": MASTERS[0]},
              {"name": "t2", "master": MASTERS[1]}]
    cfg = RouterConfig(masters=[{"name": m, "description": ""} for m in MASTERS[:3]], text_source=str(tiny_encoder),
                       hidden_dim=13, branch_dim=11, topics=topics, lexical_buckets=0, outcomes=[])
    model = RouterModel(cfg).eval()
    out = model(text_features=torch.randn(4, model.text_dim))
    p_topic = torch.softmax(out.tree.leaf_outputs["topic"].logits, -1)  # (E, B, 3)
    want = torch.stack([p_topic[..., 1], p_topic[..., 0] + p_topic[..., 2], torch.zeros_like(p_topic[..., 0])], -1)
    torch.testing.assert_close(torch.softmax(out.master_logits, -1), want)


def test_frame_topics_refuse_a_topic_under_two_masters(synthetic_frame):
    frame = synthetic_frame.iloc[:20].copy()
    frame["topic"] = "shared"
    with pytest.raises(DataError, match="shared"):
        frame_topics(frame, MASTERS)


def test_router_trains_with_lexical_root_and_topics(tiny_encoder, synthetic_frame, tmp_path):
    frame = synthetic_frame.iloc[:120].copy()
    frame["topic"] = frame["label"] + "-" + (frame.index % 2).astype(str)
    res = train_router(frame, [Master(m) for m in MASTERS], text_source=str(tiny_encoder),
                       model_kwargs={"hidden_dim": 13, "branch_dim": 11, "lexical_buckets": 40009},
                       train=TrainConfig(max_epochs=3), cache_root=str(tmp_path))
    assert len(res.model.config.topics) == 2 * frame["label"].nunique()
    assert float(res.model.lexical.idf.max()) > 1.0  # fitted on the training split
    texts = frame["text"].iloc[:5].tolist()
    pred = res.model.predict(torch.randn(5, res.model.text_dim), None, res.model.lexical_bags(texts))
    np.testing.assert_allclose(pred.probs.sum(1), 1.0, rtol=1e-6)

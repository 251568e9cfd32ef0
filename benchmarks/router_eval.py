"""Router quality on a held-out part of the shared routing data: the router as it is now, the router
as it was before issue 16 (``old``), and the simple baselines, in one run.

    python benchmarks/router_eval.py [--test-fraction 0.2] [--seed 0]

Splits (all carved from ``train.jsonl``; the project's kept-back test split is never used here):

* **held out**: ``--test-fraction`` of every master, drawn with ``--seed`` (default 20%, seed 0).
  Nothing is tuned on it; every figure below is on it.
* **training part**: the rest. Each router carves its own validation split from it (early stopping,
  temperature, kNN blend weight, the success head's check). The defaults of issue 16 (48 text tokens,
  lexical root, subject topics, the shared hidden layer, the first 3 MiniLM layers pooled over the
  last two, the success head's features) were chosen on a separate split of this part (20%, seed 1).

Methods, one JSON line each:

* ``router_new`` / ``router_prev`` / ``router_first16`` / ``router_old``: ``cortex route`` policy
  decisions with the int8 serving encoder (as ``cortex route serve`` runs; per-channel weight scales
  for all four since this stop), plus the model's own figures. new = the defaults now (64 tokens,
  convex read-out, success head); prev = the defaults of the previous stop (48 tokens, no read-out);
  first16 = the first issue-16 router (all 6 layers pooled over the last three, MLP branches, success
  from the tree's leaf); old = before issue 16 (256 text tokens, last layer, no lexical root, no
  topics, MLP branches). ``fp32_model_macro_f1`` / ``int8_model_macro_f1``: the model's own top
  master with each encoder, so the cost of int8 is read directly. ``int8_fp32_agreement``: share of identical top
  masters between the int8 and the fp32 encoder. ``success_auroc_tree_leaf``: the new router's tree
  success leaf alone, for comparison with its success head.
* ``knn10_minilm``: semantic-router style vote of the 10 nearest training prompts (MiniLM, 256 tokens,
  cosine). ``tfidf_lr``: TF-IDF (word 1-2 grams) + logistic regression.
* success (``weak_correct``): AUROC of each router's predicted success; ``success_lr_minilm`` is logistic
  regression on the same MiniLM features, ``knn_success`` the 10 neighbours' mean success,
  ``success_lr_same_features`` logistic regression on exactly the new success head's features (fitted
  on the same training rows, leave-one-out neighbours). Cost/quality as RouteLLM defines it (APGR,
  strong calls for 50% / 80% of the gap).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

ROOT = Path(__file__).resolve().parents[1]


def cost_quality(p_weak_fails: np.ndarray, weak: np.ndarray, strong: np.ndarray, points: int = 101) -> dict:
    """RouteLLM's curve and figures for one ranking (highest ``p_weak_fails`` goes strong first)."""
    n = len(weak)
    order = np.argsort(-p_weak_fails, kind="stable")
    shares = np.linspace(0.0, 1.0, points)
    acc = []
    for s in shares:
        to_strong = np.zeros(n, bool)
        to_strong[order[: int(round(s * n))]] = True
        acc.append(np.where(to_strong, strong, weak).mean())
    acc = np.asarray(acc)
    w, st = weak.mean(), strong.mean()
    auc = np.trapezoid(acc, shares)
    apgr = (auc - w) / (st - w)  # both reference areas span the share range [0, 1]

    def calls_for(frac: float) -> float | None:
        target = w + frac * (st - w)
        hit = np.flatnonzero(acc >= target)
        if not len(hit):
            return None
        i = hit[0]
        if i == 0:
            return 0.0
        # linear interpolation between the last point below the target and the first at/above it
        x0, x1, y0, y1 = shares[i - 1], shares[i], acc[i - 1], acc[i]
        return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))

    return {"apgr": float(apgr), "strong_calls_50": calls_for(0.5), "strong_calls_80": calls_for(0.8)}


OLD = {"max_text_tokens": 256, "text_layers": [-1], "lexical_buckets": 0, "topics": [], "head_layout": "branch_mlp",
       "hidden_dim": 256, "dropout": 0.5, "text_depth": 0, "readout": False}
# prev: the defaults of the last stop (48 tokens, no convex read-out); first16: the first issue-16 router
PREV = {"max_text_tokens": 48, "readout": False}
FIRST16 = {"text_layers": [-3, -2, -1], "head_layout": "branch_mlp", "hidden_dim": 256, "dropout": 0.5, "text_depth": 0,
           "max_text_tokens": 48, "readout": False}
PREV_TRAIN = {"batch_size": 128, "lr": 1e-3, "weight_decay": 0.05, "lexical_lr_scale": 10.0, "outcome_weight": 1.0}


def load(path: str, test_fraction: float, seed: int):
    """The shared file as a training frame (``topic`` = subject), split into training part and held-out part."""
    import pandas as pd

    from cortex.routing.data import ingest_labeled
    from cortex.routing.features import master_indices
    from cortex.routing.masters import load_masters
    from cortex.routing.training import stratified_split

    masters = load_masters(ROOT / "src" / "cortex" / "configs" / "router" / "masters.yaml")
    names = [m.name for m in masters]
    frame = ingest_labeled(path, text_field="prompt", label_field="master", success_field="weak_correct",
                           topic_field="subject", masters=names).frame
    raw = pd.read_json(path, lines=True).drop_duplicates("id", keep="last").set_index("id")
    frame["strong"] = raw.loc[frame["task_id"], "strong_correct"].to_numpy(dtype=float)
    tr, te = stratified_split(master_indices(frame["label"], names, "label"), test_fraction, seed)
    return masters, frame.iloc[tr].reset_index(drop=True), frame.iloc[te].reset_index(drop=True)


def router_line(name: str, res, train_s: float, train, test, masters, with_head: bool) -> dict:
    """Held-out figures of a trained router, served with the int8 encoder, plus fp32 agreement."""
    from cortex.routing.evaluation import evaluate_router, frame_features
    from cortex.routing.metrics import auroc, macro_f1
    from cortex.routing.policy import PolicyConfig
    from cortex.routing.router import Router

    router = Router(res.model, PolicyConfig(knn_weight=res.knn_weight), None, res.knn,
                    success=res.success if with_head else None)
    ctx = np.full((len(test), len(res.model.config.context_features)), np.nan)
    texts = test["text"].tolist()
    fp32 = router.predict(frame_features(router, test), ctx, texts).probs.argmax(1)
    router.quantize()
    rep = evaluate_router(router, test, latency_n=0)
    int8_feats = frame_features(router, test)
    int8 = router.predict(int8_feats, ctx, texts)
    weak, strong = test["success"].to_numpy(), test["strong"].to_numpy()
    handled = [router.masters.index(m) for m in test["label"]]
    s = int8.success[np.arange(len(test)), handled]
    import torch

    leaf = res.model.predict(torch.from_numpy(int8_feats), torch.from_numpy(ctx).float(),
                             res.model.lexical_bags(texts)).success[np.arange(len(test)), handled]
    return {"method": name, **{k: rep.to_dict()[k] for k in ("accuracy", "macro_f1", "model_accuracy", "ece",
                                                                "success_auroc", "fallback_rate")},
            "success_auroc_tree_leaf": auroc(weak.astype(bool), leaf), "success_head": router.success is not None,
            "int8_fp32_agreement": float((fp32 == int8.probs.argmax(1)).mean()),
            "fp32_model_macro_f1": macro_f1(handled, fp32), "int8_model_macro_f1": macro_f1(handled, int8.probs.argmax(1)),
            "train_s": round(train_s, 1),
            **cost_quality(1.0 - s, weak, strong), "val": res.validation}


def success_same_features(res, train, test) -> dict:
    """Logistic regression on the new success head's own features: fitted on the training rows with
    leave-one-out neighbours (as the head), scored on the held-out rows with every training task in memory."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from cortex.routing.features import build_features, feature_cache
    from cortex.routing.metrics import auroc
    from cortex.routing.training import outcome_memory, success_rows

    model = res.model
    fs_tr, fs_te = (build_features(model, f, feature_cache(model)) for f in (train, test))
    memory = outcome_memory(fs_tr, len(model.masters))
    x, y = success_rows(memory, fs_tr, loo=True)
    xt, yt = success_rows(memory, fs_te, loo=False)
    scale = StandardScaler().fit(x)
    p = LogisticRegression(max_iter=2000).fit(scale.transform(x), y).predict_proba(scale.transform(xt))[:, 1]
    head = res.success.head.predict(xt)
    return {"method": "success_lr_same_features", "success_auroc": auroc(yt.astype(bool), p),
            "success_auroc_head_fp32": auroc(yt.astype(bool), head),
            **cost_quality(1.0 - p, test["success"].to_numpy(), test["strong"].to_numpy())}


def success_baselines(router, train, test) -> list[dict]:
    """Logistic regression on MiniLM features and the kNN neighbours' mean success, for ``weak_correct``."""
    from sklearn.linear_model import LogisticRegression

    from cortex.routing.evaluation import baseline_text_model
    from cortex.routing.features import encode_texts, feature_cache
    from cortex.routing.knn import l2_normalize
    from cortex.routing.metrics import auroc

    model = baseline_text_model(router)
    cache = feature_cache(model)
    f_tr, f_te = (cache.features(f["text"].tolist(), lambda b: encode_texts(model, b)) for f in (train, test))
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    y_tr, weak, strong = train["success"].to_numpy(), test["success"].to_numpy(), test["strong"].to_numpy()
    lr = LogisticRegression(C=0.1, max_iter=2000).fit((f_tr - mu) / sd, y_tr)
    p_lr = lr.predict_proba((f_te - mu) / sd)[:, 1]
    nn = np.argpartition(-(l2_normalize(f_te) @ l2_normalize(f_tr).T), 9, axis=1)[:, :10]
    p_knn = y_tr[nn].mean(1)
    return [{"method": name, "success_auroc": auroc(weak.astype(bool), p), **cost_quality(1.0 - p, weak, strong)}
            for name, p in (("success_lr_minilm", p_lr), ("knn_success", p_knn))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "routing" / "train.jsonl"))
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from cortex.routing.evaluation import baseline_scores
    from cortex.routing.policy import PolicyConfig
    from cortex.routing.router import Router
    from cortex.routing.training import TrainConfig, train_router

    masters, train, test = load(args.data, args.test_fraction, args.seed)
    base = {"n_train": len(train), "n_test": len(test), "weak_acc": float(test["success"].mean()),
            "strong_acc": float(test["strong"].mean()), **machine()}
    results = {}
    for name, kwargs in (("router_new", None), ("router_prev", PREV), ("router_first16", FIRST16), ("router_old", OLD)):
        t0 = time.perf_counter()
        run = {} if kwargs in (None, PREV) else PREV_TRAIN  # first16 and old train as they did then
        res = train_router(train, masters, model_kwargs=kwargs, train=TrainConfig(seed=args.seed, **run))
        results[name] = res
        line = router_line(name, res, time.perf_counter() - t0, train, test, masters, with_head=name in ("router_new", "router_prev"))
        print(json.dumps({**line, **base, "load_avg_1m": os.getloadavg()[0]}), flush=True)
    print(json.dumps({**success_same_features(results["router_new"], train, test), **base}), flush=True)
    router = Router(results["router_new"].model, PolicyConfig())
    for name, figures in baseline_scores(router, train, test).items():
        print(json.dumps({"method": name, **figures, **base}), flush=True)
    for line in success_baselines(router, train, test):
        print(json.dumps({**line, **base, "load_avg_1m": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()

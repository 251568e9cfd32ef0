"""Router quality on a held-out part of the shared routing data, against three baselines and random.

    python benchmarks/router_eval.py [--test-fraction 0.2] [--seed 0]

The file is split once with the seed (stratified by master); the learned router trains on the
training part only (its own validation split, carved from that part, drives early stopping and
temperature scaling) and nothing is tuned on the test part. Methods, one JSON line each:

* ``keyword_rules``: configs/router/rules.yaml, written from the subject names (first match wins,
  else the default master); its probability is the rule's confidence on the chosen master.
* ``knn_embeddings``: semantic-router style vote of the 10 nearest training prompts (MiniLM, cosine).
* ``zero_shot_descriptions``: cosine similarity of the prompt to each master's description in
  configs/router/masters.yaml, softmax with a temperature fitted on the training part.
* ``router_model``: the learned router's calibrated top class; ``router_model_knn_blend``: the top
  class after blending in the kNN vote; ``router_policy``: its full decision
  (kNN blend with the weight chosen on its validation split, utility = probability x predicted
  success, confidence threshold, rule fallback, kNN, default).

Success: AUROC of the predicted success of the weak model (``weak_correct``). Cost/quality as
RouteLLM defines it (routellm/evals): rank prompts by the predicted chance that the weak model
fails, send the top share to the strong model, sweep the share 0..100%; APGR is the area between
the curve and the weak model's accuracy over the area between the two models' accuracies, and
``strong_calls_50/80`` the share of strong calls needed to recover 50% / 80% of the gap. ``random``
ranks at random (mean of 20 seeds); ``knn_success`` predicts success as the neighbours' mean.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "routing" / "train.jsonl"))
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from cortex.routing.calibration import fit_temperature, softmax
    from cortex.routing.data import ingest_labeled
    from cortex.routing.evaluation import frame_features
    from cortex.routing.features import encode_texts, master_indices
    from cortex.routing.knn import KNNMemory, l2_normalize
    from cortex.routing.masters import load_masters
    from cortex.routing.metrics import accuracy, auroc, expected_calibration_error, macro_f1
    from cortex.routing.policy import PolicyConfig
    from cortex.routing.router import Router
    from cortex.routing.rules import RuleSet
    from cortex.routing.training import TrainConfig, stratified_split, train_router

    masters = load_masters(ROOT / "src" / "cortex" / "configs" / "router" / "masters.yaml")
    names = [m.name for m in masters]
    C = len(names)
    rules = RuleSet.load(ROOT / "src" / "cortex" / "configs" / "router" / "rules.yaml", names)
    frame = ingest_labeled(args.data, text_field="prompt", label_field="master", success_field="weak_correct",
                           masters=names).frame
    import pandas as pd

    raw = pd.read_json(args.data, lines=True).drop_duplicates("id", keep="last").set_index("id")
    strong_all = raw.loc[frame["task_id"], "strong_correct"].to_numpy(dtype=float)
    y_all = master_indices(frame["label"], names, "label")
    train_idx, test_idx = stratified_split(y_all, args.test_fraction, args.seed)
    train, test = frame.iloc[train_idx].reset_index(drop=True), frame.iloc[test_idx].reset_index(drop=True)
    y, weak, strong = y_all[test_idx], test["success"].to_numpy(), strong_all[test_idx]

    t0 = time.perf_counter()
    res = train_router(train, masters, train=TrainConfig(seed=args.seed))
    train_s = time.perf_counter() - t0
    router = Router(res.model, PolicyConfig(knn_weight=res.knn_weight), rules, res.knn)
    feats_test = frame_features(router, test)
    feats_train = frame_features(router, train)
    pred = router.predict(feats_test, np.full((len(test), len(res.model.config.context_features)), np.nan))
    decisions = router.route_many(test["text"].tolist(), np.full((len(test), len(res.model.config.context_features)), np.nan),
                                  features=feats_test)
    chosen = np.array([names.index(d.master) for d in decisions])
    blended = np.array([[d.probabilities[m] for m in names] for d in decisions])  # what the policy used
    s_router = pred.success[np.arange(len(test)), y]

    # baselines ---------------------------------------------------------------------------------
    rule_probs = np.full((len(test), C), 1.0 / C)
    for i, text in enumerate(test["text"]):
        hit = rules.match(text)
        if hit is not None:
            rule_probs[i] = (1 - hit.confidence) / (C - 1)
            rule_probs[i, names.index(hit.master)] = hit.confidence
        else:
            rule_probs[i] = 0.0
            rule_probs[i, names.index(rules.default_master)] = 1.0  # the default is taken for sure
    rule_pred = np.array([names.index(rules.match(t).master) if rules.match(t) else names.index(rules.default_master)
                          for t in test["text"]])
    mem = KNNMemory(feats_train.shape[1], C, k=10, min_similarity=-1.0)
    mem.add(feats_train, y_all[train_idx])
    knn_probs = mem.vote(feats_test).probs
    # kNN success: the weak model's mean success on the 10 nearest training prompts
    sims = l2_normalize(feats_test) @ l2_normalize(feats_train).T
    nn = np.argpartition(-sims, 9, axis=1)[:, :10]
    knn_success = train["success"].to_numpy()[nn].mean(1)
    desc = l2_normalize(encode_texts(res.model, [m.description for m in masters]))
    zs_train = l2_normalize(feats_train) @ desc.T
    zs_test = l2_normalize(feats_test) @ desc.T
    t_zs = fit_temperature(zs_train, y_all[train_idx])  # fitted on the training part only
    zs_probs = softmax(zs_test, t_zs)

    rng = np.random.default_rng(args.seed)
    rand = [cost_quality(rng.random(len(test)), weak, strong) for _ in range(20)]
    rand_apgr = float(np.mean([r["apgr"] for r in rand]))
    base = {"n_train": len(train), "n_test": len(test), "weak_acc": float(weak.mean()), "strong_acc": float(strong.mean()),
            **machine()}
    rows = [
        ("keyword_rules", rule_pred, rule_probs, None),
        ("knn_embeddings", knn_probs.argmax(1), knn_probs, knn_success),
        ("zero_shot_descriptions", zs_probs.argmax(1), zs_probs, None),
        ("router_model", pred.probs.argmax(1), pred.probs, s_router),
        ("router_model_knn_blend", blended.argmax(1), blended, s_router),
        ("router_policy", chosen, blended, s_router),
    ]
    ref_acc = accuracy(y, rule_pred)
    for name, hard, probs, success in rows:
        line = {"method": name, "accuracy": accuracy(y, hard), "macro_f1": macro_f1(y, hard),
                "ece": expected_calibration_error(probs, y)}
        line["accuracy_vs_keyword_rules"] = line["accuracy"] / ref_acc
        if success is not None:
            cq = cost_quality(1.0 - success, weak, strong)
            line.update({"success_auroc": auroc(weak.astype(bool), success), **cq,
                         "apgr_vs_random": cq["apgr"] / rand_apgr})
        if name == "router_policy":
            paths = {}
            for d in decisions:
                paths[d.path] = paths.get(d.path, 0) + 1
            line.update({"fallback_rate": 1 - paths.get("model", 0) / len(test), "paths": paths,
                         "train_s": round(train_s, 1), "val": res.validation})
        print(json.dumps({**line, **base}), flush=True)
    print(json.dumps({"method": "random", "apgr": rand_apgr,
                      "strong_calls_50": float(np.mean([r["strong_calls_50"] for r in rand])),
                      "strong_calls_80": float(np.mean([r["strong_calls_80"] for r in rand])),
                      "success_auroc": 0.5, **base}), flush=True)


if __name__ == "__main__":
    main()

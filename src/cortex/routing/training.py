"""Train a router: a compact, seeded loop (AdamW, early stopping on a validation split), then
temperature scaling on that split and a kNN memory of past successful decisions.

With the text root frozen (the default) its pooled features come from the feature cache, so each
epoch runs only the context encoder, trunk projection, branches and leaves; an epoch over 9,000
tasks takes well under a second on one CPU core. With ``freeze_text=False`` the encoder is
fine-tuned and runs in every step (slow on a CPU; meant for a GPU).

The validation split is carved from the training data with the seed (stratified by label) and is
used for early stopping and calibration only; judge a router on data it never saw
(``cortex route eval``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from cortex._fit import BestWeights, optimizer_step
from cortex._validate import (
    Problems,
    check_choice,
    check_non_empty,
    check_number,
    check_positive,
)
from cortex.errors import DataError
from cortex.routing.calibration import fit_temperature, nll
from cortex.routing.context import UNIT_SCALE
from cortex.routing.features import FeatureSet, build_features, feature_cache
from cortex.routing.knn import KNNMemory
from cortex.routing.masters import Master
from cortex.routing.metrics import accuracy, expected_calibration_error
from cortex.routing.model import RouterConfig, RouterModel
from cortex.routing.success import (
    OutcomeMemory,
    SuccessHead,
    SuccessModel,
    success_features,
)

Progress = Callable[[str, int, int], None]


@dataclass
class TrainConfig:
    """Run settings of router training (validated when made, naming the field).

    Attributes:
        max_epochs: upper bound on passes over the training split.
        batch_size: tasks per optimizer step.
        lr, weight_decay: AdamW settings.
        patience: stop after this many epochs without a better validation loss.
        val_fraction: share of each label held out for early stopping and calibration.
        outcome_weight: weight of the success / duration / tokens losses against the master loss.
        seed: seeds the split, the initialization and the batch order.
        device: torch device for the heads (and the encoder when it is trained).
        knn_k, knn_min_similarity: the kNN vote whose blend weight is chosen on the validation split.
        knn_weights: candidate blend weights (the most accurate on validation wins; ties: the smaller).
        min_outcome_records: an outcome head (success, duration, tokens) is built only with at least
            this many observed outcomes; min_outcome_per_master: a master's column of an outcome head
            is trained (and predicted) only with at least this many of its own. A Gaussian head fitted
            to one or two points collapses its variance, and its loss would swamp the others.
        lexical_lr_scale: learning rate of the lexical root's sparse bag table, as a multiple of ``lr``.
        stop_on: what early stopping watches on the validation split: ``accuracy`` of the master
            decision, the ``master`` loss, or the ``total`` loss. The loss rises (over-confidence) while
            routing still improves; temperature scaling afterwards fixes the confidence.
        readout_l2: candidate L2 penalties of the convex read-out (the most accurate on validation wins;
            ties: the larger). readout_weights: candidate shares of the read-out in the master probabilities.

    Defaults were chosen on a validation split carved from the training part of the shared data
    (issue 16: batch 64, lr 2e-3, no weight decay, lexical rate x5, outcome weight 0.2 gave macro-F1
    0.876 vs 0.865 with batch 128, lr 1e-3, decay 0.05, x10, 1.0 on the 20% tuning split, seed 1).
    """

    max_epochs: int = 200
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 10
    val_fraction: float = 0.1
    outcome_weight: float = 0.2
    seed: int = 0
    device: str = "cpu"
    knn_k: int = 10
    knn_min_similarity: float = 0.3
    knn_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    min_outcome_records: int = 20
    min_outcome_per_master: int = 5
    lexical_lr_scale: float = 5.0
    stop_on: str = "accuracy"
    readout_l2: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    readout_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __post_init__(self) -> None:
        problems = Problems()
        for name in ("max_epochs", "batch_size", "patience", "knn_k", "min_outcome_records", "min_outcome_per_master"):
            check_positive(f"train.{name}", getattr(self, name), problems)
        for name in ("lr", "weight_decay", "outcome_weight", "lexical_lr_scale"):
            check_number(f"train.{name}", getattr(self, name), problems, low=0.0)
        check_number("train.val_fraction", self.val_fraction, problems, 0.0, 0.5, low_open=True, high_open=True)
        check_number("train.knn_min_similarity", self.knn_min_similarity, problems, -1.0, 1.0)
        for name, low_open in (("knn_weights", False), ("readout_l2", True), ("readout_weights", False)):
            values = getattr(self, name)
            if check_non_empty(f"train.{name}", values, problems, types=(tuple, list)):
                for i, v in enumerate(values):
                    check_number(f"train.{name}[{i}]", v, problems, 0.0, None if name == "readout_l2" else 1.0,
                                 low_open=low_open)
        check_choice("train.stop_on", self.stop_on, ("accuracy", "master", "total"), problems)
        problems.raise_if_any("router training config")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """A trained router model and how training went.

    Attributes:
        model: the best-on-validation model, calibrated (temperatures in its config), in eval mode.
        knn: memory of successful past decisions (all of the training frame).
        history: per epoch ``{"epoch", "train_loss", "val_loss"}``.
        knn_weight: the kNN blend weight that was most accurate on the validation split.
        best_epoch: epoch of the kept weights. validation: held-out figures (accuracy, NLL and ECE
            before/after calibration, temperatures, sizes).
        val_task_ids: task ids of the validation split.
        success: the success head (:mod:`.success`) fitted on the validation split, or ``None``
            (no success outcomes, or too few of both kinds there).
    """

    model: RouterModel
    knn: KNNMemory
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    knn_weight: float = 0.0
    validation: dict[str, float] = field(default_factory=dict)
    val_task_ids: list[str] = field(default_factory=list)
    success: SuccessModel | None = None


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: about ``fraction`` of every label in validation (none for labels
    with fewer than 3 examples, which stay in training)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(fraction * len(idx))) if len(idx) >= 3 else 0
        n_val = max(n_val, 1) if len(idx) >= 3 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


OUTCOME_COLUMNS = (("success", "success"), ("duration", "minutes"), ("tokens", "tokens"))


def _observed(frame: pd.DataFrame, column: str, masters: Sequence[str], minimum: int) -> list[bool]:
    counts = frame.loc[frame[column].notna(), "outcome_master"].value_counts()
    return [int(counts.get(m, 0)) >= minimum for m in masters]


def _total(losses: dict[str, torch.Tensor], outcome_weight: float) -> torch.Tensor:
    return losses["master"] + outcome_weight * sum((v for k, v in losses.items() if k != "master"), torch.zeros(()))


def _forward(model: RouterModel, fs: FeatureSet, texts: list[str] | None, device: str):
    if texts is None:
        return model(text_features=fs.text.to(device), context=fs.context.to(device), lexical=fs.lexical)
    tok = model.text_tokenizer()
    b = tok(texts, truncation=True, max_length=model.config.max_text_tokens, padding=True, return_tensors="pt")
    return model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                 context=fs.context.to(device), lexical=fs.lexical)


def _losses(model: RouterModel, out, fs: FeatureSet, device: str) -> dict[str, torch.Tensor]:
    return model.losses(out, fs.labels.to(device), fs.outcome_master.to(device), fs.success.to(device),
                        fs.log_minutes.to(device), fs.log_tokens.to(device), topics=fs.topics.to(device))


@torch.no_grad()
def _evaluate_loss(model: RouterModel, fs: FeatureSet, texts: list[str] | None, cfg: TrainConfig) -> tuple[float, Any]:
    """Validation loss that early stopping watches (``cfg.stop_on``), and the outputs."""
    model.eval()
    outs, total, n = [], 0.0, 0
    for s in range(0, len(fs), 1024):
        part = fs.subset(np.arange(s, min(s + 1024, len(fs))))
        out = _forward(model, part, texts[s:s + 1024] if texts is not None else None, cfg.device)
        losses = _losses(model, out, part, cfg.device)
        if cfg.stop_on == "accuracy":  # minus the share routed right, so that lower is better
            loss = -(out.master_logits.mean(0).argmax(-1) == part.labels.to(cfg.device)).float().mean()
        else:
            loss = losses["master"] if cfg.stop_on == "master" else _total(losses, cfg.outcome_weight)
        total += float(loss) * len(part)
        n += len(part)
        outs.append(out)
    return total / max(n, 1), outs


def _outcome_targets(fs: FeatureSet, values: torch.Tensor, C: int) -> torch.Tensor:
    """``(N, C)`` matrix with each task's outcome in its handling master's column, NaN elsewhere."""
    onehot = torch.nn.functional.one_hot(fs.outcome_master, C).bool()
    return torch.where(onehot, values[:, None].expand(-1, C), torch.full((len(values), C), float("nan")))


def frame_topics(frame: pd.DataFrame, masters: Sequence[str]) -> list[dict[str, str]]:
    """``[{"name", "master"}, ...]`` of the frame's ``topic`` column (empty without one); a topic must
    belong to exactly one master, since its probability is added to that master's."""
    if "topic" not in frame.columns or frame["topic"].isna().all():
        return []
    pairs = frame.loc[frame["topic"].notna(), ["topic", "label"]].drop_duplicates()
    owners = pairs.groupby("topic")["label"].nunique()
    shared = owners[owners > 1].index.tolist()
    if shared:
        raise DataError(f"The topics {shared[:5]} occur under several masters; a topic must belong to one master. "
                        "Fix the labels, or train without --topic-field.")
    pairs = pairs.sort_values(["label", "topic"])
    return [{"name": str(t), "master": str(m)} for t, m in zip(pairs["topic"], pairs["label"]) if m in masters]


def setup_model(frame: pd.DataFrame, masters: Sequence[Master], cfg: TrainConfig, text_source: str | None,
                model_kwargs: dict[str, Any] | None) -> tuple[RouterModel, dict[str, list[bool]]]:
    """A fresh router for ``frame``: outcome heads for the outcomes it has, topics when it has them."""
    names = [m.name for m in masters]
    observed = {o: _observed(frame, col, names, cfg.min_outcome_per_master) for o, col in OUTCOME_COLUMNS}
    outcomes = [o for o, col in OUTCOME_COLUMNS
                if frame[col].notna().sum() >= cfg.min_outcome_records and any(observed[o])]
    kwargs = {"topics": frame_topics(frame, names), **(model_kwargs or {})}
    config = RouterConfig(masters=[m.to_dict() for m in masters], text_source=text_source, outcomes=outcomes,
                          observed={o: observed[o] for o in outcomes}, **kwargs)
    return RouterModel.from_pretrained_text(config).to(cfg.device), observed


def prepare_features(model: RouterModel, frame: pd.DataFrame, observed: dict[str, list[bool]],
                     cache_root: str | None, progress: Progress | None) -> FeatureSet:
    """Features and targets of ``frame``; outcomes of heads not built, or of masters with too few of
    them, are blanked (NaN) so that they train nothing."""
    cache = feature_cache(model, root=cache_root) if model.config.freeze_text else None
    fs = build_features(model, frame, cache, progress=(lambda d, t: progress("embed", d, t)) if progress else None)
    for o, attr in (("success", "success"), ("duration", "log_minutes"), ("tokens", "log_tokens")):
        keep = torch.tensor(observed[o])[fs.outcome_master] if o in model.config.outcomes else torch.zeros(len(fs), dtype=torch.bool)
        setattr(fs, attr, torch.where(keep, getattr(fs, attr), torch.full_like(getattr(fs, attr), float("nan"))))
    return fs


def fit_standardizations(model: RouterModel, tr: FeatureSet) -> None:
    """Context, text, IDF and regression-target statistics, all from the training split only."""
    config = model.config
    model.context.fit_standardization(tr.context.numpy(), [n in UNIT_SCALE for n in config.context_features])
    if config.freeze_text:
        model.fit_text_standardization(tr.text)
    if model.lexical is not None:
        model.lexical.fit_idf(tr.lexical)
    C = len(model.masters)
    for leaf, values in (("duration", tr.log_minutes), ("tokens", tr.log_tokens)):
        if leaf in config.outcomes:
            y = _outcome_targets(tr, values, C)
            y[:, ~torch.isfinite(y).any(0)] = 0.0  # masters never seen: identity scaling, marked unobserved
            model.tree.fit_target_standardization(leaf, y)


def _optimizers(model: RouterModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW for the dense weights; the lexical bag's table (131k rows, a few dozen used per text) gets
    a sparse Adam at a higher rate and no decay, which trains it in a few epochs."""
    bag = model.lexical.bag.weight if model.lexical is not None else None
    dense = [p for p in model.parameters() if p.requires_grad and p is not bag]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(dense, lr=cfg.lr, weight_decay=cfg.weight_decay)]
    if bag is not None:
        opts.append(torch.optim.SparseAdam([bag], lr=cfg.lr * cfg.lexical_lr_scale))
    return opts


def fit(model: RouterModel, tr: FeatureSet, va: FeatureSet, tr_texts: list[str] | None, va_texts: list[str] | None,
        cfg: TrainConfig, gen: torch.Generator, progress: Progress | None) -> tuple[int, list[dict[str, float]]]:
    """Epochs with early stopping on the validation loss; leaves the best weights in ``model``.
    Returns ``(best_epoch, history)``."""
    opts = _optimizers(model, cfg)
    frozen = model.config.freeze_text  # a frozen text root never changes: its weights are not copied
    best = BestWeights(cfg.patience, keep=lambda k: not frozen or not k.startswith("tree.roots."))
    history = []
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = torch.randperm(len(tr), generator=gen)
        running = 0.0
        for s in range(0, len(tr), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            batch = tr.subset(idx)
            out = _forward(model, batch, [tr_texts[i] for i in idx] if tr_texts is not None else None, cfg.device)
            loss = _total(_losses(model, out, batch, cfg.device), cfg.outcome_weight)
            optimizer_step(loss, opts)
            running += float(loss.detach()) * len(idx)
        val_loss, _ = _evaluate_loss(model, va, va_texts, cfg)
        history.append({"epoch": epoch, "train_loss": running / len(tr), "val_loss": val_loss})
        if progress:
            progress("train", epoch, cfg.max_epochs)
        if best.update(val_loss, model):
            break
    best.restore(model)
    best_epoch = best.best_check
    model.eval()
    return best_epoch, history


def train_router(
    frame: pd.DataFrame,
    masters: Sequence[Master],
    *,
    text_source: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    train: TrainConfig | None = None,
    cache_root: str | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a router on a training-set frame (see :mod:`cortex.routing.data`).

    Args:
        frame: rows with ``text``, ``label``, ``outcome_master`` and outcome columns (and ``topic``
            for a router that learns topics).
        masters: the masters, in the order the model will use.
        text_source: registry name or folder of the text encoder (default: packaged MiniLM).
        model_kwargs: other :class:`RouterConfig` fields (``hidden_dim``, ``ensemble_size``...).
        train: :class:`TrainConfig` (defaults if ``None``).
        cache_root: feature-cache folder (default ``$CORTEX_HOME/cache/router-features``).
        progress: ``progress(stage, done, total)`` with stage ``"embed"`` or ``"train"``.
    """
    cfg = train or TrainConfig()
    if len(frame) < 10:
        raise DataError(f"Only {len(frame)} training records; a router needs at least 10 (and far more to be useful).")
    gen = seed_everything(cfg.seed)
    model, observed = setup_model(frame, masters, cfg, text_source, model_kwargs)
    fs = prepare_features(model, frame, observed, cache_root, progress)
    texts_all = None if model.config.freeze_text else frame["text"].astype(str).tolist()
    train_idx, val_idx = stratified_split(fs.labels.numpy(), cfg.val_fraction, cfg.seed)
    if len(val_idx) == 0:
        raise DataError("The validation split is empty; every master has fewer than 3 records. Add more data.")
    tr, va = fs.subset(train_idx), fs.subset(val_idx)
    tr_texts = [texts_all[i] for i in train_idx] if texts_all is not None else None
    va_texts = [texts_all[i] for i in val_idx] if texts_all is not None else None
    fit_standardizations(model, tr)
    best_epoch, history = fit(model, tr, va, tr_texts, va_texts, cfg, gen, progress)
    readout_report = fit_readout(model, tr, va, cfg) if model.readout is not None and va_texts is None else {}
    validation = calibrate(model, va, va_texts, cfg)
    weight, by_weight = choose_knn_weight(model, tr, va, va_texts, cfg)
    success, success_report = fit_success_model(model, fs, tr, va, cfg) if va_texts is None else (None, {})
    validation.update({"n_train": len(tr), "n_val": len(va), "best_epoch": best_epoch, "epochs": len(history),
                       "knn_weight": weight, "accuracy_by_knn_weight": by_weight, **readout_report, **success_report})
    return TrainResult(
        model=model, knn=build_knn(fs, len(masters), k=cfg.knn_k, min_similarity=cfg.knn_min_similarity),
        history=history, best_epoch=best_epoch, knn_weight=weight, validation=validation,
        val_task_ids=frame["task_id"].iloc[val_idx].astype(str).tolist(), success=success,
    )


def _fit_linear(layer: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, l2: float) -> None:
    """Multinomial logistic regression: ``layer`` minimizes mean cross-entropy + ``l2 * |W|^2`` (full batch,
    L-BFGS from zero; the problem is convex, so the answer does not depend on a seed or a stopping rule)."""
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=300, history_size=20, tolerance_grad=1e-6,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)


def fit_readout(model: RouterModel, tr: FeatureSet, va: FeatureSet, cfg: TrainConfig) -> dict[str, Any]:
    """Fit the router's convex read-out on the training split and choose its L2 penalty and its share of
    the master probabilities on the validation split (master accuracy; ties: the larger penalty, the
    smaller share). Sets ``model.config.readout_weight``; returns what was chosen for the report."""
    target_tr = tr.topics if model.config.topics else tr.labels
    rows = target_tr >= 0
    dev = model.text_mean.device
    with torch.no_grad():
        x_tr, x_va = model.standardize_text(tr.text[rows]), model.standardize_text(va.text)
    model.config.readout_weight = 0.0
    tree = torch.as_tensor(model.predict(va.text, va.context, va.lexical, success_leaves=False).probs)
    layer, y_va = model.readout, va.labels.numpy()
    by_l2, best = {}, None
    with torch.enable_grad():
        for l2 in sorted(cfg.readout_l2, reverse=True):
            _fit_linear(layer, x_tr, target_tr[rows].long().to(dev), l2)
            with torch.no_grad():
                p = model.readout_log_probs(x_va).exp().cpu()
            by_l2[str(l2)] = accuracy(y_va, p.argmax(-1).numpy())
            if best is None or by_l2[str(l2)] > by_l2[str(best[0])]:
                best = (l2, {k: v.detach().clone() for k, v in layer.state_dict().items()}, p)
    l2, state, p_readout = best
    layer.load_state_dict(state)
    by_weight = {str(w): accuracy(y_va, ((1 - w) * tree + w * p_readout).argmax(-1).numpy())
                 for w in cfg.readout_weights}
    weight = max(cfg.readout_weights, key=lambda w: (by_weight[str(w)], -w))
    model.config.readout_weight = float(weight)
    return {"readout_l2": l2, "readout_accuracy_by_l2": by_l2, "readout_weight": float(weight),
            "accuracy_by_readout_weight": by_weight}


def outcome_memory(fs: FeatureSet, num_masters: int) -> OutcomeMemory:
    """The success head's memory of ``fs``'s tasks with an observed success."""
    return OutcomeMemory.build(fs.text.numpy(), fs.outcome_master.numpy(), fs.success.numpy(), fs.topics.numpy(),
                               num_masters)


def success_rows(memory: OutcomeMemory, fs: FeatureSet, loo: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(x (N, F), y (N,))``: success-head features of ``fs``'s tasks for the master that handled each, and
    the observed outcome (tasks without one are left out). ``loo``: ``memory`` was built from ``fs``
    itself, so each task's own row is left out of its neighbours."""
    y = fs.success.numpy()
    rows = np.flatnonzero(np.isfinite(y))
    exclude = None
    if loo:  # OutcomeMemory.build keeps the rows with a known outcome, in order
        exclude = np.full(len(y), -1)
        exclude[rows] = np.arange(len(rows))
    x = success_features(memory, fs.text.numpy(), len(memory.base_rate), fs.text_stats.numpy(), exclude=exclude)
    return x[rows, fs.outcome_master.numpy()[rows]], y[rows]


def fit_success_model(model: RouterModel, fs: FeatureSet, tr: FeatureSet, va: FeatureSet,
                      cfg: TrainConfig) -> tuple[SuccessModel | None, dict[str, float]]:
    """The success head, fitted on the training split with leave-one-out neighbours and checked on the
    validation split (neighbours from the training split) beside logistic regression on the same
    features, which it has to beat. Served with a memory of every training task."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from cortex.routing.metrics import auroc

    if "success" not in model.config.outcomes:
        return None, {}
    memory = outcome_memory(tr, len(model.masters))
    x, y = success_rows(memory, tr, loo=True)
    xv, yv = success_rows(memory, va, loo=False)
    if min(int(y.sum()), int(len(y) - y.sum())) < 5:
        return None, {}
    head = SuccessHead().fit(x, y, seed=cfg.seed)
    scale = StandardScaler().fit(x)
    lr = LogisticRegression(max_iter=2000).fit(scale.transform(x), y)
    report = {}
    if 0 < yv.sum() < len(yv):
        report = {"success_auroc_head": auroc(yv.astype(bool), head.predict(xv)),
                  "success_auroc_lr_same_features": auroc(yv.astype(bool), lr.predict_proba(scale.transform(xv))[:, 1])}
    return SuccessModel(head, outcome_memory(fs, len(model.masters))), report


@torch.no_grad()
def choose_knn_weight(
    model: RouterModel, tr: FeatureSet, va: FeatureSet, va_texts: list[str] | None, cfg: TrainConfig,
) -> tuple[float, dict[str, float]]:
    """The blend weight ``w`` of ``(1 - w) p_model + w p_knn`` most accurate on the validation split,
    with a memory of the *training* split only (a validation task must not find itself)."""
    if va_texts is not None:  # the encoder is being trained: its features are not fixed, skip the vote
        return 0.0, {}
    mem = build_knn(tr, len(model.masters), k=cfg.knn_k, min_similarity=cfg.knn_min_similarity)
    vote = mem.vote(va.text.numpy())
    probs = model.predict(va.text, va.context, va.lexical).probs
    y = va.labels.numpy()
    scores = {}
    for w in cfg.knn_weights:
        blended = np.where(vote.support[:, None] > 0, (1 - w) * probs + w * vote.probs, probs)
        scores[str(w)] = accuracy(y, blended.argmax(1))
    best = max(cfg.knn_weights, key=lambda w: (scores[str(w)], -w))
    return float(best), scores


@torch.no_grad()
def calibrate(model: RouterModel, va: FeatureSet, va_texts: list[str] | None, cfg: TrainConfig) -> dict[str, float]:
    """Fit the master and success temperatures on the validation split; returns before/after figures."""
    _, outs = _evaluate_loss(model, va, va_texts, cfg)
    logits = torch.cat([o.master_logits.float().mean(0) for o in outs]).cpu().numpy()  # (N, C)
    y = va.labels.numpy()
    t_master = fit_temperature(logits, y)
    probs_before = np.exp(logits - logits.max(1, keepdims=True))
    probs_before /= probs_before.sum(1, keepdims=True)
    z = logits / t_master
    probs_after = np.exp(z - z.max(1, keepdims=True))
    probs_after /= probs_after.sum(1, keepdims=True)
    report = {
        "accuracy": accuracy(y, logits.argmax(1)), "temperature_master": t_master,
        "nll_before": nll(logits, y, 1.0), "nll_after": nll(logits, y, t_master),
        "ece_before": expected_calibration_error(probs_before, y), "ece_after": expected_calibration_error(probs_after, y),
    }
    model.config.temperature_master = t_master
    if "success" in model.config.outcomes:
        s_logits = torch.cat([o.success_logits.float().mean(0) for o in outs]).cpu().numpy()
        s = va.success.numpy()
        known = np.isfinite(s)
        if known.sum() >= 2:
            z = s_logits[np.arange(len(s)), va.outcome_master.numpy()][known]
            t_success = fit_temperature(z, s[known].astype(np.int64))
            model.config.temperature_success = t_success
            report["temperature_success"] = t_success
    return report


def build_knn(fs: FeatureSet, num_classes: int, k: int = 10, min_similarity: float = 0.0) -> KNNMemory:
    """Memory of successful past decisions: tasks whose handling master succeeded and was the right one.

    Without any success outcomes in the data, every labeled task counts as a past decision.
    """
    success = fs.success.numpy()
    labels, handled = fs.labels.numpy(), fs.outcome_master.numpy()
    keep = (success == 1) & (labels == handled) if np.isfinite(success).any() else np.ones(len(labels), bool)
    mem = KNNMemory(fs.text.shape[1], num_classes, k=k, min_similarity=min_similarity)
    mem.add(fs.text.numpy()[keep], labels[keep])
    return mem


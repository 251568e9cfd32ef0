"""Probe training for many concepts at once, with graduation, best-layer-per-band and calibration.

:func:`train_lenses` takes pooled activations ``{layer: (M, d)}`` of a :class:`LensDataset`'s texts and:

1. **scouts** layers: a linear probe per (concept, layer), all trained in one batched run (cheap), scored
   by validation loss; the best layer of each early / mid / late band is kept. With ``layer_choice``
   ``pooled`` (the default) a layer's score is its validation loss averaged over all concepts, so every
   concept gets the same band layers: a concept's own validation set is a handful of sentences, too few
   to tell its layers apart (per-concept choice, ``concept``, picks worse layers on held-out data);
2. **trains** the configured probe kind (MLP or linear) only at those layers, all (concept, layer) pairs
   in batched chunks, full batch per concept. The graduation loop trains ``steps``, measures
   validation F1, freezes probes that reach ``target_f1``, adds mined hard negatives for the others and
   trains them further; it stops after ``max_rounds`` whatever happens. The primary layer is the
   candidate with the best validation F1 (pooled over concepts, or per concept);
3. **refits** (``refit``, the default) every kept probe once more from scratch on its training sentences,
   its mined negatives *and* its validation sentences: once layers are chosen the validation sentences
   are more useful as training data (they are hand-written, like what the probe will meet). Recorded
   ``val_f1`` and ``graduated`` are those of the graduation loop, measured before the refit;
4. measures F1 on test sentences no probe ever trained on, and records each probe's logit statistics on
   background text (calibration).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from cortex._validate import (
    Problems,
    build_dataclass,
    check_bool,
    check_choice,
    check_fraction,
    check_number,
    check_positive,
    check_type,
)
from cortex.errors import ConfigError
from cortex.lenses.batched_training import BATCHED_KINDS, make_optimizer
from cortex.lenses.dataset import ConceptSplit, DatasetConfig, LensDataset

BANDS = ("early", "mid", "late")
INPUT_NORMS = ("scale", "zscore", "none")
LAYER_CHOICES = ("pooled", "concept")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class LensTrainingConfig:
    """Run settings of lens training; every field is checked in ``__post_init__``."""

    layers: list[int] | None = None   # model layers to train on (None: all)
    probe: str = "linear"             # linear | mlp (linear: higher held-out F1 on first-light/MiniLM)
    layer_norm: bool = True
    input_norm: str = "scale"         # scale | zscore | none (see input_statistics)
    hidden: int = 128
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-2
    steps: int = 20                   # full-batch optimizer steps per graduation round (early stop: few)
    max_positives: int = 32           # per concept and round
    max_negatives: int = 96
    chunk_probes: int = 1024          # probes trained together (bounds memory)
    target_f1: float = 0.85
    max_rounds: int = 2
    hard_negatives: int = 16          # mined per stuck probe per round
    layer_choice: str = "pooled"      # pooled | concept: rank layers by validation pooled over concepts or per concept
    refit: bool = True                # retrain kept probes on train + validation sentences after selection
    dtype: str = "float32"            # float32 | bfloat16 (autocast for the probe matmuls)
    pool: str = "mean"
    max_length: int = 128
    encode_batch_size: int = 64
    seed: int = 0
    data: DatasetConfig = field(default_factory=DatasetConfig)

    def __post_init__(self) -> None:
        problems = Problems()
        if isinstance(self.data, Mapping):
            self.data = build_dataclass(DatasetConfig, self.data, "data", problems)
        self.check(problems)
        problems.raise_if_any("lens training settings")

    def check(self, problems: Problems) -> None:
        """Record every problem, each naming its field and the accepted values."""
        check_choice("probe", self.probe, BATCHED_KINDS, problems)
        check_choice("dtype", self.dtype, DTYPES, problems)
        check_choice("input_norm", self.input_norm, INPUT_NORMS, problems)
        check_choice("layer_choice", self.layer_choice, LAYER_CHOICES, problems)
        check_choice("pool", self.pool, ("mean", "last"), problems)
        check_positive("hidden", self.hidden, problems, minimum=2)  # the MLP's second layer is hidden // 2
        check_positive("max_length", self.max_length, problems, minimum=2)
        for name in ("steps", "max_positives", "max_negatives", "chunk_probes", "max_rounds", "encode_batch_size"):
            check_positive(name, getattr(self, name), problems)
        check_positive("hard_negatives", self.hard_negatives, problems, minimum=0)
        check_fraction("dropout", self.dropout, problems, upper_open=True)
        check_fraction("target_f1", self.target_f1, problems, lower_open=True)
        check_number("lr", self.lr, problems, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, problems, low=0)
        for name in ("layer_norm", "refit"):
            check_bool(name, getattr(self, name), problems)
        check_type("seed", self.seed, (int,), problems)
        if self.layers is not None and check_type("layers", self.layers, (list, tuple), problems) and not self.layers:
            problems.add("layers=[] selects no layer; pass layer indices or leave it unset for all layers.",
                         "layers", self.layers)
        if isinstance(self.data, DatasetConfig):
            self._check_data(self.data, problems)

    @staticmethod
    def _check_data(data: DatasetConfig, problems: Problems) -> None:
        check_fraction("data.test_fraction", data.test_fraction, problems, upper_open=True)
        check_positive("data.val_per_concept", data.val_per_concept, problems, minimum=0)
        check_positive("data.n_folds", data.n_folds, problems, minimum=2)
        check_number("data.hint_weight", data.hint_weight, problems, low=0, low_open=True)
        for name in ("descendant_positives", "sibling_negatives", "distant_negatives", "background"):
            check_positive(f"data.{name}", getattr(data, name), problems, minimum=0)
        for name in ("definitions", "templates", "wordnet"):
            check_bool(f"data.{name}", getattr(data, name), problems)
        if data.fold is not None and check_positive("data.fold", data.fold, problems, minimum=0) \
                and isinstance(data.n_folds, int) and data.fold >= data.n_folds:
            problems.add(f"data.fold={data.fold} must be below data.n_folds={data.n_folds}.", "data.fold", data.fold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProbeMetrics:
    """Figures of one trained probe (concept at one model layer)."""

    concept: str
    layer: int
    band: str
    val_f1: float | None
    test_f1: float | None
    test_precision: float | None
    test_recall: float | None
    n_train_pos: int
    n_train_neg: int
    n_test: int
    graduated: bool
    rounds: int
    primary: bool = False
    test_counts: list[int] = field(default_factory=list)   # [tp, fp, fn] on the test sentences
    calibration: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LensTrainingResult:
    """Kept probes ``{layer: {concept: tensors}}``, their metrics, and the layers' input statistics."""

    kind: str
    layers: list[int]
    normalizers: dict[int, tuple[torch.Tensor, torch.Tensor]]
    probes: dict[int, dict[str, dict[str, torch.Tensor]]]
    metrics: dict[int, dict[str, ProbeMetrics]]
    scout_val_loss: dict[int, dict[str, float]]
    seconds: float

    def primary_layer(self, concept: str) -> int | None:
        for layer, per in self.metrics.items():
            if concept in per and per[concept].primary:
                return layer
        return None

    def primary_metrics(self) -> list[ProbeMetrics]:
        return [m for per in self.metrics.values() for m in per.values() if m.primary]


def layer_band(layer: int, n_layers: int) -> str:
    """``early`` / ``mid`` / ``late``: which third of the model's ``n_layers`` blocks ``layer`` falls in."""
    return BANDS[min(2, 3 * layer // max(1, n_layers))]


def f1_scores(pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-row F1, precision, recall of boolean ``pred`` vs ``label`` over ``mask`` (all ``(P, V)``).

    Rows without positives give NaN; a row with positives but no predicted positive has precision 0.
    """
    pred, label, mask = pred.bool() & mask.bool(), label.bool() & mask.bool(), mask.bool()
    tp = (pred & label).sum(1).float()
    fp = (pred & ~label & mask).sum(1).float()
    fn = (~pred & label).sum(1).float()
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.full_like(tp, float("nan")))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))
    f1 = torch.where(torch.isnan(recall), recall, f1)
    return f1, precision, recall


def _padded(lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged index lists → ``(C, max_len)`` indices (pad 0) and lengths ``(C,)``."""
    width = max(1, max(len(x) for x in lists))
    idx = torch.zeros(len(lists), width, dtype=torch.long)
    for i, x in enumerate(lists):
        idx[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    return idx, torch.tensor([len(x) for x in lists])


def _eval_set(pos: list[list[int]], neg: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per concept: indices ``(C, V)``, labels ``(C, V)``, mask ``(C, V)``."""
    rows = [p + n for p, n in zip(pos, neg)]
    idx, lens = _padded(rows)
    labels = torch.zeros_like(idx, dtype=torch.bool)
    for i, p in enumerate(pos):
        labels[i, : len(p)] = True
    mask = torch.arange(idx.shape[1]).unsqueeze(0) < lens.unsqueeze(1)
    return idx, labels, mask


class _Trainer:
    """Stacked standardized activations ``X (L, M, d)`` and the probes' batched forward passes."""

    def __init__(self, X: torch.Tensor, cfg: LensTrainingConfig):
        self.X = X
        self.L, self.M, self.d = X.shape
        self.cfg = cfg
        self.autocast = cfg.dtype == "bfloat16"

    def gather(self, layer_idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``rows (P, B)`` text indices of probes at ``layer_idx (P,)`` → activations ``(P, B, d)``."""
        return self.X[layer_idx.unsqueeze(1), rows]

    def logits(self, model: Any, x: torch.Tensor, train: bool, normalized: bool = False) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast and x.device.type == "cpu"):
            return model.logits(x, train=train, normalized=normalized).float()

    @torch.no_grad()
    def evaluate(self, model: Any, layer_idx: torch.Tensor, rows: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """Logits ``(P, V)`` of probe ``p`` (at layer ``layer_idx[p]``) on text rows ``rows[p]``."""
        out = []
        for s in range(0, len(layer_idx), chunk):
            sl = slice(s, s + chunk)
            out.append(self.logits(_Subset(model, sl),
                                   self.gather(layer_idx[sl], rows[sl]), False))
        return torch.cat(out) if out else torch.zeros(0, rows.shape[1])


def input_statistics(acts: dict[int, torch.Tensor], mode: str = "scale") -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer ``(mean, std)`` vectors ``(d,)`` that probes subtract and divide by.

    ``scale``: no shift, every dimension divided by the layer's root-mean-square activation (keeps the
    geometry, only fixes the magnitude, which differs a lot between layers); ``zscore``: per-dimension
    mean and standard deviation; ``none``: identity.
    """
    if mode not in INPUT_NORMS:
        raise ConfigError.bad_choice("input_norm", mode, INPUT_NORMS)
    out = {}
    for layer, a in acts.items():
        d = a.shape[1]
        if mode == "zscore":
            std = a.std(0)
            out[layer] = (a.mean(0), std.clamp_min(1e-4 * max(1e-8, float(std.mean()))))
        elif mode == "scale":
            out[layer] = (torch.zeros(d), torch.full((d,), max(1e-8, float(a.pow(2).mean().sqrt()))))
        else:
            out[layer] = (torch.zeros(d), torch.ones(d))
    return out


@dataclass
class _Sets:
    """Index tensors shared by every chunk: validation and test rows per concept, mining candidates."""

    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    has_val: torch.Tensor
    owner_rows: torch.Tensor      # training positives of all concepts (hard-negative candidates)
    owner_of: torch.Tensor        # concept of each candidate row


@dataclass
class _Run:
    """What one batched training run produced for probes ``0..P-1``."""

    exported: dict[int, dict[str, torch.Tensor]]
    val_f1: torch.Tensor
    val_loss: torch.Tensor
    rounds: torch.Tensor
    graduated: torch.Tensor
    negatives: dict[int, list[int]] = field(default_factory=dict)   # training negatives incl. mined ones


def train_lenses(
    acts: dict[int, torch.Tensor],
    dataset: LensDataset,
    cfg: LensTrainingConfig,
    n_model_layers: int,
    progress: Callable[[str, float], None] | None = None,
) -> LensTrainingResult:
    """Train probes for every concept of ``dataset`` at the best layers of ``acts`` (``{layer: (M, d)}``)."""
    start = time.perf_counter()
    layers = sorted(acts)
    normalizers = input_statistics(acts, cfg.input_norm)
    X = torch.stack([(acts[l] - normalizers[l][0]) / normalizers[l][1] for l in layers])  # (L, M, d)
    trainer = _Trainer(X, cfg)
    splits = dataset.splits
    C, L = len(splits), len(layers)
    sets = _sets_of(splits)
    bands = [layer_band(l, n_model_layers) for l in layers]

    def report(stage: str, lo: float, hi: float) -> Callable[[str, float], None]:
        return lambda msg, frac: progress(f"{stage}: {msg}", lo + (hi - lo) * frac) if progress else None

    # 1. scout: linear probes on every layer pick each concept's best layer per band
    all_c, all_l = torch.arange(C).repeat(L), torch.arange(L).repeat_interleave(C)
    if L > 1 or cfg.probe == "linear":
        scout_cfg = _scout_config(cfg) if cfg.probe != "linear" else cfg
        scout = _run(trainer, all_c, all_l, splits, sets, scout_cfg, report("scouting layers", 0.0, 0.3))
        score = scout.val_loss.view(L, C)
    else:
        scout, score = None, torch.zeros(1, C)
    pooled = cfg.layer_choice == "pooled"
    choice = _best_layer_per_band(_pooled(score, sets.has_val) if pooled else score, bands)
    # 2. the configured probes at the chosen layers (the scout already is that when the kind is linear)
    pairs = sorted({(c, li) for c, best in choice.items() for li in best.values()}, key=lambda p: (p[1], p[0]))
    if cfg.probe == "linear" and scout is not None:
        run = scout
        pick = {pair: pair[1] * C + pair[0] for pair in pairs}
    else:
        pc = torch.tensor([c for c, _ in pairs], dtype=torch.long)
        pl = torch.tensor([li for _, li in pairs], dtype=torch.long)
        run = _run(trainer, pc, pl, splits, sets, cfg, report("training probes", 0.3, 0.85))
        pick = {pair: i for i, pair in enumerate(pairs)}
    val_f1 = torch.full((L, C), -float("inf"))  # untrained (concept, layer) pairs: missing when pooled
    val_loss = torch.full((L, C), float("inf"))
    for (c, li), i in pick.items():
        val_f1[li, c], val_loss[li, c] = run.val_f1[i], run.val_loss[i]
    if pooled:
        val_f1, val_loss = -_pooled(-val_f1, sets.has_val), _pooled(val_loss, sets.has_val)
    refitted = _refit(trainer, pairs, pick, run, splits, sets, cfg, report("refitting", 0.85, 0.95)) if cfg.refit else {}
    kept, metrics = _keep(choice, pick, run, refitted, val_f1, val_loss, layers, bands, splits, sets)
    if progress:
        progress("measuring held-out F1 and calibration", 0.95)
    _score_kept(trainer, kept, metrics, layers, dataset, sets.test, cfg)
    scout_loss = ({layers[li]: {splits[c].term: round(float(score[li, c]), 4) for c in range(C)} for li in range(L)}
                  if scout is not None else {})
    return LensTrainingResult(
        kind=cfg.probe, layers=layers, normalizers=normalizers,
        probes={l: p for l, p in kept.items() if p}, metrics={l: m for l, m in metrics.items() if m},
        scout_val_loss=scout_loss, seconds=time.perf_counter() - start,
    )

def _sets_of(splits: list) -> _Sets:
    """Validation and test sets of every concept, and which concept owns each training positive."""
    owner_of: dict[int, int] = {}
    for ci, s in enumerate(splits):
        for r in s.train_pos:
            owner_of.setdefault(r, ci)
    return _Sets(
        val=_eval_set([s.val_pos for s in splits], [s.val_neg for s in splits]),
        test=_eval_set([s.test_pos for s in splits], [s.test_neg for s in splits]),
        has_val=torch.tensor([bool(s.val_pos) for s in splits]),
        owner_rows=torch.tensor(sorted(owner_of), dtype=torch.long),
        owner_of=torch.tensor([owner_of[r] for r in sorted(owner_of)], dtype=torch.long),
    )


def _best_layer_per_band(score: torch.Tensor, bands: list[str]) -> dict[int, dict[str, int]]:
    """``{concept: {band: layer index}}``: the lowest validation loss of ``score (L, C)`` in each band
    (ties go to the deeper layer)."""
    choice: dict[int, dict[str, int]] = {}
    for c in range(score.shape[1]):
        best: dict[str, int] = {}
        for li, band in enumerate(bands):
            if band not in best or score[li, c] <= score[best[band], c]:
                best[band] = li
        choice[c] = best
    return choice


def _keep(choice, pick, run, refitted, val_f1, val_loss, layers, bands, splits, sets):
    """The kept probe weights ``{layer: {term: state}}`` and their metrics; each concept's primary layer is
    its best pooled validation F1 (then loss, then depth)."""
    kept: dict[int, dict[str, dict[str, torch.Tensor]]] = {l: {} for l in layers}
    metrics: dict[int, dict[str, ProbeMetrics]] = {l: {} for l in layers}
    for c, best in choice.items():
        cands = sorted(set(best.values()))
        primary = max(cands, key=lambda li: (float(val_f1[li, c]), -float(val_loss[li, c]), li))
        for li in cands:
            i = pick[(c, li)]
            term = splits[c].term
            metrics[layers[li]][term] = ProbeMetrics(
                concept=term, layer=layers[li], band=bands[li],
                val_f1=round(float(run.val_f1[i]), 4) if sets.has_val[c] else None,
                test_f1=None, test_precision=None, test_recall=None,
                n_train_pos=len(splits[c].train_pos), n_train_neg=len(splits[c].train_neg),
                n_test=len(splits[c].test_pos) + len(splits[c].test_neg),
                graduated=bool(run.graduated[i]), rounds=int(run.rounds[i]), primary=li == primary,
            )
            kept[layers[li]][term] = refitted.get((c, li), run.exported[i])
    return kept, metrics


def _pooled(score: torch.Tensor, has_val: torch.Tensor) -> torch.Tensor:
    """``score (L, C)`` → every column replaced by the row mean over concepts with validation sentences
    (over all concepts when none has any; infinities, i.e. untrained pairs, count as missing)."""
    cols = has_val if bool(has_val.any()) else torch.ones_like(has_val)
    s = score[:, cols]
    finite = torch.isfinite(s)
    mean = torch.where(finite, s, torch.zeros_like(s)).sum(1) / finite.sum(1).clamp_min(1)
    mean = torch.where(finite.any(1), mean, torch.full_like(mean, float("inf")))
    return mean.unsqueeze(1).expand_as(score).clone()


def _refit(trainer: _Trainer, pairs: list[tuple[int, int]], pick: dict[tuple[int, int], int], run: _Run,
           splits: list, sets: _Sets, cfg: LensTrainingConfig,
           report: Callable[[str, float], None]) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """Probes ``pairs`` (concept, layer index) trained afresh, one round of ``steps × max_rounds`` (the
    graduation loop's budget) without mining, on their training
    positives + validation positives and training negatives (with mined ones) + validation negatives.
    Concepts without validation sentences keep the probe of the graduation loop (nothing to add)."""
    from dataclasses import replace

    todo = [(c, li) for c, li in pairs if splits[c].val_pos or splits[c].val_neg]
    if not todo:
        return {}
    merged = []
    for c, li in todo:
        s = splits[c]
        negs = run.negatives.get(pick[(c, li)], s.train_neg)
        merged.append(ConceptSplit(
            s.term, train_pos=list(dict.fromkeys(s.train_pos + s.val_pos)),
            train_neg=list(dict.fromkeys(negs + s.val_neg)), hint_rows=s.hint_rows | s.val_hint_rows))
    ids = torch.arange(len(todo))
    refit_sets = replace(sets, val=tuple(t[[c for c, _ in todo]] for t in sets.val),
                         has_val=sets.has_val[[c for c, _ in todo]])
    one = replace(cfg, max_rounds=1, hard_negatives=0, steps=cfg.steps * cfg.max_rounds)
    out = _run(trainer, ids, torch.tensor([li for _, li in todo], dtype=torch.long), merged, refit_sets, one, report)
    return {pair: out.exported[i] for i, pair in enumerate(todo)}


def _scout_config(cfg: LensTrainingConfig) -> LensTrainingConfig:
    """Linear probes for layer selection: one round, a larger step size, no mining."""
    from dataclasses import replace

    return replace(cfg, probe="linear", lr=max(cfg.lr, 1e-2), steps=max(20, cfg.steps // 2), max_rounds=1,
                   hard_negatives=0, dropout=0.0)


def _run(trainer: _Trainer, probe_c: torch.Tensor, probe_l: torch.Tensor, splits: list, sets: _Sets,
         cfg: LensTrainingConfig, report: Callable[[str, float], None]) -> _Run:
    """Train probes ``(probe_c[p], probe_l[p])`` in chunks of ``cfg.chunk_probes``, each a graduation loop."""
    P = len(probe_c)
    out = _Run(exported={}, val_f1=torch.full((P,), -1.0), val_loss=torch.full((P,), float("inf")),
               rounds=torch.zeros(P, dtype=torch.long), graduated=torch.zeros(P, dtype=torch.bool))
    n_chunks = max(1, math.ceil(P / cfg.chunk_probes))
    for k in range(n_chunks):
        ids = torch.arange(k * cfg.chunk_probes, min(P, (k + 1) * cfg.chunk_probes))
        _train_chunk(trainer, ids, probe_c, probe_l, splits, sets, cfg, out,
                     lambda msg, frac, k=k: report(msg, (k + frac) / n_chunks))
    return out


def _full_batch(negs: list[list[int]], pos: list[list[int]], hints: list[set[int]], cfg: LensTrainingConfig,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per probe: rows ``(P, R)`` (positives then up to ``max_negatives`` sampled negatives), labels and
    loss weights ``(P, R)`` that give each class half the loss (0 on padding); within a class the
    concept's own hand-written sentences weigh ``hint_weight`` times the others."""
    rows_l, labels_l, weights_l = [], [], []
    hw = cfg.data.hint_weight
    for p, n, h in zip(pos, negs, hints):
        p = p[: cfg.max_positives]
        if len(n) > cfg.max_negatives:
            n = [n[i] for i in torch.randperm(len(n), generator=gen)[: cfg.max_negatives].tolist()]
        rows_l.append(p + n)
        labels_l.append([1.0] * len(p) + [0.0] * len(n))
        wp = [hw if r in h else 1.0 for r in p]
        wn = [hw if r in h else 1.0 for r in n]
        weights_l.append([0.5 * w / sum(wp) for w in wp] + [0.5 * w / sum(wn) for w in wn])
    rows, _ = _padded(rows_l)
    labels = torch.zeros(rows.shape)
    weights = torch.zeros(rows.shape)
    for i, (lab, w) in enumerate(zip(labels_l, weights_l)):
        labels[i, : len(lab)] = torch.tensor(lab)
        weights[i, : len(w)] = torch.tensor(w)
    return rows, labels, weights


def _train_chunk(trainer: _Trainer, ids: torch.Tensor, probe_c: torch.Tensor, probe_l: torch.Tensor,
                 splits: list, sets: _Sets, cfg: LensTrainingConfig, out: _Run,
                 report: Callable[[str, float], None]) -> None:
    """The graduation loop for probes ``ids``: train, validate, freeze graduates, mine, repeat (bounded)."""
    gen = torch.Generator().manual_seed(cfg.seed + int(ids[0]))
    model = BATCHED_KINDS[cfg.probe](len(ids), trainer.d, hidden=cfg.hidden, layer_norm=cfg.layer_norm,
                                     dropout=cfg.dropout, seed=cfg.seed + int(ids[0]))
    active = ids.clone()
    negs = {int(p): list(splits[int(probe_c[p])].train_neg) for p in ids}
    v_idx, v_lab, v_mask = sets.val
    for rnd in range(cfg.max_rounds):
        a_c, a_l = probe_c[active], probe_l[active]
        rows, y, w = _full_batch([negs[int(p)] for p in active], [splits[int(c)].train_pos for c in a_c],
                                 [splits[int(c)].hint_rows for c in a_c], cfg, gen)
        x = model.normalize(trainer.gather(a_l, rows))         # (P, R, d), fixed for the round
        opt = make_optimizer(model.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        for step in range(cfg.steps):
            z = trainer.logits(model, x, train=True, normalized=True)
            loss = (F.binary_cross_entropy_with_logits(z, y, reduction="none") * w).sum()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % 10 == 0:
                report(f"round {rnd + 1}, {len(active)} probes", (rnd * cfg.steps + step) / (cfg.max_rounds * cfg.steps))
        for p in model.params.values():
            p.requires_grad_(False)
        out.rounds[active] += 1
        vz = trainer.evaluate(model, a_l, v_idx[a_c])
        v_f1, _, _ = f1_scores(vz > 0, v_lab[a_c], v_mask[a_c])
        has = sets.has_val[a_c]
        v_f1 = torch.where(has, v_f1, torch.ones_like(v_f1))  # nothing to measure: accept
        vl = F.binary_cross_entropy_with_logits(vz, v_lab[a_c].float(), reduction="none")
        v_loss = torch.where(has, (vl * v_mask[a_c]).sum(1) / v_mask[a_c].sum(1).clamp_min(1), torch.zeros_like(v_f1))
        better = (v_f1 > out.val_f1[active] + 1e-6) | ((v_f1 >= out.val_f1[active] - 1e-6) & (v_loss < out.val_loss[active]))
        for j in better.nonzero().reshape(-1).tolist():
            i = int(active[j])
            out.exported[i] = model.export(j)
            out.val_f1[i], out.val_loss[i] = v_f1[j], v_loss[j]
        passed = v_f1 >= cfg.target_f1
        out.graduated[active[passed]] = True
        keep = (~passed).nonzero().reshape(-1)
        if rnd == cfg.max_rounds - 1 or len(keep) == 0:
            break
        if cfg.hard_negatives:  # escalate: stuck probes see the other concepts' sentences they fire on
            _mine_hard_negatives(trainer, model, keep, active, probe_c, probe_l, negs, splits, sets, cfg, gen)
        model.keep(keep)
        active = active[keep]
    out.negatives.update(negs)


@torch.no_grad()
def _mine_hard_negatives(trainer: _Trainer, model: Any, keep: torch.Tensor, active: torch.Tensor,
                         probe_c: torch.Tensor, probe_l: torch.Tensor, negs: dict[int, list[int]], splits: list,
                         sets: _Sets, cfg: LensTrainingConfig, gen: torch.Generator) -> None:
    """Add to each stuck probe's negatives the other concepts' training sentences it scores highest."""
    if len(sets.owner_rows) == 0:
        return
    pick = torch.randperm(len(sets.owner_rows), generator=gen)[:512]
    rows, owners = sets.owner_rows[pick], sets.owner_of[pick]
    a_l = probe_l[active[keep]]
    z = trainer.evaluate(_Subset(model, keep), a_l,
                         rows.unsqueeze(0).expand(len(keep), -1))
    for j, p in enumerate(active[keep].tolist()):
        c = int(probe_c[p])
        s = splits[c]
        own = set(s.train_pos) | set(s.val_pos) | set(s.test_pos)
        existing = set(negs[p])
        added = 0
        for o in torch.argsort(z[j], descending=True).tolist():
            if z[j, o] <= 0 or added >= cfg.hard_negatives:
                break
            r = int(rows[o])
            if int(owners[o]) == c or r in own or r in existing:
                continue
            negs[p].append(r)
            added += 1


class _Subset:
    """Probes ``index`` (a slice: views; a tensor: copies) of a batched model, for scoring a subset."""

    def __init__(self, model: Any, index: slice | torch.Tensor):
        self.model = model
        self.params = {k: v[index] for k, v in model.params.items()}

    def logits(self, x: torch.Tensor, train: bool = False, normalized: bool = False) -> torch.Tensor:
        full = self.model.params
        self.model.params = self.params
        try:
            return self.model.logits(x, train=train, normalized=normalized)
        finally:
            self.model.params = full


@torch.no_grad()
def _score_kept(trainer: _Trainer, kept: dict, metrics: dict, layers: list[int], dataset: LensDataset,
                test: tuple[torch.Tensor, ...], cfg: LensTrainingConfig) -> None:
    """Test F1 and background-logit statistics of every kept probe, batched per layer."""
    idx, labels, mask = test
    cal = torch.tensor(dataset.calibration, dtype=torch.long)
    term_index = {s.term: i for i, s in enumerate(dataset.splits)}
    for li, layer in enumerate(layers):
        names = list(kept[layer])
        if not names:
            continue
        model = BATCHED_KINDS[cfg.probe](len(names), trainer.d, hidden=cfg.hidden, layer_norm=cfg.layer_norm,
                                         dropout=0.0)
        model.params = _stack_for_batched(cfg.probe, [kept[layer][n] for n in names], cfg.layer_norm)
        cs = torch.tensor([term_index[n] for n in names])
        ls = torch.full((len(names),), li)
        pred = trainer.evaluate(model, ls, idx[cs]) > 0
        lab, msk = labels[cs], mask[cs]
        f1, prec, rec = f1_scores(pred, lab, msk)
        tp = (pred & lab & msk).sum(1)
        fp = (pred & ~lab & msk).sum(1)
        fn = (~pred & lab & msk).sum(1)
        zc = trainer.evaluate(model, ls, cal.unsqueeze(0).expand(len(names), -1)) if len(cal) else None
        for k, n in enumerate(names):
            m = metrics[layer][n]
            m.test_counts = [int(tp[k]), int(fp[k]), int(fn[k])]
            if not math.isnan(float(f1[k])):
                m.test_f1, m.test_precision, m.test_recall = (round(float(v[k]), 4) for v in (f1, prec, rec))
            if zc is not None:
                zk = zc[k]
                m.calibration = {
                    "bg_mean": round(float(zk.mean()), 4), "bg_std": round(float(zk.std()), 4),
                    "bg_p95": round(float(torch.quantile(zk, 0.95)), 4),
                    "bg_fire_rate": round(float((zk > 0).float().mean()), 4),
                }


def _stack_for_batched(kind: str, tensors: list[dict[str, torch.Tensor]], layer_norm: bool) -> dict[str, torch.Tensor]:
    """Exported per-probe tensors → the stacked parameter layout of the batched trainer."""
    s = {k: torch.stack([t[k] for t in tensors]) for k in tensors[0]}
    if kind == "mlp":
        out = {"W1": s["W1"].transpose(1, 2), "b1": s["b1"].unsqueeze(1), "W2": s["W2"].transpose(1, 2),
               "b2": s["b2"].unsqueeze(1), "W3": s["W3"].transpose(1, 2), "b3": s["b3"].unsqueeze(1)}
    else:
        out = {"W": s["W"].unsqueeze(-1), "b": s["b"].reshape(-1, 1, 1)}
    return out

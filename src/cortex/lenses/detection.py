"""Running a lens pack on a model: per-token concept scores for a text, during generation, and evaluation.

:class:`LensRunner` loads a pack's primary probes into one :class:`~cortex.lenses.bank.BatchedLensBank`
per model layer (refusing a pack trained on another model or revision) and scores hidden states.
:meth:`LensRunner.detect` reads a text; :class:`GenerationMonitor` scores each new token while
``generate()`` runs with its KV cache; :func:`evaluate_lens_pack` re-measures held-out F1 through the
bank, rebuilding the pack's test split from its concept pack.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cortex.errors import ConfigError
from cortex.lenses.bank import BatchedLensBank
from cortex.lenses.capture import ActivationCapture, prefix_mean, token_states
from cortex.lenses.hierarchy import ConceptScore
from cortex.lenses.lens_pack import LensPack

MODES = ("prefix", "token")


@dataclass
class TokenConcepts:
    """Top concepts at one token position."""

    position: int
    token: str
    top: list[ConceptScore]


@dataclass
class TextDetection:
    """Per-token top concepts of a text, and the top concepts of the whole text (mean of its tokens)."""

    tokens: list[TokenConcepts]
    sentence: list[ConceptScore]


class LensRunner:
    """A lens pack's primary probes in banks, one per model layer, ready to score hidden states."""

    def __init__(self, pack: LensPack, loaded: Any, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, concepts: Sequence[str] | None = None, check: bool = True):
        if check:
            pack.check_model(loaded)
        self.pack, self.loaded = pack, loaded
        primary = pack.concepts()
        wanted = list(concepts) if concepts is not None else list(primary)
        from cortex.lenses.pipeline import ensure_concepts_known

        ensure_concepts_known(pack, wanted)
        self.banks: dict[int, BatchedLensBank] = {}
        for layer in sorted({primary[c] for c in wanted}):
            lp = pack.layers[layer]
            names = [c for c in wanted if primary[c] == layer]
            bank = BatchedLensBank(pack.hidden_size, input_mean=lp.input_mean, input_std=lp.input_std,
                                   device=device, dtype=dtype)
            bank.add_tensors(lp.kind, names, lp.select(names))
            self.banks[layer] = bank
        self.names = [n for b in self.banks.values() for n in b.names]
        # background statistics recorded at training: a calibrated score is (logit - mean) / std, i.e. how
        # unusual this logit is for the probe on ordinary text (probes that fire on everything rank low)
        cal = [pack.layers[primary[n]].results.get(n, {}).get("calibration", {}) for n in self.names]
        self.bg_mean = torch.tensor([c.get("bg_mean", 0.0) for c in cal])
        self.bg_std = torch.tensor([max(c.get("bg_std", 1.0), 1e-3) for c in cal])

    @property
    def layers(self) -> list[int]:
        return sorted(self.banks)

    @torch.no_grad()
    def logits(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        """``{layer: (T, d)}`` → logits ``(T, N)`` in :attr:`names` order."""
        return torch.cat([self.banks[l].logits(states[l]) for l in self.layers], dim=1)

    def calibrated(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., N)`` as background z-scores."""
        return (z - self.bg_mean) / self.bg_std

    def _top(self, z: torch.Tensor, k: int, calibrated: bool = True) -> list[ConceptScore]:
        layer_of = self.pack.concepts()
        key = self.calibrated(z) if calibrated else z
        _, idx = torch.topk(key, min(k, z.numel()))
        return [ConceptScore(self.names[i], float(torch.sigmoid(z[i])), float(z[i]), layer_of[self.names[i]],
                             float(key[i]) if calibrated else None) for i in idx.tolist()]

    def detect(self, text: str, top_k: int = 5, mode: str = "prefix", calibrated: bool = False) -> TextDetection:
        """Top concepts per token and for the whole text, ranked by raw logit (or by background z-score
        with ``calibrated``: on first-light/MiniLM the raw logit ranks more sensibly).

        ``prefix`` scores the running mean of the hidden states up to each token — what the probes were
        trained on (mean-pooled sentences), read as the text streams in; ``token`` scores each token's own
        hidden state.
        """
        if mode not in MODES:
            raise ConfigError.bad_choice("mode", mode, MODES)
        pieces, states = token_states(self.loaded.model, self.loaded.tokenizer, self.loaded.layers(), text, self.layers)
        if mode == "prefix":
            per_token = {l: prefix_mean(s.unsqueeze(0), torch.ones(1, s.shape[0]))[0] for l, s in states.items()}
        else:
            per_token = states
        z = self.logits(per_token)                                         # (T, N)
        sentence = self.logits({l: s.mean(0, keepdim=True) for l, s in states.items()})[0]
        tokens = [TokenConcepts(t, pieces[t], self._top(z[t], top_k, calibrated)) for t in range(len(pieces))]
        return TextDetection(tokens=tokens, sentence=self._top(sentence, top_k, calibrated))


class GenerationMonitor:
    """Score every forward step of ``generate()`` (prompt, then one step per token with a KV cache).

    >>> with GenerationMonitor(runner) as mon:
    ...     model.generate(**enc, max_new_tokens=20)
    >>> mon.steps[-1]           # top concepts at the last generated token

    Each step scores the newest position's hidden state per layer (or the running mean with
    ``mode="prefix"``), so the cost per token is one bank call per layer.
    """

    def __init__(self, runner: LensRunner, top_k: int = 5, mode: str = "prefix"):
        if mode not in MODES:
            raise ConfigError.bad_choice("mode", mode, MODES)
        self.runner, self.top_k, self.mode = runner, top_k, mode
        self.steps: list[list[ConceptScore]] = []
        self._pending: dict[int, torch.Tensor] = {}
        self._sum: dict[int, torch.Tensor] = {}
        self._count = 0
        self._capture = ActivationCapture(runner.loaded.layers(), runner.layers, store=False, on_output=self._on)

    def _on(self, layer: int, hidden: torch.Tensor) -> None:
        h = hidden[0].float()                                             # (T_step, d), batch row 0
        if self.mode == "prefix":
            self._sum[layer] = self._sum.get(layer, torch.zeros(h.shape[1])) + h.sum(0).cpu()
            self._pending[layer] = self._sum[layer] / (self._count + h.shape[0])
        else:
            self._pending[layer] = h[-1].cpu()
        if len(self._pending) == len(self.runner.layers):
            self._count += h.shape[0]
            z = self.runner.logits({l: v.reshape(1, -1) for l, v in self._pending.items()})[0]
            self.steps.append(self.runner._top(z, self.top_k, calibrated=False))
            self._pending = {}

    def __enter__(self) -> "GenerationMonitor":
        self._capture.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._capture.__exit__(*exc)


@dataclass
class EvalReport:
    """Held-out F1 of a pack's primary probes, re-measured through the bank."""

    per_concept: dict[str, dict[str, float | None]]
    median_f1: float | None
    mean_f1: float | None
    f1_at_target_fraction: float | None
    by_band: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_lens_pack(pack: LensPack, loaded: Any, concept_pack: Any, target: float = 0.85) -> EvalReport:
    """Rebuild the pack's test split from ``concept_pack`` (same settings and seed as training), encode the
    test sentences with ``loaded``, score them with the primary probes in banks, and report F1."""
    from cortex.lenses.capture import encode_texts
    from cortex.lenses.dataset import DatasetConfig, build_dataset
    from cortex.lenses.training import f1_scores

    pack.check_model(loaded)
    training = pack.info.get("training", {})
    dcfg = DatasetConfig(**training.get("data", {}))
    terms = sorted(pack.concepts())
    ds = build_dataset(concept_pack, terms, dcfg)
    runner = LensRunner(pack, loaded, check=False)
    rows = sorted({i for s in ds.splits for i in s.test_pos + s.test_neg})
    if not rows:
        return EvalReport({}, None, None, None)
    texts = [ds.texts[i] for i in rows]
    pos_of = {r: k for k, r in enumerate(rows)}
    acts = encode_texts(loaded.model, loaded.tokenizer, loaded.layers(), texts, runner.layers,
                        pool=pack.info["probe"].get("pool", "mean"))
    z = runner.logits(acts)                                                # (R, N)
    col = {n: i for i, n in enumerate(runner.names)}
    per: dict[str, dict[str, float | None]] = {}
    for s in ds.splits:
        idx = [pos_of[i] for i in s.test_pos + s.test_neg]
        if not s.test_pos:
            per[s.term] = {"f1": None, "precision": None, "recall": None}
            continue
        scores = z[idx, col[s.term]].unsqueeze(0)
        label = torch.tensor([True] * len(s.test_pos) + [False] * len(s.test_neg)).unsqueeze(0)
        f1, p, r = f1_scores(scores > 0, label, torch.ones_like(label))
        per[s.term] = {"f1": round(float(f1[0]), 4), "precision": round(float(p[0]), 4), "recall": round(float(r[0]), 4)}
    f1s = [v["f1"] for v in per.values() if v["f1"] is not None]
    layer_of = pack.concepts()
    bands: dict[str, list[float]] = {}
    for c, v in per.items():
        if v["f1"] is not None:
            band = pack.layers[layer_of[c]].results.get(c, {}).get("band", "?")
            bands.setdefault(band, []).append(v["f1"])
    return EvalReport(
        per_concept=per,
        median_f1=round(statistics.median(f1s), 4) if f1s else None,
        mean_f1=round(statistics.mean(f1s), 4) if f1s else None,
        f1_at_target_fraction=round(sum(f >= target for f in f1s) / len(f1s), 4) if f1s else None,
        by_band={b: {"n": len(v), "median_f1": round(statistics.median(v), 4)} for b, v in sorted(bands.items())},
    )

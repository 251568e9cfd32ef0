"""Divergence detection: does what the model represents internally match what its text says?

Two readings per window of tokens (``window`` tokens every ``stride``):

- internal: the lens probabilities of each concept averaged over the window's tokens, normalized to a
  distribution over the monitored concepts;
- text: a sentence encoder (the packaged MiniLM by default) embeds the window's text; its cosine similarity to
  each concept's description (definition, optionally examples) goes through a softmax with temperature ``τ``.

The divergence score of a window is the total-variation distance between the two distributions,
``½·Σ_c |p_c - q_c|`` in ``[0, 1]``. Windows above ``threshold`` are flagged; overlapping flagged windows merge
into spans, each naming the concept the model holds most beyond what the text shows (``internal > text``) and
the one the text shows most beyond the internal reading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cortex.errors import ConfigError, InputError
from cortex.models.pooling import masked_mean
from cortex.resources import minilm_dir


class TextConceptDetector:
    """Scores texts against concept descriptions with a sentence encoder: ``scores(texts) → (N, C)``.

    ``concepts`` maps a concept name to one or more descriptions; the concept's embedding is the normalized
    mean of its descriptions' embeddings. Sentence embeddings are the attention-masked mean of the encoder's
    last hidden state, L2-normalized.
    """

    def __init__(self, concepts: Mapping[str, str | Sequence[str]], encoder: str | os.PathLike | None = None,
                 temperature: float = 0.05, max_length: int = 128, batch_size: int = 32):
        from transformers import AutoModel, AutoTokenizer

        if len(concepts) < 2:
            raise InputError(
                f"Divergence needs at least two concepts to compare distributions (got {list(concepts)}); monitor "
                "a lens pack with two or more concepts."
            )
        if not temperature > 0:
            raise ConfigError(f"temperature={temperature} must be positive.")
        folder = Path(encoder) if encoder is not None else minilm_dir()
        if not folder.is_dir():
            raise InputError(f"Sentence encoder folder {folder} does not exist; pass the folder of a local encoder.")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.temperature = temperature
        self.max_length = max_length
        self.batch_size = batch_size
        self.names = list(concepts)
        rows = []
        for name in self.names:
            descs = [concepts[name]] if isinstance(concepts[name], str) else list(concepts[name])
            descs = [d for d in descs if d and d.strip()] or [name]
            e = self.embed(descs).mean(0)
            rows.append(e / e.norm().clamp_min(1e-12))
        self.concept_embeddings = torch.stack(rows)                                # (C, h)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalized mean-pooled sentence embeddings ``(N, h)``."""
        out = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[s:s + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            h = self.model(**enc).last_hidden_state
            e = masked_mean(h, enc["attention_mask"])
            out.append(torch.nn.functional.normalize(e, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.concept_embeddings.shape[1])

    def similarities(self, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of each text to each concept ``(N, C)``."""
        return self.embed(texts) @ self.concept_embeddings.T

    def scores(self, texts: Sequence[str]) -> torch.Tensor:
        """Softmax over concepts of similarity / τ: ``(N, C)`` rows summing to 1."""
        return torch.softmax(self.similarities(texts) / self.temperature, dim=-1)


@dataclass
class DivergenceSettings:
    """Window size and stride in tokens, and the total-variation threshold that flags a window."""

    window: int = 24
    stride: int = 8
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride < 1:
            raise ConfigError(f"window={self.window} and stride={self.stride} must be at least 1 token.")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold={self.threshold} must be in (0, 1] (a total-variation distance).")


@dataclass
class WindowReading:
    """One window ``[start, end)`` of tokens: both distributions over the concepts and their distance."""

    start: int
    end: int
    text: str
    internal: list[float]
    text_scores: list[float]
    score: float
    flagged: bool


@dataclass
class DivergenceSpan:
    """Merged flagged windows: tokens ``[start, end)``, the largest window score, and which concepts disagree."""

    start: int
    end: int
    score: float
    internal_concept: str     # held internally more than the text shows
    text_concept: str         # shown in the text more than held internally


@dataclass
class DivergenceReport:
    """Per-window readings over ``concepts`` and the flagged spans."""

    concepts: list[str]
    windows: list[WindowReading] = field(default_factory=list)
    spans: list[DivergenceSpan] = field(default_factory=list)

    @property
    def max_score(self) -> float:
        return max((w.score for w in self.windows), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_bounds(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows covering ``n_tokens`` (the last one ends at ``n_tokens``)."""
    if n_tokens <= 0:
        return []
    if n_tokens <= window:
        return [(0, n_tokens)]
    starts = list(range(0, n_tokens - window + 1, stride))
    if starts[-1] + window < n_tokens:
        starts.append(n_tokens - window)
    return [(s, s + window) for s in starts]


def detect_divergence(tokens: Sequence[str], internal: torch.Tensor, concepts: Sequence[str],
                      detector: TextConceptDetector, settings: DivergenceSettings | None = None) -> DivergenceReport:
    """Compare per-token lens probabilities ``internal (T, C)`` (columns in ``concepts`` order) with the text
    detector's reading of each window of ``tokens`` (``T`` strings whose concatenation is the text)."""
    cfg = settings or DivergenceSettings()
    internal = torch.as_tensor(internal, dtype=torch.float32)
    if internal.dim() != 2 or internal.shape != (len(tokens), len(concepts)):
        raise InputError(
            f"internal scores have shape {tuple(internal.shape)}; expected (tokens, concepts) = "
            f"({len(tokens)}, {len(concepts)})."
        )
    missing = [c for c in concepts if c not in detector.names]
    if missing:
        raise InputError(
            f"The text detector has no description for concepts {missing}; give it every monitored concept."
        )
    cols = torch.tensor([detector.names.index(c) for c in concepts])
    bounds = window_bounds(len(tokens), cfg.window, cfg.stride)
    report = DivergenceReport(concepts=list(concepts))
    if not bounds:
        return report
    texts = ["".join(tokens[s:e]) for s, e in bounds]
    q = detector.scores(texts)[:, cols]
    q = q / q.sum(-1, keepdim=True).clamp_min(1e-12)                               # restrict to monitored concepts
    for (s, e), text, qw in zip(bounds, texts, q):
        p = internal[s:e].mean(0).clamp_min(0)
        p = p / p.sum().clamp_min(1e-12) if float(p.sum()) > 0 else torch.full_like(p, 1 / len(concepts))
        tv = 0.5 * float((p - qw).abs().sum())
        report.windows.append(WindowReading(s, e, text, [round(float(x), 4) for x in p],
                                            [round(float(x), 4) for x in qw], round(tv, 4), tv > cfg.threshold))
    report.spans = _merge(report, concepts)
    return report


def _merge(report: DivergenceReport, concepts: Sequence[str]) -> list[DivergenceSpan]:
    spans: list[DivergenceSpan] = []
    group: list[WindowReading] = []

    def close() -> None:
        if not group:
            return
        worst = max(group, key=lambda w: w.score)
        gap = torch.tensor(worst.internal) - torch.tensor(worst.text_scores)
        spans.append(DivergenceSpan(group[0].start, max(w.end for w in group), worst.score,
                                    concepts[int(gap.argmax())], concepts[int(gap.argmin())]))
        group.clear()

    for w in report.windows:
        if w.flagged and group and w.start <= max(g.end for g in group):
            group.append(w)
        elif w.flagged:
            close()
            group.append(w)
    close()
    return spans

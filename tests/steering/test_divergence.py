"""Divergence detection: windows, total-variation scores, and a constructed internal/text mismatch."""

from __future__ import annotations

import statistics

import pytest
import torch

from cortex.errors import ConfigError, InputError
from cortex.steering.divergence import DivergenceSettings, TextConceptDetector, detect_divergence, window_bounds

CODE = "for item in items:\n    total += item.price * qty\nreturn total\n"
PROSE = "The museum opened its doors early on Sunday, and the visitors walked slowly through the quiet halls."


def test_window_bounds():
    assert window_bounds(0, 5, 2) == []
    assert window_bounds(4, 5, 2) == [(0, 4)]
    assert window_bounds(13, 5, 4) == [(0, 5), (4, 9), (8, 13)]
    assert window_bounds(11, 5, 4) == [(0, 5), (4, 9), (6, 11)]     # the last window ends at the last token
    with pytest.raises(ConfigError, match="threshold"):
        DivergenceSettings(threshold=0)


def test_constructed_mismatch_is_flagged(text_detector):
    tokens = list(CODE + PROSE)                                      # char tokens, as the char LM makes
    T, split = len(tokens), len(CODE)
    internal = torch.tensor([[0.95, 0.05]] * T)                      # the model "thinks" python throughout
    cfg = DivergenceSettings(window=24, stride=8, threshold=0.5)
    report = detect_divergence(tokens, internal, ["python", "prose"], text_detector, cfg)
    assert [(w.start, w.end) for w in report.windows] == window_bounds(T, 24, 8)
    for w in report.windows:
        p, q = torch.tensor(w.internal), torch.tensor(w.text_scores)
        assert w.score == pytest.approx(0.5 * float((p - q).abs().sum()), abs=1e-3)
        assert w.text == "".join(tokens[w.start:w.end])
    code_windows = [w for w in report.windows if w.end <= split]
    prose_windows = [w for w in report.windows if w.start >= split]
    assert code_windows and not any(w.flagged for w in code_windows)
    # a sentence encoder reading 24-character fragments is not perfect: most prose windows must be flagged
    assert prose_windows and sum(w.flagged for w in prose_windows) >= 0.75 * len(prose_windows)
    assert max(w.score for w in prose_windows) > 0.8
    assert report.spans, "the prose part must be flagged"
    span = report.spans[-1]
    assert span.start >= split - 24 and span.end == T
    assert span.internal_concept == "python" and span.text_concept == "prose"
    # when the internal reading agrees with the text nothing is flagged
    agree = torch.tensor([[0.95, 0.05]] * split + [[0.05, 0.95]] * (T - split))
    calm = detect_divergence(tokens, agree, ["python", "prose"], text_detector, cfg)
    pure = [w for w in calm.windows if w.end <= split or w.start >= split]
    assert sum(w.flagged for w in pure) <= 0.25 * len(pure)
    assert statistics.fmean(w.score for w in pure) < statistics.fmean(w.score for w in prose_windows) - 0.3


def test_bad_inputs(text_detector, minilm_dir):
    with pytest.raises(InputError, match="shape"):
        detect_divergence(list("abc"), torch.zeros(2, 2), ["python", "prose"], text_detector)
    with pytest.raises(InputError, match="no description"):
        detect_divergence(list("abc"), torch.zeros(3, 2), ["python", "poetry"], text_detector)
    with pytest.raises(InputError, match="at least two concepts"):
        TextConceptDetector({"python": "code"}, encoder=minilm_dir)

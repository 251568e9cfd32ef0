from __future__ import annotations

import numpy as np
import pytest

from cortex.anomaly.features import FeatureScaler, sliding_windows, transform
from cortex.anomaly.metrics import FIELDS, parse_row, read_metrics
from cortex.errors import AnomalyError

GOOD = {"worker": "w", "latency_ms": 120, "error_rate": 0.1, "tokens": 300, "duration_s": 2.5, "success": True}


def test_parse_row_and_errors_name_the_field():
    row = parse_row(GOOD, "f:1")
    assert row.worker == "w" and row.values == (120.0, 0.1, 300.0, 2.5, 1.0)
    with pytest.raises(AnomalyError, match=r"f:3: missing field\(s\) tokens, success"):
        parse_row({k: v for k, v in GOOD.items() if k not in ("tokens", "success")}, "f:3")
    with pytest.raises(AnomalyError, match="latency_ms='fast' is not a number"):
        parse_row({**GOOD, "latency_ms": "fast"}, "f:4")
    with pytest.raises(AnomalyError, match="error_rate=12.0 must be a share"):
        parse_row({**GOOD, "error_rate": 12}, "f:5")
    with pytest.raises(AnomalyError, match="success"):
        parse_row({**GOOD, "success": 3}, "f:6")
    with pytest.raises(AnomalyError, match="expected a JSON object"):
        parse_row([1, 2], "f:7")


def test_read_jsonl_and_csv_and_skip_bad(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"latency_ms": 1, "error_rate": 0, "tokens": 2, "duration_s": 3, "success": 1}\n'
                 "not json\n\n"
                 '{"latency_ms": 1}\n'
                 '{"latency_ms": 4, "error_rate": 0.5, "tokens": 5, "duration_s": 6, "success": "false"}\n')
    with pytest.raises(AnomalyError, match="m.jsonl:2: not valid JSON"):
        read_metrics(p)
    data = read_metrics(p, skip_bad=True)
    assert [r.values for r in data.rows] == [(1, 0, 2, 3, 1), (4, 0.5, 5, 6, 0)]
    assert [w for w, _ in data.skipped] == ["m.jsonl:2", "m.jsonl:4"]
    c = tmp_path / "m.csv"
    c.write_text("worker,latency_ms,error_rate,tokens,duration_s,success\na,10,0.0,7,1.5,1\nb,11,,7,1.5,0\n")
    with pytest.raises(AnomalyError, match=r"m.csv:3: missing field\(s\) error_rate"):
        read_metrics(c)
    with pytest.raises(AnomalyError, match="does not exist"):
        read_metrics(tmp_path / "nope.jsonl")


def test_transform_scaler_and_windows_closed_form():
    rng = np.random.default_rng(0)
    raw = np.abs(rng.normal(size=(11, len(FIELDS)))) * [100, 0.1, 50, 3, 1]
    raw[:, 4] = (raw[:, 4] > 0.5).astype(float)
    t = transform(raw)
    np.testing.assert_allclose(t[:, [0, 2, 3]], np.log1p(raw[:, [0, 2, 3]]))
    np.testing.assert_allclose(t[:, [1, 4]], raw[:, [1, 4]])
    sc = FeatureScaler.fit(raw)
    q1, med, q3 = np.percentile(t, [25, 50, 75], axis=0)
    np.testing.assert_allclose(sc.center, med)
    iqr = (q3 - q1) / 1.349
    np.testing.assert_allclose(sc.scale[:4], np.maximum(np.where(iqr > 0, iqr, t.std(0)), [0.05, 0.01, 0.05, 0.05, 0.1])[:4])
    z = sc(raw)
    np.testing.assert_allclose(z, (t - sc.center) / sc.scale, rtol=1e-5)
    w = sliding_windows(z, 4)  # (11 - 4 + 1, 4 * 5)
    assert w.shape == (8, 20)
    np.testing.assert_array_equal(w[3], z[3:7].reshape(-1))
    assert sliding_windows(z[:3], 4).shape == (0, 20)
    again = FeatureScaler.from_dict(sc.to_dict())
    np.testing.assert_allclose(again(raw), z)

"""Monitor reports: JSON, a self-contained HTML page (works offline, no scripts or remote assets) and a PNG.

The HTML page shows the run's settings and text, then the concept × token heatmap in blocks of
``tokens_per_row`` columns. Token headers carry the exact token in ``data-token`` (whitespace shown as
``␣ ↵ ⇥`` in the cell); cells carry the score in ``title``. A ``▼`` row marks tokens where the autonomic
controller intervened (with score before → after) and a shaded row marks tokens inside flagged divergence
spans. The PNG is the same heatmap drawn by a bare matplotlib ``Figure`` (Agg: no display, no pyplot state),
with the interventions as markers and a divergence strip underneath.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortex.hub.registry import atomic_write_text
from cortex.steering.monitor import MonitorResult

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(token: str) -> str:
    """A token with whitespace made visible (space ``␣``, newline ``↵``, tab ``⇥``); an empty token is ``∅``."""
    return "".join(_VISIBLE.get(ch, ch) for ch in token) or "∅"


def _color(score: float) -> str:
    # white (0) → deep red (1), readable text either way
    s = min(1.0, max(0.0, score))
    r, g, b = 255, int(255 - 200 * s), int(255 - 215 * s)
    return f"rgb({r},{g},{b})"


def _token_marks(result: MonitorResult) -> tuple[dict[int, list[dict[str, Any]]], dict[int, float]]:
    """Interventions by generated-token index, and the divergence score of tokens inside flagged spans."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for rec in result.interventions:
        by_step.setdefault(int(rec["step"]), []).append(rec)
    flagged: dict[int, float] = {}
    for span in (result.divergence or {}).get("spans", []):
        for t in range(int(span["start"]), int(span["end"])):
            flagged[t] = max(flagged.get(t, 0.0), float(span["score"]))
    return by_step, flagged


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table.meta td{padding:2px 10px 2px 0;vertical-align:top}
pre.text{background:#f6f6f6;padding:10px;white-space:pre-wrap;border-radius:4px}
.block{overflow-x:auto;margin-bottom:14px}
table.heat{border-collapse:collapse;font-size:12px}
table.heat th,table.heat td{border:1px solid #e4e4e4;min-width:18px;text-align:center;padding:1px 2px}
table.heat th.tok{font-family:ui-monospace,Menlo,Consolas,monospace;font-weight:normal;background:#fafafa}
table.heat th.concept{text-align:right;padding-right:6px;white-space:nowrap;background:#fff}
td.ctl{color:#0a58ca;font-weight:bold} td.div{background:#ffd966}
td.hit{outline:2px solid #0a58ca;outline-offset:-2px}
table.list{border-collapse:collapse;font-size:13px} table.list td,table.list th{border:1px solid #ddd;padding:3px 8px}
.legend span{display:inline-block;width:28px;height:12px}
"""


def render_html(result: MonitorResult, tokens_per_row: int = 48) -> str:
    """The report page as one HTML string (see the module docstring)."""
    by_step, flagged = _token_marks(result)
    concept_ix = {c: i for i, c in enumerate(result.concepts)}
    hits = {(int(r["step"]), concept_ix.get(r["concept"], -1)) for r in result.interventions}
    out = _header(result)
    T = len(result.tokens)
    for start in range(0, max(T, 1), tokens_per_row):
        out += _heatmap_block(result, start, min(T, start + tokens_per_row), hits, by_step, flagged)
    out += _tables(result)
    out.append("</body></html>")
    return "\n".join(out)


def _header(result: MonitorResult) -> list[str]:
    """The page head, the run's settings, the generated text and the heatmap legend."""
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>cortex monitor: {esc(result.model)}</title><style>{_CSS}</style></head><body>",
           "<h1>cortex lens monitor</h1>", "<table class=\"meta\">"]
    steer = ", ".join(f"{s['concept']}={s['strength']:g} ({s['mode']}, layer {s['layer']})" for s in result.steering)
    rows = [("model", result.model), ("lens pack", result.lens_pack), ("prompt", result.prompt),
            ("steering", steer or "none"), ("bounds", ", ".join(result.bounds) or "none"),
            ("layers read", ", ".join(f"{c}@{l}" for c, l in result.layers.items())),
            ("interventions", str(len(result.interventions))),
            ("divergent spans", str(len((result.divergence or {}).get("spans", []))))]
    for k, v in rows:
        # pre-wrap keeps a prompt's newlines and indentation visible
        out.append(f"<tr><td><b>{esc(k)}</b></td><td style=\"white-space:pre-wrap\">{esc(v)}</td></tr>")
    out.append("</table>")
    out.append(f"<h2>Generated text</h2><pre class=\"text\"><span class=\"prompt\">{esc(result.prompt)}</span>"
               f"<b>{esc(result.text)}</b></pre>")
    out.append("<h2>Concept × token heatmap</h2><div class=\"legend\">score 0 "
               + "".join(f"<span style=\"background:{_color(i / 10)}\"></span>" for i in range(11))
               + " 1 &nbsp; <b style=\"color:#0a58ca\">▼</b> intervention &nbsp; "
                 "<span style=\"background:#ffd966\"></span> divergent span</div>")
    return out


def _heatmap_block(result: MonitorResult, start: int, end: int, hits: set, by_step: dict, flagged: dict) -> list[str]:
    """One row block of the concept × token heatmap (tokens ``start:end``), with control and divergence rows."""
    esc = html.escape
    out: list[str] = []
    out.append("<div class=\"block\"><table class=\"heat\"><tr><th class=\"concept\">token</th>")
    for t in range(start, end):
        tok = result.tokens[t]
        top = ", ".join(f"{c} {s:.2f}" for c, s in result.top_k[t]) if t < len(result.top_k) else ""
        tip = f"#{t} {tok!r} top: {top}"
        out.append(f"<th class=\"tok\" data-i=\"{t}\" data-token=\"{esc(tok, quote=True)}\" "
                   f"title=\"{esc(tip, quote=True)}\">{esc(visible(tok))}</th>")
    out.append("</tr>")
    for ci, c in enumerate(result.concepts):
        out.append(f"<tr><th class=\"concept\">{esc(c)}</th>")
        for t in range(start, end):
            s = result.scores[t][ci]
            cls = " class=\"hit\"" if (t, ci) in hits else ""
            out.append(f"<td{cls} style=\"background:{_color(s)}\" title=\"{esc(c)} @ #{t}: {s:.3f}\"></td>")
        out.append("</tr>")
    if result.bounds:
        out.append("<tr><th class=\"concept\">control</th>")
        for t in range(start, end):
            recs = by_step.get(t, [])
            if recs:
                tip = "; ".join(f"{r['concept']}→{r['toward'] or 'away'} {r['score_before']:.2f}→"
                                f"{r['score_after']:.2f} (u={r['strength']:.2f})" for r in recs)
                out.append(f"<td class=\"ctl\" title=\"{esc(tip, quote=True)}\">▼</td>")
            else:
                out.append("<td></td>")
        out.append("</tr>")
    if result.divergence is not None:
        out.append("<tr><th class=\"concept\">divergence</th>")
        for t in range(start, end):
            if t in flagged:
                out.append(f"<td class=\"div\" title=\"divergence {flagged[t]:.2f}\"></td>")
            else:
                out.append("<td></td>")
        out.append("</tr>")
    out.append("</table></div>")
    return out


def _tables(result: MonitorResult) -> list[str]:
    """The interventions, tokens-above-bound and divergence tables."""
    esc = html.escape
    T = len(result.tokens)
    out: list[str] = []
    if result.interventions:
        out.append("<h2>Interventions</h2><table class=\"list\"><tr><th>token #</th><th>token</th><th>concept</th>"
                   "<th>toward</th><th>layer</th><th>score before</th><th>score after</th><th>strength</th></tr>")
        for r in result.interventions:
            t = int(r["step"])
            tok = visible(result.tokens[t]) if t < T else ""
            out.append(f"<tr><td>{t}</td><td>{esc(tok)}</td><td>{esc(r['concept'])}</td>"
                       f"<td>{esc(str(r['toward'] or 'away'))}</td><td>{r['layer']}</td>"
                       f"<td>{r['score_before']:.3f}</td><td>{r['score_after']:.3f}</td>"
                       f"<td>{r['strength']:.3f}</td></tr>")
        out.append("</table>")
    if result.exceedance:
        out.append("<h2>Tokens above bound</h2><table class=\"list\"><tr><th>bound</th><th>before correction</th>"
                   "<th>after correction</th></tr>")
        for b, v in result.exceedance.items():
            out.append(f"<tr><td>{esc(b)}</td><td>{v['before']:.2%}</td><td>{v['after']:.2%}</td></tr>")
        out.append("</table>")
    if result.divergence is not None:
        spans = result.divergence.get("spans", [])
        out.append(f"<h2>Divergence (internal lenses vs text)</h2><p>{len(spans)} flagged span(s).</p>")
        if spans:
            out.append("<table class=\"list\"><tr><th>tokens</th><th>text</th><th>score</th><th>held internally</th>"
                       "<th>shown in text</th></tr>")
            for s in spans:
                text = "".join(result.tokens[int(s["start"]):int(s["end"])])
                out.append(f"<tr><td>{s['start']}–{s['end']}</td><td><code>{esc(text)}</code></td>"
                           f"<td>{s['score']:.2f}</td><td>{esc(s['internal_concept'])}</td>"
                           f"<td>{esc(s['text_concept'])}</td></tr>")
            out.append("</table>")
    return out


def render_png(result: MonitorResult, path: str | os.PathLike, max_width_in: float = 40.0, dpi: int = 110) -> Path:
    """Draw the concept × token heatmap (with intervention markers and a divergence strip) into ``path``."""
    # a bare Figure renders with Agg and never touches pyplot's global backend or figure list
    import numpy as np
    from matplotlib.figure import Figure

    path = Path(path)
    T, C = len(result.tokens), len(result.concepts)
    scores = np.asarray(result.scores, dtype=float).reshape(T, C).T if T else np.zeros((C, 1))
    by_step, flagged = _token_marks(result)
    width = min(max_width_in, max(6.0, 0.16 * T + 2.5))
    has_div = result.divergence is not None
    fig = Figure(figsize=(width, 0.45 * C + (2.6 if has_div else 2.0)), layout="constrained")
    axes = fig.subplots(2 if has_div else 1, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [max(C, 1), 1]} if has_div else None)
    ax = axes[0, 0]
    im = ax.imshow(scores, aspect="auto", cmap="Reds", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(C), result.concepts, fontsize=9)
    concept_ix = {c: i for i, c in enumerate(result.concepts)}
    for step, recs in by_step.items():
        for r in recs:
            ax.plot(step, concept_ix.get(r["concept"], 0), marker="v", color="#0a58ca", markersize=6,
                    markeredgecolor="white", markeredgewidth=0.6)
    steer = ", ".join(f"{s['concept']}={s['strength']:g}" for s in result.steering) or "none"
    ax.set_title(f"{result.model} · steer: {steer} · bounds: {', '.join(result.bounds) or 'none'}", fontsize=10)
    # one colour bar beside both panels keeps their x axes aligned
    fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, label="concept score")
    last = axes[-1, 0]
    if has_div:
        div = np.zeros(max(T, 1))
        for w in result.divergence.get("windows", []):
            s, e = int(w["start"]), int(w["end"])
            div[s:e] = np.maximum(div[s:e], float(w["score"]))
        last.fill_between(range(len(div)), div, step="mid", color="#999999", alpha=0.6)
        for t in flagged:
            last.axvspan(t - 0.5, t + 0.5, color="#ffd966", alpha=0.8, lw=0)
        last.set_ylim(0, 1)
        last.set_ylabel("diverg.", fontsize=8)
        last.tick_params(axis="y", labelsize=7)
    step = max(1, int(np.ceil(T / (width * 7))))  # about 7 labels per inch stay legible
    ticks = list(range(0, T, step))
    last.set_xticks(ticks, [visible(result.tokens[t]) for t in ticks], fontsize=8, family="monospace",
                    rotation=90 if any(len(result.tokens[t]) > 2 for t in ticks) else 0)
    last.set_xlabel("generated token")
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png")
    os.replace(tmp, path)
    return path


@dataclass
class ReportPaths:
    """Where :func:`write_report` put the three files."""

    json: Path
    html: Path
    png: Path


def write_report(result: MonitorResult, folder: str | os.PathLike, stem: str = "monitor") -> ReportPaths:
    """Write ``<stem>.json``, ``<stem>.html`` and ``<stem>.png`` into ``folder`` (each atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(folder / f"{stem}.json", folder / f"{stem}.html", folder / f"{stem}.png")
    atomic_write_text(paths.json, result.to_json())
    atomic_write_text(paths.html, render_html(result))
    render_png(result, paths.png)
    return paths

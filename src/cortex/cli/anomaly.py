"""Anomaly commands: ``cortex anomaly train | score | watch``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cortex.cli._common import console

anomaly_app = typer.Typer(help="Detect misbehaving workers from their metrics (latency, errors, tokens, duration, success).",
                          no_args_is_help=True)

NAME_HELP = "Detector name; it lives in $CORTEX_HOME/anomaly/NAME."
DIR_HELP = "Detector folder (overrides --name)."
METHODS = ("autoencoder", "zscore")


def _folder(name: str, model_dir: Path | None) -> Path:
    from cortex.anomaly.detector import default_detector_dir

    return model_dir if model_dir is not None else default_detector_dir(name)


def _alerts_path(name: str, alerts: Path | None) -> Path:
    from cortex.hub.paths import cortex_home, validate_name

    return alerts if alerts is not None else cortex_home() / "anomaly" / "alerts" / f"{validate_name(name)}.jsonl"


def _read(metrics: Path, skip_bad: bool):
    from cortex.anomaly.metrics import read_metrics

    data = read_metrics(metrics, skip_bad=skip_bad)
    if data.skipped:
        console.print(f"[yellow]skipped {len(data.skipped)} bad row(s)[/]; first: {data.skipped[0][1]}", soft_wrap=True)
    return data


@anomaly_app.command("train")
def train_cmd(
    metrics: Path = typer.Argument(..., help="Normal history: .jsonl or .csv rows with latency_ms, error_rate, tokens, duration_s, success (+ worker, time)."),
    name: str = typer.Option("default", "--name", help=NAME_HELP),
    model_dir: Path = typer.Option(None, "--model-dir", help=DIR_HELP),
    method: str = typer.Option("autoencoder", "--method", help="autoencoder or zscore (the rolling z-score baseline)."),
    window: int = typer.Option(8, "--window", help="Rows per autoencoder window."),
    epochs: int = typer.Option(60, "--epochs", help="Training epochs of the autoencoder."),
    quantile: float = typer.Option(0.995, "--quantile", help="Threshold = this quantile of scores on held-out normal rows."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out rows with missing or bad fields (counted) instead of stopping."),
) -> None:
    """Train a detector on normal worker metrics and save it."""
    from cortex.anomaly.detector import save_detector
    from cortex.errors import ConfigError

    if method not in METHODS:
        raise ConfigError.bad_choice("--method", method, METHODS)
    rows = _read(metrics, skip_bad).rows
    if method == "zscore":
        from cortex.anomaly.baseline import RollingZScore, ZScoreConfig

        det = RollingZScore.fit(rows, ZScoreConfig(threshold_quantile=quantile))
        summary = f"threshold {det.threshold:.3f}"
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from cortex.anomaly.autoencoder import AutoencoderConfig, AutoencoderDetector

        cfg = AutoencoderConfig(window=window, epochs=epochs, threshold_quantile=quantile, seed=seed)
        with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                      console=console, transient=True) as bar:
            task = bar.add_task("train", total=epochs, loss="")
            det = AutoencoderDetector.fit(rows, cfg, progress=lambda e, n, v: bar.update(task, completed=e, loss=f"val {v:.4f}"))
        r = det.report
        summary = (f"{r.train_windows} train / {r.val_windows} val windows, best epoch {r.best_epoch}, "
                   f"val loss {r.val_loss:.4f}, threshold {r.threshold:.4f}")
    folder = save_detector(det, _folder(name, model_dir))
    console.print(f"[green]trained[/] {det.kind} on {len(rows)} rows: {summary}\n  saved to {folder}", soft_wrap=True)


@anomaly_app.command("score")
def score_cmd(
    metrics: Path = typer.Argument(..., help="Metrics to score (.jsonl or .csv)."),
    name: str = typer.Option("default", "--name", help=NAME_HELP),
    model_dir: Path = typer.Option(None, "--model-dir", help=DIR_HELP),
    alerts: Path = typer.Option(None, "--alerts", help="JSONL file to append alerts to (default $CORTEX_HOME/anomaly/alerts/NAME.jsonl)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per scored row."),
    confirm: int = typer.Option(1, "--confirm", help="Flagged rows in a row before an alert (2 halves false alerts, +1 row delay)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out rows with missing or bad fields (counted) instead of stopping."),
) -> None:
    """Score a metrics file with a trained detector and write an alert per anomalous episode."""
    from dataclasses import asdict

    from cortex.anomaly.alerts import JsonlAlertSink
    from cortex.anomaly.detector import load_detector, score_rows
    from cortex.anomaly.stream import episode_alerts

    det = load_detector(_folder(name, model_dir))
    rows = _read(metrics, skip_bad).rows
    scores = score_rows(det, rows)
    sink = JsonlAlertSink(_alerts_path(name, alerts))
    found = episode_alerts(scores, rows, det.kind, confirm_after=confirm)
    for a in found:
        sink.emit(a)
    if as_json:
        for s in scores:
            typer.echo(json.dumps(asdict(s), default=str))
    flagged = [s for s in scores if s.anomalous]
    episodes = [a for a in found if a.kind == "anomaly"]
    if not as_json:
        for a in episodes[:20]:
            console.print(f"  row {a.row} worker {a.worker}: score {a.score:.3f} > {a.threshold:.3f} (mostly {a.top_feature})")
    console.print(f"scored {len(scores)} of {len(rows)} rows with {det.kind}: {len(flagged)} anomalous in "
                  f"{len(episodes)} episode(s); alerts -> {sink.path}", soft_wrap=True)


@anomaly_app.command("watch")
def watch_cmd(
    file: Path = typer.Argument(..., help="A JSONL metrics file that workers append to."),
    name: str = typer.Option("default", "--name", help=NAME_HELP),
    model_dir: Path = typer.Option(None, "--model-dir", help=DIR_HELP),
    alerts: Path = typer.Option(None, "--alerts", help="JSONL file to append alerts to (default $CORTEX_HOME/anomaly/alerts/NAME.jsonl)."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Keep reading as the file grows (Ctrl-C stops)."),
    poll: float = typer.Option(0.5, "--poll", help="Seconds between checks for new lines."),
    max_seconds: float = typer.Option(None, "--max-seconds", help="Stop after this many seconds."),
    confirm: int = typer.Option(1, "--confirm", help="Flagged rows in a row before an alert (2 halves false alerts, +1 row delay)."),
) -> None:
    """Follow a metrics file and alert when a worker starts (and stops) misbehaving."""
    from cortex.anomaly.alerts import JsonlAlertSink
    from cortex.anomaly.detector import load_detector
    from cortex.anomaly.stream import StreamMonitor, watch_file

    det = load_detector(_folder(name, model_dir))
    sink = JsonlAlertSink(_alerts_path(name, alerts))
    monitor = StreamMonitor(det, sink, confirm_after=confirm)
    shown = 0

    def show(_score) -> None:
        nonlocal shown
        for a in monitor.alerts[shown:]:
            if a.kind == "anomaly":
                console.print(f"[red]anomaly[/] worker {a.worker} row {a.row}: score {a.score:.3f} (mostly {a.top_feature})")
            elif a.kind == "recovered":
                console.print(f"[green]recovered[/] worker {a.worker} row {a.row}")
            else:
                console.print(f"[yellow]bad row[/] {a.detail}", soft_wrap=True)
        shown = len(monitor.alerts)

    console.print(f"watching {file} with {det.kind}; alerts -> {sink.path}")
    try:
        lines = watch_file(file, monitor, follow=follow, poll_s=poll, max_seconds=max_seconds, on_score=show)
    except KeyboardInterrupt:
        lines = monitor.rows_seen
    console.print(f"read {lines} lines: {monitor.rows_seen} rows, {monitor.bad_rows} bad, {sink.count} alert(s) written")


@anomaly_app.command("demo")
def demo_cmd(
    folder: Path = typer.Argument(Path("anomaly-demo"), help="Folder to write history.jsonl, live.jsonl and events.jsonl into."),
    workers: int = typer.Option(3, "--workers", min=1, help="Number of simulated workers."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the same seed writes the same files)."),
) -> None:
    """Write generated worker metrics to try the detectors on: normal history, and live rows with injected incidents."""
    from cortex.anomaly.synthetic import write_demo

    files = write_demo(folder, n_workers=workers, seed=seed)
    console.print(
        f"wrote {files.n_history} normal rows to {files.history}, {files.n_live} live rows with {files.n_events} "
        f"incidents to {files.live} (answer key: {files.events})\n"
        f"next: cortex anomaly train {files.history} && cortex anomaly score {files.live}", soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``cortex anomaly`` to the CLI."""
    app.add_typer(anomaly_app, name="anomaly")

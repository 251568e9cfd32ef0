"""Router commands: ``cortex route "task text"`` and ``cortex route train|eval|serve|feedback|retrain|rollback|ingest|status``.

``cortex route`` is a command group whose unknown first word is a task text: ``cortex route "fix the
CI build"`` runs the ``decide`` command, while ``cortex route train ...`` runs ``train``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup

from cortex.cli._common import console, registry

err = Console(stderr=True, highlight=False)


class _TextOrCommand(TyperGroup):
    """A group whose first argument is either a subcommand or a task text for ``decide``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["decide", *args]
        return super().parse_args(ctx, args)


route_app = typer.Typer(
    cls=_TextOrCommand, no_args_is_help=True,
    help='Route tasks to masters with a learned router: cortex route "task text", or a subcommand below.',
)

DEFAULT_FAMILY = "router"


def _champion(router: str | None, family: str) -> str:
    return router or f"{family}:champion"


# options shared by commands that read a data file
_DATA = typer.Option(..., "--data", help="JSONL (routing logs or any labeled file) or a parquet training set.")
_TEXT = typer.Option(None, "--text-field", help="Field holding the task text (labeled files; logs use title/description).")
_LABEL = typer.Option(None, "--label-field", help="Field holding the right master (labeled files).")
_SUCCESS = typer.Option(None, "--success-field", help="Field holding the success outcome (true/false).")
_ID = typer.Option(None, "--id-field", help="Field holding a unique task id (default: task_id or id if present).")
_MINUTES = typer.Option(None, "--minutes-field", help="Field holding the completion time in minutes.")
_TOKENS = typer.Option(None, "--tokens-field", help="Field holding the tokens used.")
_TIME = typer.Option(None, "--time-field", help="Field holding the task's timestamp.")
_METRICS = typer.Option(None, "--metrics", help="Worker-metrics history JSONL joined to routing logs by time.")
_SKIP = typer.Option(False, "--skip-bad", help="Skip invalid lines (each is listed) instead of stopping.")


@route_app.command("decide")
def decide_cmd(
    text: str = typer.Argument(..., help="The task text."),
    router: str = typer.Option(None, "--router", help="Router name or alias (default: <family>:champion)."),
    family: str = typer.Option(DEFAULT_FAMILY, "--family", help="Router family whose champion decides."),
    context: str = typer.Option(None, "--context", help='Context JSON, e.g. \'{"priority": 2, "workers": {...}}\'.'),
    rules: str = typer.Option(None, "--rules", help="Rules YAML replacing the router's saved rules."),
    threshold: float = typer.Option(None, "--threshold", help="Override the confidence threshold."),
    threads: int = typer.Option(1, "--threads", help="torch threads (one decision is a tiny batch)."),
    quantize: bool = typer.Option(False, "--quantize/--no-quantize", help="int8 text encoder, as served by default."),
) -> None:
    """Route one task and print the decision as JSON (the default command: cortex route "text")."""
    import torch

    from cortex.errors import InputError
    from cortex.routing.router import Router

    torch.set_num_threads(threads)

    try:
        ctx = json.loads(context) if context else None
    except json.JSONDecodeError as e:
        raise InputError(f"--context is not valid JSON ({e.msg}); pass e.g. '{{\"priority\": 2}}'.") from None
    policy = {"confidence_threshold": threshold} if threshold is not None else None
    # one decision: tracing the encoder would cost more than it saves
    r = Router.load(_champion(router, family), registry=registry(), policy=policy, rules=rules, quantize=quantize,
                    trace=False)
    typer.echo(json.dumps(r.route(text, ctx).to_dict()))


def _given(**values):
    """The options the user typed (``None`` = not given): defaults live in the settings dataclasses."""
    return {k: v for k, v in values.items() if v is not None}


def _fields(text_field, label_field, success_field, id_field, minutes_field, tokens_field, time_field, metrics,
            skip_bad, topic_field=None):
    from cortex.routing.workflow import DataFields

    return DataFields(text=text_field, label=label_field, success=success_field, id=id_field, minutes=minutes_field,
                      tokens=tokens_field, time=time_field, topic=topic_field, metrics=metrics, skip_bad=skip_bad)


def _print_skipped(problems: list[str]) -> None:
    for p in problems[:20]:
        err.print(f"[yellow]skipped[/] {p}")
    if len(problems) > 20:
        err.print(f"[yellow]skipped[/] ... and {len(problems) - 20} more bad lines")


@route_app.command("train")
def train_cmd(
    data: str = _DATA, text_field: str = _TEXT, label_field: str = _LABEL, success_field: str = _SUCCESS,
    id_field: str = _ID, minutes_field: str = _MINUTES, tokens_field: str = _TOKENS, time_field: str = _TIME,
    metrics: str = _METRICS, skip_bad: bool = _SKIP,
    topic_field: str = typer.Option(None, "--topic-field", help="Field holding a finer label owned by one master (e.g. subject); the router learns it and sums it per master."),
    masters: str = typer.Option(None, "--masters", help="Masters YAML with descriptions (default: the labels seen)."),
    rules: str = typer.Option(None, "--rules", help="Fallback rules YAML stored with the router."),
    name: str = typer.Option(None, "--name", help="Registry name (default: <family>-<timestamp>)."),
    family: str = typer.Option(None, "--family", help="Router family (aliases <family>:champion...; default router)."),
    text_encoder: str = typer.Option(None, "--text-encoder", help="Registry name or folder of the text encoder (default: packaged MiniLM)."),
    champion: bool = typer.Option(None, "--champion/--no-champion", help="Make it the champion (default: only if the family has none)."),
    threshold: float = typer.Option(None, "--threshold", help="Confidence below which the rules decide (default 0.4)."),
    knn_weight: str = typer.Option(None, "--knn-weight", help="Weight of the kNN vote blended into the model's probabilities, or 'auto' (default: most accurate on the validation split)."),
    epochs: int = typer.Option(None, "--epochs", help="Most epochs (default 200; early stopping usually ends sooner)."),
    val_fraction: float = typer.Option(None, "--val-fraction", help="Share held out for early stopping and calibration (default 0.1)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the split, initialization and batch order (default 0)."),
    ensemble: int = typer.Option(None, "--ensemble", help="Ensemble members per leaf (default 1)."),
    text_tokens: int = typer.Option(None, "--text-tokens", help="Tokens of each text the text encoder reads (default 64; the lexical root reads all)."),
    text_depth: int = typer.Option(None, "--text-depth", help="Text-encoder layers run per decision (default 3 of MiniLM's 6: about half the cost; 0: all)."),
) -> None:
    """Train a router on a labeled JSONL file or routing logs and register it."""
    from rich.progress import Progress

    from cortex.routing.policy import PolicyConfig
    from cortex.routing.training import TrainConfig
    from cortex.routing.workflow import RegisterSettings, train_and_register

    settings = RegisterSettings(**_given(
        family=family, name=name, champion=champion, knn_weight=knn_weight, masters=masters, rules=rules,
        text_encoder=text_encoder, model=_given(ensemble_size=ensemble, max_text_tokens=text_tokens, text_depth=text_depth)))
    train = TrainConfig(**_given(max_epochs=epochs, val_fraction=val_fraction, seed=seed))
    policy = PolicyConfig(**_given(confidence_threshold=threshold))
    fields = _fields(text_field, label_field, success_field, id_field, minutes_field, tokens_field, time_field,
                     metrics, skip_bad, topic_field)
    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task("embedding texts" if stage == "embed" else "training", total=total)
            bar.update(tasks[stage], completed=done)

        out = train_and_register(data, fields, settings, train, policy, registry=registry(), progress=progress)
    _print_skipped(out.pop("problems"))
    v = out["validation"]
    err.print(f"[green]registered[/] {out['router']} (kind router{', champion of ' + out['family'] if out['champion'] else ''}); "
              f"validation accuracy {v['accuracy']:.3f}, ECE {v['ece_before']:.3f} → {v['ece_after']:.3f} "
              f"after temperature {v['temperature_master']:.2f}; best epoch {v['best_epoch']}/{v['epochs']}")
    if "success_auroc_head" in v:  # the success head against logistic regression on its own features
        err.print(f"success head AUROC {v['success_auroc_head']:.3f} (logistic regression on the same features "
                  f"{v['success_auroc_lr_same_features']:.3f}) on the validation split")
    typer.echo(json.dumps(out))


@route_app.command("eval")
def eval_cmd(
    router: str = typer.Option(None, "--router", help="Router name or alias (default: <family>:champion)."),
    family: str = typer.Option(DEFAULT_FAMILY, "--family", help="Router family."),
    data: str = _DATA, text_field: str = _TEXT, label_field: str = _LABEL, success_field: str = _SUCCESS,
    id_field: str = _ID, minutes_field: str = _MINUTES, tokens_field: str = _TOKENS, time_field: str = _TIME,
    metrics: str = _METRICS, skip_bad: bool = _SKIP,
    latency_samples: int = typer.Option(200, "--latency-samples", help="Single cold decisions timed for p50/p99."),
    quantize: bool = typer.Option(True, "--quantize/--no-quantize", help="Run the text encoder int8-quantized, as `cortex route serve` does by default (--no-quantize: the fp32 encoder the heads were trained on)."),
    threshold: float = typer.Option(None, "--threshold", help="Override the confidence threshold."),
    rules: str = typer.Option(None, "--rules", help="Rules YAML replacing the router's saved rules."),
    threads: int = typer.Option(1, "--threads", help="torch threads for the timed decisions (1, as served)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score a kNN-10 MiniLM vote and TF-IDF + logistic regression fitted on the router's training set."),
) -> None:
    """Score a router on a labeled file; prints one JSON line (n, accuracy, macro_f1, ece, ..., baselines)."""
    import torch

    from cortex.routing.workflow import evaluate_registered

    torch.set_num_threads(threads)
    fields = _fields(text_field, label_field, success_field, id_field, minutes_field, tokens_field, time_field,
                     metrics, skip_bad)
    out = evaluate_registered(data, fields, router=_champion(router, family), policy=_given(confidence_threshold=threshold),
                              rules=rules, quantize=quantize, latency_n=latency_samples, baselines=baselines,
                              registry=registry())
    typer.echo(json.dumps(out))


@route_app.command("serve")
def serve_cmd(
    router: str = typer.Option(None, "--router", help="Router name or alias (default: <family>:champion)."),
    family: str = typer.Option(DEFAULT_FAMILY, "--family", help="Router family."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    rules: str = typer.Option(None, "--rules", help="Rules YAML replacing the router's saved rules."),
    quantize: bool = typer.Option(True, "--quantize/--no-quantize", help="int8 text encoder (default): decisions about 3x cheaper on CPU; --no-quantize serves the fp32 encoder."),
    shadow_fraction: float = typer.Option(0.0, "--shadow-fraction", help="Share of tasks also routed by <family>:challenger (both logged)."),
    canary: bool = typer.Option(False, "--canary", help="Serve the challenger's decision on the shadow fraction."),
    feedback_log: str = typer.Option(None, "--feedback-log", help="Feedback JSONL (default: $CORTEX_HOME/routing/<family>/feedback.jsonl)."),
    max_text_chars: int = typer.Option(20_000, "--max-text-chars", help="Longer task texts get HTTP 413."),
    threads: int = typer.Option(1, "--threads", help="torch threads (1: decisions are tiny batches; more threads mostly add sync overhead)."),
    max_batch: int = typer.Option(16, "--max-batch", help="Concurrent requests decided in one batch (1: no batching)."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="How long a request waits for others to batch with."),
) -> None:
    """Serve the router over HTTP: POST /route, POST /feedback, GET /health, GET /metrics."""
    import torch

    from cortex.routing.loop import (
        FeedbackLog,
        JsonlLog,
        ShadowRouter,
        current,
        family_dir,
    )
    from cortex.routing.router import Router
    from cortex.routing.service import create_app, serve

    torch.set_num_threads(threads)
    reg = registry()
    champ = Router.load(_champion(router, family), registry=reg, rules=rules, quantize=quantize)
    chall = None
    if shadow_fraction > 0:
        name = current(reg, family, "challenger")
        if name is None:
            err.print(f"[yellow]no {family}:challenger; shadow mode is off[/]")
        else:
            chall = Router.load(name, registry=reg, rules=rules, quantize=quantize)
    logs = family_dir(family)
    shadow = ShadowRouter(champ, chall, shadow_fraction if chall else 0.0, JsonlLog(logs / "shadow.jsonl"), canary)
    fb = FeedbackLog(feedback_log or logs / "feedback.jsonl")
    app = create_app(shadow, feedback_log=fb, max_text_chars=max_text_chars, max_batch=max_batch,
                     max_wait_ms=max_wait_ms)
    err.print(f"serving {champ.name} on http://{host}:{port} (feedback → {fb.path}"
              f"{f', shadow {shadow.fraction:.0%} → ' + chall.name if chall else ''})")
    serve(app, host, port)


@route_app.command("feedback")
def feedback_cmd(
    task_id: str = typer.Argument(..., help="Id of the routed task (as returned by /route)."),
    success: bool = typer.Option(None, "--success/--failure", help="Whether the master succeeded."),
    minutes: float = typer.Option(None, "--minutes", help="Completion time in minutes."),
    tokens: int = typer.Option(None, "--tokens", help="Tokens used."),
    corrected_to: str = typer.Option(None, "--corrected-to", help="The master a user moved the task to."),
    text: str = typer.Option(None, "--text", help="Task text (needed without --url, or if the service did not route it)."),
    routed_to: str = typer.Option(None, "--routed-to", help="Master that handled it (needed as --text)."),
    url: str = typer.Option(None, "--url", help="A running service, e.g. http://127.0.0.1:8000 (POSTs to /feedback)."),
    family: str = typer.Option(DEFAULT_FAMILY, "--family", help="Router family (whose feedback log to append to)."),
    feedback_log: str = typer.Option(None, "--feedback-log", help="Feedback JSONL to append to (without --url)."),
) -> None:
    """Record the outcome of a routed task (to a running service, or straight into the feedback log)."""
    from datetime import datetime, timezone

    from cortex.errors import InputError, RoutingError

    body = {"task_id": task_id, "success": success, "completion_time_minutes": minutes, "tokens_used": tokens,
            "user_corrected_to": corrected_to, "text": text, "routed_to": routed_to}
    body = {k: v for k, v in body.items() if v is not None}
    if url:
        import httpx

        try:
            resp = httpx.post(url.rstrip("/") + "/feedback", json=body, timeout=30)
        except httpx.HTTPError as e:
            raise RoutingError(f"Cannot reach the router service at {url} ({e}); start it with: cortex route serve") from None
        if resp.status_code != 200:
            raise RoutingError(f"The service refused the feedback ({resp.status_code}): {resp.text}")
        typer.echo(resp.text)
        return
    if text is None or routed_to is None:
        raise InputError("Without --url, feedback needs --text and --routed-to (what was routed, and where).")
    from cortex.routing.loop import FeedbackLog, family_dir
    from cortex.routing.router import Router

    masters = Router.load(f"{family}:champion", registry=registry()).masters
    log = FeedbackLog(feedback_log or family_dir(family) / "feedback.jsonl")
    record = {"task_id": task_id, "task_title": text, "routed_to": routed_to, "success": success,
              "completion_time_minutes": minutes, "tokens_used": tokens, "user_corrected_to": corrected_to,
              "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    log.append_outcome(record, masters)
    typer.echo(json.dumps({"status": "recorded", "task_id": task_id, "log": str(log.path)}))


@route_app.command("retrain")
def retrain_cmd(
    data: list[str] = typer.Option(None, "--data", help="New routing logs or labeled JSONL (repeatable; default: the family's feedback log)."),
    text_field: str = _TEXT, label_field: str = _LABEL, success_field: str = _SUCCESS, id_field: str = _ID,
    minutes_field: str = _MINUTES, tokens_field: str = _TOKENS, time_field: str = _TIME, metrics: str = _METRICS,
    skip_bad: bool = _SKIP,
    family: str = typer.Option(DEFAULT_FAMILY, "--family", help="Router family."),
    name: str = typer.Option(None, "--name", help="Registry name of the challenger."),
    primary: str = typer.Option("macro_f1", "--primary", help="Metric the challenger must improve (accuracy, macro_f1, success_auroc, ece, duration_mae)."),
    margin: float = typer.Option(0.01, "--margin", help="Required improvement of the primary metric (negative: tolerate a loss)."),
    ece_tolerance: float = typer.Option(0.02, "--ece-tolerance", help="How much worse the challenger's ECE may be."),
    auroc_tolerance: float = typer.Option(0.02, "--auroc-tolerance", help="How much lower its success AUROC may be."),
    mae_tolerance: float = typer.Option(0.10, "--mae-tolerance", help="How much worse (relative) its duration MAE may be."),
    window: float = typer.Option(0.2, "--window", help="Share of the newest records held out to compare the two."),
    min_window: int = typer.Option(20, "--min-window", help="Smallest comparison window."),
    epochs: int = typer.Option(200, "--epochs", help="Most training epochs."),
    seed: int = typer.Option(0, "--seed", help="Training seed."),
) -> None:
    """Train a challenger on the champion's data plus new records; promote it only if it wins on the recent window."""
    from cortex.routing.data import concat_frames
    from cortex.routing.loop import PromotionRule, current, family_dir, retrain
    from cortex.routing.router import Router
    from cortex.routing.training import TrainConfig

    reg = registry()
    champ = current(reg, family, "champion")
    masters = Router.load(champ, registry=reg).masters if champ else None
    files = list(data or []) or [str(family_dir(family) / "feedback.jsonl")]
    frames = []
    for f in files:
        if not Path(f).is_file():
            from cortex.errors import DataError

            raise DataError(f"{f!r} does not exist. Pass new records with --data, or collect feedback first "
                            f"(cortex route serve / cortex route feedback).")
        report = _fields(text_field, label_field, success_field, id_field, minutes_field, tokens_field, time_field,
                         metrics, skip_bad).load(f, masters)
        _print_skipped([str(p) for p in report.problems])
        frames.append(report.frame)
    rule = PromotionRule(primary=primary, margin=margin, ece_tolerance=ece_tolerance, auroc_tolerance=auroc_tolerance,
                         mae_tolerance=mae_tolerance)
    rep = retrain(concat_frames(frames), family=family, registry=reg, rule=rule, window_fraction=window,
                  min_window=min_window, train=TrainConfig(max_epochs=epochs, seed=seed), name=name)
    err.print(("[green]promoted[/] " if rep.promoted else "[yellow]kept champion[/] ")
              + f"{rep.champion if not rep.promoted else rep.challenger}: " + "; ".join(rep.reasons))
    typer.echo(json.dumps(rep.to_dict()))


@route_app.command("rollback")
def rollback_cmd(family: str = typer.Option(DEFAULT_FAMILY, "--family", help="Router family.")) -> None:
    """Make the archived (previous) champion the champion again."""
    from cortex.routing.loop import rollback

    out = rollback(registry(), family)
    err.print(f"[green]champion[/] {out['champion']} (was {out['rolled_back']})")
    typer.echo(json.dumps(out))


@route_app.command("status")
def status_cmd(family: str = typer.Option(DEFAULT_FAMILY, "--family", help="Router family.")) -> None:
    """Show the family's champion, challenger and archive."""
    from cortex.routing.loop import ROLES, current

    reg = registry()
    typer.echo(json.dumps({role: current(reg, family, role) for role in ROLES}))


@route_app.command("ingest")
def ingest_cmd(
    logs: str = typer.Argument(..., help="Routing-log JSONL (or a labeled JSONL with --text-field/--label-field)."),
    out: str = typer.Option(..., "--out", help="Parquet file to write."),
    text_field: str = _TEXT, label_field: str = _LABEL, success_field: str = _SUCCESS, id_field: str = _ID,
    minutes_field: str = _MINUTES, tokens_field: str = _TOKENS, time_field: str = _TIME, metrics: str = _METRICS,
    masters: str = typer.Option(None, "--masters", help="Masters YAML: labels must be among them."),
    skip_bad: bool = _SKIP,
) -> None:
    """Validate and deduplicate logs into a parquet training set."""
    from cortex.routing.data import write_parquet
    from cortex.routing.masters import load_masters

    names = [m.name for m in load_masters(masters)] if masters else None
    report = _fields(text_field, label_field, success_field, id_field, minutes_field, tokens_field, time_field, metrics,
                     skip_bad).load(logs, names)
    _print_skipped([str(p) for p in report.problems])
    path = write_parquet(report.frame, out)
    typer.echo(json.dumps({"out": str(path), **report.summary()}))


@route_app.command("sample")
def sample_cmd(out: Path = typer.Argument(Path("routing.jsonl"), help="File to write the sample prompts to.")) -> None:
    """Write the 350 labeled routing prompts shipped with cortex (MMLU/GSM8K, 50 per group) to train on."""
    from cortex.resources import write_routing_sample

    n = write_routing_sample(out)
    console.print(f"wrote {n} labeled prompts to {out}; train with: cortex route train --data {out} "
                  "--text-field prompt --label-field master --success-field weak_correct", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``cortex route`` to the CLI."""
    app.add_typer(route_app, name="route")

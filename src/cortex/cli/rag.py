"""Retrieval commands: ``cortex rag index | query | context | outcome | template ... | memory ...``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer

from cortex.cli._common import console

rag_app = typer.Typer(help="Index a codebase, search it, and build worker prompts from it.", no_args_is_help=True)
template_app = typer.Typer(help="Versioned prompt templates and their A/B splits.", no_args_is_help=True)
memory_app = typer.Typer(help="Long-term memory of past tasks (used by the router's kNN vote).", no_args_is_help=True)

NAME_HELP = "Index name; the index lives in $CORTEX_HOME/rag/NAME."
DIR_HELP = "Index folder (overrides --name)."
BACKEND_HELP = ("Where vectors live: embedded (in the index folder, FAISS) or chroma (a Chroma server, "
                "see --url). An existing index keeps its own; naming another is an error.")
URL_HELP = "Chroma server URL, http://HOST:PORT (for --backend chroma; overrides the one the index was built with)."


def _index_dir(name: str, index_dir: Path | None) -> Path:
    from cortex.retrieval.index import default_index_dir

    return index_dir if index_dir is not None else default_index_dir(name)


def _open_index(name: str, index_dir: Path | None, create: bool = False, backend: str | None = None,
                url: str | None = None, precision: str = "auto"):
    """The index, on the backend it was built with (or ``backend`` for a new one); ``url`` reaches a chroma server."""
    from cortex.errors import ConfigError
    from cortex.retrieval.collection import Collection
    from cortex.retrieval.embedder import default_embedder
    from cortex.retrieval.index import CodeIndex

    folder = _index_dir(name, index_dir)
    pointer = Collection.read_pointer(folder) if folder.exists() else None
    built_on = pointer["backend"]["name"] if pointer else None
    if backend is not None and built_on is not None and backend != built_on:
        raise ConfigError(f"The index in {str(folder)!r} keeps its vectors in the {built_on!r} backend, not {backend!r}; "
                          f"drop --backend (or pass --backend {built_on}), or index into another --name.")
    chosen = built_on or backend or "embedded"
    if url is not None and chosen != "chroma":
        raise ConfigError(f"--url is for --backend chroma; the index in {str(folder)!r} uses {chosen!r}.")
    return CodeIndex.open(folder, default_embedder(precision=precision), create=create, backend=chosen,
                          backend_options={"url": url} if url else None)


def _say_truncation(truncated: bool, tokens: int, limit: int) -> None:
    if truncated:
        console.print(f"[yellow]note:[/] the query has {tokens} tokens; only its first {limit} were embedded "
                      "(BM25 still used all of it).", soft_wrap=True)


@rag_app.command("index")
def index_cmd(
    path: Path = typer.Argument(..., help="Folder to index (e.g. . for this repository)."),
    name: str = typer.Option("default", "--name", help=NAME_HELP),
    index_dir: Path = typer.Option(None, "--index-dir", help=DIR_HELP),
    rebuild: bool = typer.Option(False, "--rebuild", help="Drop what is indexed and index PATH from scratch."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Extra glob of files/folders to skip (repeatable)."),
    max_file_kb: int = typer.Option(1000, "--max-file-kb", help="Skip files larger than this many KiB."),
    backend: str = typer.Option(None, "--backend", help=BACKEND_HELP),
    url: str = typer.Option(None, "--url", help=URL_HELP),
    precision: str = typer.Option("auto", "--precision", help=(
        "Embedding arithmetic: auto (bf16 on a CPU with native bfloat16, else fp32), fp32 or bf16. "
        "bf16 takes about half the CPU time; its vectors match fp32 to a cosine of 0.9999.")),
) -> None:
    """Index (or incrementally update) the code and docs under PATH."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cortex.retrieval.chunking import ChunkingConfig
    from cortex.retrieval.files import DEFAULT_EXCLUDES
    folder = _index_dir(name, index_dir)
    index = _open_index(name, index_dir, create=True, backend=backend, url=url, precision=precision)
    index.chunking = ChunkingConfig(**{**vars(index.chunking), "max_file_bytes": max_file_kb * 1024})
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task({"scan": "scanning files", "embed": "embedding chunks"}.get(stage, stage),
                                            total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = index.update(path, excludes=(*DEFAULT_EXCLUDES, *(exclude or [])), rebuild=rebuild, progress=progress)
    skipped = report.skipped_counts()
    console.print(
        f"[green]indexed[/] {path} -> {folder}\n"
        f"  files: {len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, "
        f"{len(report.unchanged)} unchanged; skipped {sum(skipped.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))})" if skipped else "")
        + f"\n  chunks: {report.chunks_embedded} embedded, {report.chunks_total} in the index; "
        f"{report.truncated_chunks} longer than the embedder's {index.collection.embedder.max_tokens}-token "
        f"limit (embedded by their start; BM25 sees all)"
        + (f"; {report.chunks_recovered} taken back from the server without embedding" if report.chunks_recovered else "")
        + f"\n  vectors: {_where(index)}"
        + f"\n  took {report.seconds:.1f}s ("
        + ", ".join(f"{stage} {sec:.1f}s" for stage, sec in report.stage_seconds.items()) + ")",
        soft_wrap=True,
    )
    for s in report.skipped[:10]:
        console.print(f"  skipped {s.path}: {s.reason} ({s.detail})", soft_wrap=True)
    if len(report.skipped) > 10:
        console.print(f"  ... and {len(report.skipped) - 10} more skipped")


def _where(index) -> str:
    be = index.collection.backend
    if index.collection.backend_name == "chroma":
        return f"chroma server {be.config.url}, collection {be.server.name}"
    return f"{index.collection.backend_name} backend in {index.folder}"


@rag_app.command("query")
def query_cmd(
    text: str = typer.Argument(..., help="What to look for, in words or identifiers."),
    k: int = typer.Option(5, "-k", "--k", help="How many chunks to return."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid (BM25 + dense, fused), dense or bm25."),
    name: str = typer.Option("default", "--name", help=NAME_HELP),
    index_dir: Path = typer.Option(None, "--index-dir", help=DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    backend: str = typer.Option(None, "--backend", help=BACKEND_HELP),
    url: str = typer.Option(None, "--url", help=URL_HELP),
) -> None:
    """Search the index and print the best chunks with their paths and lines."""
    index = _open_index(name, index_dir, backend=backend, url=url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, once, in our own words
        res = index.search(text, k=k, mode=mode)
    if as_json:
        for h in res.hits:
            typer.echo(json.dumps({"citation": h.chunk.citation, "path": h.chunk.path, "start_line": h.chunk.start_line,
                                   "end_line": h.chunk.end_line, "kind": h.chunk.kind, "name": h.chunk.name,
                                   "score": h.score, "ranks": h.ranks}))
    else:
        from rich.table import Table

        table = Table("#", "SCORE", "WHERE", "WHAT", box=None)
        for r, h in enumerate(res.hits, start=1):
            table.add_row(str(r), f"{h.score:.4f}", h.chunk.citation, f"{h.chunk.kind} {h.chunk.name}".strip())
        console.print(table)
        if not res.hits:
            console.print("no matches")
    _say_truncation(res.truncated, res.query_tokens, index.collection.embedder.max_tokens)


@rag_app.command("context")
def context_cmd(
    task: str = typer.Argument(..., help="The task a worker is about to do."),
    template: str = typer.Option("worker", "--template", help="Template name (the built-in one is 'worker')."),
    task_id: str = typer.Option(None, "--task-id", help="Task id for the A/B split and outcome logging (default: hash of the task)."),
    budget: int = typer.Option(2048, "--budget", help="Token budget of the whole prompt."),
    k: int = typer.Option(8, "-k", "--k", help="Most chunks to include."),
    name: str = typer.Option("default", "--name", help=NAME_HELP),
    index_dir: Path = typer.Option(None, "--index-dir", help=DIR_HELP),
    with_memory: bool = typer.Option(False, "--memory", help="Add similar past tasks from long-term memory."),
    as_json: bool = typer.Option(False, "--json", help="Print the prompt and its provenance as JSON."),
    backend: str = typer.Option(None, "--backend", help=BACKEND_HELP),
    url: str = typer.Option(None, "--url", help=URL_HELP),
) -> None:
    """Build a worker prompt: a versioned template, the task, and cited chunks within a token budget."""
    from cortex.retrieval.context import ContextConfig, build_context

    index = _open_index(name, index_dir, backend=backend, url=url)
    memory_text = ""
    if with_memory:
        from cortex.retrieval.memory import LongTermMemory

        mem = LongTermMemory(embedder=index.collection.embedder)
        if len(mem):
            memory_text = "\n".join(f"- [{'ok' if h.success else 'failed'}, {h.master}] {h.record.summary}"
                                    for h in mem.search(task, k=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = build_context(index, task, template=template, task_id=task_id, memory=memory_text,
                            config=ContextConfig(k=k, candidates=max(30, 4 * k), budget_tokens=budget))
    if as_json:
        typer.echo(json.dumps({"prompt": ctx.prompt, "template": ctx.template, "version": ctx.version,
                               "task_id": ctx.task_id, "tokens": ctx.tokens, "budget": ctx.budget,
                               "citations": [c.ref for c in ctx.citations], "duplicates": ctx.duplicates,
                               "over_budget": ctx.over_budget, "query_truncated": ctx.query_truncated}))
        return
    typer.echo(ctx.prompt)
    console.print(
        f"[dim]template {ctx.template} v{ctx.version} · task id {ctx.task_id} · {ctx.tokens}/{ctx.budget} tokens · "
        f"{len(ctx.citations)} chunks ({ctx.duplicates} duplicates, {ctx.over_budget} over budget dropped)\n"
        f"log the result with: cortex rag outcome {ctx.task_id} --template {ctx.template} --success|--failure[/]",
        soft_wrap=True,
    )
    if ctx.query_truncated:
        console.print("[yellow]note:[/] the task is longer than the embedder's limit; only its start was embedded.")


@rag_app.command("outcome")
def outcome_cmd(
    task_id: str = typer.Argument(..., help="The task id printed by `cortex rag context`."),
    template: str = typer.Option("worker", "--template", help="Template name the task used."),
    success: bool = typer.Option(..., "--success/--failure", help="Whether the worker succeeded."),
    score: float = typer.Option(None, "--score", help="Optional quality score."),
    version: int = typer.Option(None, "--version", help="Template version (default: the one the task was assigned)."),
) -> None:
    """Log a task's outcome against the template version it was given."""
    from cortex.retrieval.templates import TemplateStore

    rec = TemplateStore().log_outcome(template, task_id, success, score=score, version=version)
    console.print(f"logged {'success' if success else 'failure'} for task {task_id} on {template} v{rec['version']}")


@template_app.command("add")
def template_add_cmd(
    name: str = typer.Argument(..., help="Template name."),
    file: Path = typer.Argument(..., help="Text file with the template ({task}, {context}, {memory} fields)."),
    note: str = typer.Option("", "--note", help="What changed in this version."),
) -> None:
    """Store FILE as the next version of template NAME."""
    from cortex.errors import InputError
    from cortex.retrieval.templates import TemplateStore

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"Cannot read template file {str(file)!r} ({e}); pass a UTF-8 text file.") from e
    tv = TemplateStore().add(name, text, note=note)
    console.print(f"template {tv.name} v{tv.version} ({tv.sha256[:12]})")


@template_app.command("list")
def template_list_cmd() -> None:
    """List templates with their versions and A/B splits."""
    from cortex.retrieval.templates import DEFAULT_NAME, TemplateStore

    store = TemplateStore()
    for n in sorted({*store.names(), DEFAULT_NAME}):
        vs = store.versions(n)
        ab = store.ab(n)
        split = f"  A/B {ab['versions']} weights {ab['weights']}" if ab else ""
        console.print(f"{n}: versions {[v.version for v in vs]}{split}")


@template_app.command("show")
def template_show_cmd(
    name: str = typer.Argument(..., help="Template name."),
    version: int = typer.Option(None, "--version", help="Version (default: latest)."),
) -> None:
    """Print a template version's text."""
    from cortex.retrieval.templates import TemplateStore

    typer.echo(TemplateStore().get(name, version).text)


@template_app.command("ab")
def template_ab_cmd(
    name: str = typer.Argument(..., help="Template name."),
    versions: str = typer.Option(..., "--versions", help="Comma-separated versions, e.g. 1,2."),
    weights: str = typer.Option(None, "--weights", help="Comma-separated weights (default equal)."),
) -> None:
    """Split tasks between versions of a template by a hash of the task id."""
    from cortex.errors import ConfigError
    from cortex.retrieval.templates import TemplateStore

    try:
        vs = [int(v) for v in versions.split(",")]
        ws = [float(w) for w in weights.split(",")] if weights else None
    except ValueError as e:
        raise ConfigError(f"--versions {versions!r} / --weights {weights!r} must be comma-separated numbers, e.g. 1,2.") from e
    TemplateStore().set_ab(name, vs, ws)
    console.print(f"{name}: tasks split between versions {vs}")


@template_app.command("stats")
def template_stats_cmd(name: str = typer.Argument(..., help="Template name.")) -> None:
    """Per-version assignments and outcomes of a template."""
    from rich.table import Table

    from cortex.retrieval.templates import TemplateStore

    table = Table("VERSION", "ASSIGNED", "OUTCOMES", "SUCCESS RATE", "MEAN SCORE", box=None)
    for s in TemplateStore().stats(name):
        table.add_row(str(s.version), str(s.assigned), str(s.outcomes),
                      "-" if s.success_rate is None else f"{s.success_rate:.3f}",
                      "-" if s.mean_score is None else f"{s.mean_score:.3f}")
    console.print(table)


@memory_app.command("add")
def memory_add_cmd(
    task_id: str = typer.Argument(..., help="Task id."),
    summary: str = typer.Option(..., "--summary", help="What the task was."),
    master: str = typer.Option(..., "--master", help="Worker group it went to."),
    success: bool = typer.Option(..., "--success/--failure", help="Whether it succeeded."),
) -> None:
    """Remember a finished task."""
    from cortex.retrieval.memory import LongTermMemory, TaskRecord

    mem = LongTermMemory()
    mem.add(TaskRecord(task_id, summary, master, success))
    console.print(f"remembered {task_id} ({len(mem)} tasks in memory)")


@memory_app.command("search")
def memory_search_cmd(
    text: str = typer.Argument(..., help="A task to find similar past tasks for."),
    k: int = typer.Option(5, "-k", "--k", help="How many past tasks."),
) -> None:
    """Show the past tasks most similar to TEXT and the masters they vote for."""
    from cortex.retrieval.memory import LongTermMemory, knn_vote

    hits = LongTermMemory().search(text, k=k)
    for h in hits:
        console.print(f"{h.score:.3f}  {h.record.task_id}  {h.master}  {'ok' if h.success else 'failed'}  {h.record.summary[:70]}",
                      soft_wrap=True)
    console.print(f"vote: {knn_vote(hits)}")


def register(app: typer.Typer) -> None:
    """Add ``cortex rag`` to the CLI."""
    rag_app.add_typer(template_app, name="template")
    rag_app.add_typer(memory_app, name="memory")
    app.add_typer(rag_app, name="rag")

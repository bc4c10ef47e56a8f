"""The ``kg-etl`` command line: parse options, call the library, render with rich.

The only module that imports click or rich. Every ``KgEtlError`` is caught here, once, and printed as one
line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import click
from pydantic import SecretStr
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kg_etl import __version__
from kg_etl.config import DEFAULT_CATEGORIES, DEFAULT_MODEL, IngestSettings, kg_etl_home
from kg_etl.errors import KgEtlError, WorkerCrashedError
from kg_etl.graph.connection import Graph, GraphSettings
from kg_etl.graph.server import default_server
from kg_etl.pipeline import ALL_EXTRACTORS

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True)
out = Console()


# Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_PARTIAL = 1  # the run finished, but some documents or chunks failed (see the summary / --report)
EXIT_USAGE = 2  # bad options (click's own code)
EXIT_ERROR = 3  # nothing could be done: graph unreachable, model missing, bad configuration
EXIT_CRASH = 4  # a model's worker process died (a crash inside llama.cpp); rerun to resume
EXIT_INTERRUPTED = 130  # Ctrl-C; rerun to resume


class _KgEtlGroup(click.Group):
    """Turns every ``KgEtlError`` into one line on stderr and ``EXIT_ERROR``, for CliRunner too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KgEtlError as e:
            err.print("[red]error:[/red] ", end="", highlight=False)
            err.print(str(e), highlight=False, markup=False, soft_wrap=True)
            ctx.exit(EXIT_CRASH if isinstance(e, WorkerCrashedError) else EXIT_ERROR)


def main() -> None:
    """Entry point of the ``kg-etl`` console script."""
    try:
        code = cli.main(prog_name="kg-etl", standalone_mode=False)
    except click.exceptions.Abort:  # a Ctrl-C that stopped at once (click turns KeyboardInterrupt into Abort)
        err.print("interrupted: rerun the same command to resume", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.group(cls=_KgEtlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kg-etl")
@click.option("-v", "--verbose", count=True, help="More log detail on stderr: -v info, -vv debug.")
@click.option(
    "--connect-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    envvar="KG_ETL_CONNECT_TIMEOUT",
    help="Seconds to keep retrying a graph database that is still starting [env KG_ETL_CONNECT_TIMEOUT].",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, connect_timeout: float) -> None:
    """kg-etl: turn a folder of PDFs into a Neo4j knowledge graph with small local LLMs."""
    ctx.obj = {"connect_timeout": connect_timeout}
    _configure_logging(verbose)


def _configure_logging(verbose: int) -> None:
    """Standard-library logging through rich, on the same console as the progress display (never mixed)."""
    from rich.logging import RichHandler

    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler], force=True)
    # pypdf narrates every repair it makes at WARNING; the reader already reports what matters per page.
    logging.getLogger("pypdf").setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)
    logging.getLogger("neo4j").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


# -- graph connection ------------------------------------------------------------------------------------


def _graph_options(f: F) -> F:
    """The Neo4j connection options, each also read from Neo4j's own environment variables."""
    options = [
        click.option(
            "--neo4j-uri",
            envvar="NEO4J_URI",
            help="Bolt URI, e.g. bolt://localhost:7687 "
            "[env NEO4J_URI]; without it kg-etl starts or reuses its local graph server.",
        ),
        click.option(
            "--neo4j-username", envvar="NEO4J_USERNAME", default="neo4j", show_default=True, help="[env NEO4J_USERNAME]"
        ),
        click.option("--neo4j-password", envvar="NEO4J_PASSWORD", help="[env NEO4J_PASSWORD]"),
        click.option("--neo4j-database", envvar="NEO4J_DATABASE", help="database name [env NEO4J_DATABASE]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _graph_settings(uri: str | None, username: str, password: str | None, database: str | None) -> GraphSettings:
    if uri:
        if password is None:
            raise click.UsageError("--neo4j-uri / NEO4J_URI is set but no password: set NEO4J_PASSWORD")
        return GraphSettings(uri=uri, username=username, password=SecretStr(password), database=database)
    server = default_server()
    running = server.status()
    info = running or server.start()
    verb = "using" if running else "started"
    err.print(
        f"{verb} the local graph server at {info.uri} (database {info.database}); set NEO4J_URI to use your own Neo4j",
        highlight=False,
        soft_wrap=True,
    )
    return GraphSettings(
        uri=info.uri, username=info.username, password=SecretStr(server.password()), database=info.database
    )


@contextmanager
def _open_graph(uri: str | None, username: str, password: str | None, database: str | None) -> Iterator[Graph]:
    timeout = click.get_current_context().find_root().obj["connect_timeout"]
    with Graph(_graph_settings(uri, username, password, database)) as graph:
        graph.wait_ready(timeout)
        yield graph


# -- ingest ----------------------------------------------------------------------------------------------


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--batch",
    "batch_size",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Chunks per graph transaction.",
)
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    envvar="KG_ETL_MODEL",
    help="Model name from `kg-etl models list`, or a path to a .gguf file [env KG_ETL_MODEL].",
)
@click.option(
    "--model-for",
    "model_for",
    multiple=True,
    metavar="EXTRACTOR=MODEL",
    envvar="KG_ETL_MODEL_FOR",
    help="Run one extractor on another model, e.g. validate=lfm2-700m-q4_k_m (repeatable). Models then run "
    "one after the other, each over every file, and only one is loaded at a time "
    "[env KG_ETL_MODEL_FOR, space-separated].",
)
@click.option(
    "--keep-models",
    is_flag=True,
    help="With --model-for: keep every model loaded at once (faster, needs memory for all of them).",
)
@click.option("--no-download", is_flag=True, help="Never download a model; fail if it is not on disk.")
@click.option(
    "--extract",
    "extract",
    default=",".join(ALL_EXTRACTORS),
    show_default=True,
    help="Comma-separated extractors to run (validate = the QA validation pass).",
)
@click.option("--categories", help="Comma-separated category labels to classify into [default: a general set].")
@click.option(
    "--gpu-layers",
    default=-1,
    show_default=True,
    type=click.IntRange(-1),
    help="Layers to offload to the GPU: -1 all, 0 none (CPU).",
)
@click.option("--gpu", "require_gpu", is_flag=True, help="Fail unless this build can offload to a GPU.")
@click.option(
    "--parallel",
    default=8,
    show_default=True,
    type=click.IntRange(1, 64),
    envvar="KG_ETL_PARALLEL",
    help="Sequences decoded together in one llama.cpp context (1 = one at a time) [env KG_ETL_PARALLEL].",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    envvar="KG_ETL_THREADS",
    help="CPU threads for llama.cpp [env KG_ETL_THREADS; default: the cores idle at start, since threads on "
    "busy cores stall each other].",
)
@click.option(
    "--cpu-repack",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    envvar="KG_ETL_CPU_REPACK",
    help="llama.cpp's repacked CPU weights: auto probes once per machine and model in a child process and "
    "falls back to plain buffers where llama.cpp crashes (its AMX kernels on Intel Xeons) [env KG_ETL_CPU_REPACK].",
)
@click.option("--n-ctx", default=8192, show_default=True, type=click.IntRange(512), help="Context window.")
@click.option(
    "--retries",
    default=2,
    show_default=True,
    type=click.IntRange(0, 10),
    help="Re-asks after a reply that does not fit its schema.",
)
@click.option("--deterministic", is_flag=True, help="Greedy decoding (temperature 0): same input, same graph.")
@click.option(
    "--password",
    "pdf_password",
    envvar="KG_ETL_PDF_PASSWORD",
    help="Password for encrypted PDFs [env KG_ETL_PDF_PASSWORD].",
)
@click.option(
    "--read-timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds allowed to read one PDF.",
)
@click.option("--chunk-tokens", type=click.IntRange(32), help="Token budget per chunk [default: 512].")
@click.option("--overlap-tokens", type=click.IntRange(0), help="Tokens shared by neighbouring chunks [default: 64].")
@click.option(
    "--retry-failed/--no-retry-failed",
    default=True,
    show_default=True,
    help="Try documents recorded as failed again (most failures are transient; broken files fail fast).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JSON report of the run (per document: pages, chunks, extractions, failures, seconds).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@_graph_options
def ingest(
    inputs: tuple[Path, ...],
    batch_size: int,
    model: str,
    model_for: tuple[str, ...],
    keep_models: bool,
    no_download: bool,
    extract: str,
    categories: str | None,
    gpu_layers: int,
    require_gpu: bool,
    parallel: int,
    threads: int | None,
    cpu_repack: str,
    n_ctx: int,
    retries: int,
    deterministic: bool,
    pdf_password: str | None,
    read_timeout: float,
    chunk_tokens: int | None,
    overlap_tokens: int | None,
    retry_failed: bool,
    report_path: Path | None,
    quiet: bool,
    neo4j_uri: str | None,
    neo4j_username: str,
    neo4j_password: str | None,
    neo4j_database: str | None,
) -> None:
    """Read PDFs (files or folders), extract knowledge with the local model, and write it to the graph.

    Re-running on the same files is safe: finished documents are skipped, interrupted ones resume. Ctrl-C
    stops after the batch in hand is committed (twice: at once, the open batch rolled back).

    Exit codes: 0 all done; 1 some documents or chunks failed; 2 bad options; 3 nothing could be done
    (graph unreachable, model missing); 4 the model's worker process crashed (rerun to resume); 130 interrupted.
    """
    from kg_etl.pipeline import IngestReport
    from kg_etl.pipeline import ingest as run_ingest

    settings = IngestSettings(
        model=model,
        extractor_models=_extractor_models(model_for),
        keep_models_loaded=keep_models,
        download=not no_download,
        batch_size=batch_size,
        extractors=_split(extract),
        retries=retries,
        n_ctx=n_ctx,
        gpu_layers=gpu_layers,
        require_gpu=require_gpu,
        threads=threads,
        cpu_repack=cast(Literal["auto", "on", "off"], cpu_repack),
        parallel=parallel,
        deterministic=deterministic,
        read_timeout=read_timeout,
        password=SecretStr(pdf_password) if pdf_password else None,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        categories=_split(categories) if categories else DEFAULT_CATEGORIES,
        retry_failed=retry_failed,
    )
    _report_gpu(settings)
    report = IngestReport()
    try:
        with (
            _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph,
            _IngestDisplay(quiet) as display,
            _GracefulStop() as stop,
        ):
            run_ingest(
                list(inputs), graph, settings, on_event=display.on_event, should_stop=stop.requested, report=report
            )
    except BaseException as e:
        # Whatever ends the run, the summary and the report say what was done up to then.
        report.interrupted = report.interrupted or isinstance(e, KeyboardInterrupt | click.exceptions.Abort)
        report.error = str(e) if isinstance(e, KgEtlError) else type(e).__name__
        raise
    finally:
        _finish(report, report_path)
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not report.ok:
        sys.exit(EXIT_PARTIAL)


def _finish(report: Any, report_path: Path | None) -> None:
    """The end-of-run summary and the --report file, on every way out of an ingest."""
    if report_path is not None:
        try:
            report_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
        except OSError as e:
            err.print(f"cannot write the report {report_path}: {e.strerror or e}", highlight=False, markup=False)
    _print_summary(report)


def _extractor_models(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--model-for`` values as extractor name -> model."""
    chosen: dict[str, str] = {}
    for pair in pairs:
        name, _, ref = (part.strip() for part in pair.partition("="))
        if name not in ALL_EXTRACTORS or not ref:
            raise click.BadParameter(
                f"{pair!r}: expected EXTRACTOR=MODEL with EXTRACTOR one of {','.join(ALL_EXTRACTORS)}",
                param_hint="--model-for",
            )
        chosen[name] = ref
    return chosen


def _split(values: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in values.split(",") if v.strip())


def _report_gpu(settings: IngestSettings) -> None:
    from kg_etl.llm.runtime import CUDA_BUILD_HINT, gpu_offload_supported

    if gpu_offload_supported():
        err.print("llama.cpp build: GPU offload available", highlight=False)
    elif settings.gpu_layers != 0:
        err.print(
            f"llama.cpp build: CPU only (no GPU offload); for a GPU, {CUDA_BUILD_HINT}", highlight=False, soft_wrap=True
        )


class _GracefulStop:
    """First Ctrl-C: finish the batch in hand, then stop. Second: stop at once (the open batch rolls back)."""

    def __init__(self) -> None:
        self._requested = False
        self._previous: Any = None

    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        err.print("stopping after the current batch (Ctrl-C again to stop now)", highlight=False)

    def __enter__(self) -> _GracefulStop:
        # Signal handlers can only be set from the main thread (CliRunner in a thread, for one).
        with contextlib.suppress(ValueError):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _IngestDisplay:
    """A rich progress display fed by pipeline events: files, pages of the current file, what the model does.

    Notices and log lines print above it through the same console, so nothing garbles the bars.
    """

    def __init__(self, quiet: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err,
            disable=quiet,
        )
        self.files = self.progress.add_task("files", total=None, info="")
        self.pages = self.progress.add_task("pages", total=None, info="", visible=False)

    def __enter__(self) -> _IngestDisplay:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def on_event(self, event: Any) -> None:
        p = self.progress
        if event.kind == "notice":
            p.console.print(event.message, highlight=False, markup=False, soft_wrap=True)
        elif event.kind == "run_start":
            p.update(self.files, total=event.total)
        elif event.kind == "document_start":
            p.reset(self.pages, description=Path(event.path).name[:40], total=event.total, visible=True, info="")
        elif event.kind == "stage":
            p.update(self.pages, info=event.message)
        elif event.kind == "batch":
            speed = f"{event.tokens_per_s:.0f} tok/s" if event.tokens_per_s else ""
            p.update(self.pages, completed=event.done, info=speed)
        elif event.kind == "document_end":
            p.advance(self.files)
            p.update(self.pages, visible=False)


def _print_summary(report: Any) -> None:
    done = sum(d.status == "done" for d in report.documents)
    skipped = sum(d.status == "skipped" for d in report.documents)
    failed = [d for d in report.documents if d.status == "failed"]
    chunks = sum(d.chunks_written for d in report.documents)
    bad_chunks = sum(d.chunks_failed for d in report.documents)
    where = "GPU" if report.gpu_offload else "CPU"
    models = "no model loaded" if not report.models else f"{report.model} on the {where}"
    if len(report.models) > 1:
        models += f" (at most {report.max_resident_models} loaded at once)"
    err.print(
        f"{done} ingested, {skipped} already done, {len(failed)} failed; {chunks} chunks written "
        f"({bad_chunks} with failed extractions), {report.llm_calls} LLM calls, {report.seconds:.1f} s; "
        f"{models}; peak memory {report.peak_rss_mb or 0:.0f} MiB here"
        + (f", {report.worker_peak_rss_mb:.0f} MiB in the model worker" if report.worker_peak_rss_mb else ""),
        highlight=False,
        soft_wrap=True,
    )
    for d in failed:
        err.print(f"  failed: {d.path}: {d.reason}", highlight=False, markup=False, soft_wrap=True)
    for d in report.documents:
        for f in d.failures[:3]:
            err.print(
                f"  {Path(d.path).name}: {f.extractor} failed after {f.attempts} tries: {f.error}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    if report.interrupted:
        err.print("interrupted: rerun the same command to resume", highlight=False)


# -- export, schema, stats, query ---------------------------------------------------------------------------


@cli.command()
@click.argument("out_path", metavar="OUT.jsonl", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--kind",
    type=click.Choice(["qa", "facts", "taxonomy", "keywords", "summaries"]),
    default="qa",
    show_default=True,
    help="What to export: QA pairs, atomic facts, topic paths, keywords, or chunk and document summaries.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["plain", "chat", "alpaca", "sharegpt"]),
    default="plain",
    show_default=True,
    help="QA record shape: plain (kg_etl/data/qa_record.schema.json), chat (messages), alpaca "
    "(instruction/input/output) or sharegpt (conversations); the last three carry the citation as metadata.",
)
@click.option("--validated-only", is_flag=True, help="Only QA pairs that the validation pass judged valid.")
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    help="Only QA pairs with a validation score of at least this (unvalidated pairs have none).",
)
@click.option(
    "--document",
    "documents",
    multiple=True,
    metavar="DOC",
    help="Only this document: its id (sha256), path or file name. Repeat for several.",
)
@click.option(
    "--keep-duplicates",
    is_flag=True,
    help="Keep near-duplicate questions (by default only the best-scoring question of each group is written).",
)
@click.option(
    "--system",
    "system_prompt",
    help="The system turn of --format chat and sharegpt; '' for none [default: answer briefly and accurately].",
)
@_graph_options
def export(
    out_path: str,
    kind: str,
    fmt: str,
    validated_only: bool,
    min_score: float | None,
    documents: tuple[str, ...],
    keep_duplicates: bool,
    system_prompt: str | None,
    neo4j_uri: str | None,
    neo4j_username: str,
    neo4j_password: str | None,
    neo4j_database: str | None,
) -> None:
    """Write QA pairs (or another extraction) as JSON lines, each citing its document and pages ("-": stdout).

    Near-duplicate questions are removed unless --keep-duplicates; stderr says how many. The same graph always
    gives the same file. A file is written whole or not at all (OUT.jsonl.part until it is complete).
    """
    from kg_etl.export import ExportReport, QAOptions
    from kg_etl.export import export as write_records

    options: dict[str, Any] = {"format": fmt, "validated_only": validated_only, "min_score": min_score}
    options |= {"dedup": not keep_duplicates} | ({} if system_prompt is None else {"system": system_prompt})
    qa = QAOptions.model_validate(options)
    report: ExportReport
    with _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph:
        if out_path == "-":
            report = write_records(graph, sys.stdout, kind, documents, qa)
        else:
            target = Path(out_path)
            partial = target.with_name(target.name + ".part")
            try:
                with partial.open("w", encoding="utf-8", newline="\n") as f:
                    report = write_records(graph, f, kind, documents, qa)
                partial.replace(target)
            except OSError as e:  # the graph's own OSErrors arrive as GraphError, so this one is the file's
                raise KgEtlError(f"{out_path}: cannot write it ({e.strerror or e}); check its folder and disk") from e
            finally:
                partial.unlink(missing_ok=True)
    err.print(f"{report.written} {kind} records written to {out_path}", highlight=False, markup=False)
    if kind == "qa":
        err.print(
            f"{report.duplicates_removed} near-duplicate questions removed, "
            f"{report.filtered_out} pairs below --validated-only / --min-score",
            highlight=False,
            markup=False,
        )


@cli.command()
@click.argument("document")
@_graph_options
def remove(
    document: str, neo4j_uri: str | None, neo4j_username: str, neo4j_password: str | None, neo4j_database: str | None
) -> None:
    """Remove a document (by id, path or file name) and everything only it holds.

    Entities, topics, keywords and categories that other documents still use are kept.
    """
    from kg_etl.graph.writer import GraphWriter

    with _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph:
        writer = GraphWriter(graph)
        found = writer.find_documents(document)
        if not found:
            raise KgEtlError(f"{document}: no such document in the graph; `kg-etl query` lists them")
        for row in found:
            writer.remove_document(row["id"])
            err.print(f"removed {row['path']} ({row['id'][:12]})", highlight=False, markup=False)


@cli.group()
def schema() -> None:
    """The graph's constraints and indexes (cypher/schema.cypher)."""


@schema.command("apply")
@_graph_options
def schema_apply(
    neo4j_uri: str | None, neo4j_username: str, neo4j_password: str | None, neo4j_database: str | None
) -> None:
    """Create the constraints and indexes if they do not exist (ingest does this by itself)."""
    with _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph:
        count = graph.apply_schema()
    err.print(f"{count} schema statements applied", highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_graph_options
def stats(
    as_json: bool, neo4j_uri: str | None, neo4j_username: str, neo4j_password: str | None, neo4j_database: str | None
) -> None:
    """Node counts per label and relationship counts per type."""
    from kg_etl.graph import statements as st

    with _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph:
        labels = {r["label"]: r["count"] for r in graph.read_rows(st.COUNT_LABELS)}
        rels = {r["type"]: r["count"] for r in graph.read_rows(st.COUNT_RELATIONSHIPS)}
    if as_json:
        click.echo(json.dumps({"labels": labels, "relationships": rels}, sort_keys=True))
        return
    _print_table(["label", "nodes"], sorted(labels.items()))
    _print_table(["relationship", "count"], sorted(rels.items()))


@cli.command()
@click.argument("cypher")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@_graph_options
def query(
    cypher: str,
    as_json: bool,
    neo4j_uri: str | None,
    neo4j_username: str,
    neo4j_password: str | None,
    neo4j_database: str | None,
) -> None:
    """Run a read-only Cypher query (a read transaction: it cannot change the graph)."""
    with _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph:
        rows = graph.read_query(cypher)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False))
        return
    columns = list(rows[0]) if rows else []
    _print_table(columns, [[row[c] for c in columns] for row in rows])


def _print_table(columns: list[str], rows: Any) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    out.print(table)


# -- local graph server ---------------------------------------------------------------------------------------


@cli.group()
def graph() -> None:
    """The local graph server (ArcadeDB over Bolt), used when NEO4J_URI is not set."""


@graph.command("start")
def graph_start() -> None:
    """Start the local graph server on free loopback ports (or report the running one)."""
    info = default_server().start()
    click.echo(f"running: {info.uri} pid {info.pid} database {info.database} user {info.username}")


@graph.command("stop")
def graph_stop() -> None:
    """Stop the local graph server (by its recorded PID)."""
    stopped = default_server().stop()
    click.echo("stopped" if stopped else "not running")


@graph.command("status")
def graph_status() -> None:
    """Print the local graph server's URI, PID and database, or that it is not running."""
    server = default_server()
    info = server.status()
    if info is None:
        click.echo(f"not running (home {server.root})")
        sys.exit(3)
    click.echo(f"running: {info.uri} pid {info.pid} database {info.database} user {info.username}")
    click.echo(f"password file: {server.password_path}")


# -- models ---------------------------------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """The LFM2 GGUF models kg-etl knows (gguf/models.toml)."""


@models.command("list")
def models_list() -> None:
    """Each known model: whether it is downloaded, its size and path."""
    from kg_etl.llm.registry import find_model_file, load_manifest

    table = Table("name", "present", "size", "path")
    for name, spec in sorted(load_manifest().items()):
        path = find_model_file(spec)
        size = path.stat().st_size if path else spec.size
        table.add_row(
            name + (" (default)" if name == DEFAULT_MODEL else ""),
            "yes" if path else "no",
            f"{size / 1e6:.0f} MB" if size else "?",
            str(path) if path else f"{spec.repo}/{spec.file}",
        )
    out.print(table)


@models.command("pull")
@click.argument("name")
def models_pull(name: str) -> None:
    """Download a model from the Hugging Face hub and verify its checksum."""
    from kg_etl.errors import ModelNotFoundError
    from kg_etl.llm.registry import load_manifest, pull_model

    spec = load_manifest().get(name.lower())
    if spec is None:
        raise ModelNotFoundError(f"{name}: unknown model; see `kg-etl models list`")
    path = pull_model(spec)
    click.echo(f"{spec.name}: {path}")


# -- chunks -----------------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("pdf", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--password", envvar="KG_ETL_PDF_PASSWORD", help="Password for an encrypted PDF.")
@click.option("--read-timeout", default=120.0, show_default=True, type=click.FloatRange(min=1))
def chunks(pdf: Path, password: str | None, read_timeout: float) -> None:
    """Print a PDF's chunks as JSON lines (page warnings on stderr); exit 1 if it cannot be read."""
    from kg_etl.chunk import chunk_pages
    from kg_etl.models import PageStatus
    from kg_etl.read import open_pdf

    doc = open_pdf(pdf, password=password, timeout_s=read_timeout)
    for chunk in chunk_pages(_warn_pages(doc.pages(), pdf, PageStatus.OK), doc.meta.id):
        click.echo(chunk.model_dump_json(exclude={"doc_id"}))


def _warn_pages(pages: Iterator[Any], pdf: Path, ok: Any) -> Iterator[Any]:
    for page in pages:
        if page.status != ok:
            err.print(f"{pdf} page {page.number}: {page.status.value} ({page.reason})", highlight=False, markup=False)
        yield page


@cli.command()
@click.option(
    "--out",
    "out_dir",
    default="bench-out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for results.json, results.md and results.png.",
)
@click.option("--quick", is_flag=True, help="A smaller version of every benchmark (a few minutes).")
@click.option("--preset", default="1.2b", show_default=True, help="Shape of the random-weight model (kg_etl.testing).")
def bench(out_dir: Path, quick: bool, preset: str) -> None:
    """Measure every figure against its baseline in one run (needs a clone of the repository).

    On a GPU machine, install llama-cpp-python with CUDA first (README, "GPU"): the LLM figures then use
    full offload.
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "suite.py").is_file():
        raise KgEtlError("kg-etl bench runs from a clone of the kg-etl repository (benchmarks/ is not installed)")
    sys.path.insert(0, str(root))
    suite: Any = importlib.import_module("benchmarks.suite")  # dev tooling, outside the typed package

    results = suite.run(out_dir, quick=quick, preset=preset, log=lambda line: err.print(line, highlight=False))
    out.print(suite.markdown(results))
    err.print(f"written: {out_dir}/results.json, results.md, results.png", highlight=False)


@cli.command()
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    envvar="KG_ETL_MODEL",
    help="The model to check (name or .gguf path) [env KG_ETL_MODEL].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@_graph_options
def doctor(
    model: str,
    as_json: bool,
    neo4j_uri: str | None,
    neo4j_username: str,
    neo4j_password: str | None,
    neo4j_database: str | None,
) -> None:
    """Check that this machine can ingest: llama.cpp build and CPU, model file, placement probe, graph, disk.

    Exit 0 when everything an ingest needs is in order; otherwise 3, with the first problem on stderr.

    Example: kg-etl doctor --model lfm2-1.2b-q4_k_m
    """
    from kg_etl.doctor import diagnose

    report = diagnose(model, neo4j_uri, (neo4j_username, neo4j_password), neo4j_database)
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "checks": [c.model_dump() for c in report.checks]}, default=str))
    else:
        table = Table("check", "found", "problem")
        for check in report.checks:
            table.add_row(check.name, check.found, check.problem or "")
        out.print(table)
    if not report.ok:
        err.print("problem: ", end="", highlight=False)
        err.print(report.problems[0], highlight=False, markup=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)


@cli.command("home")
def home() -> None:
    """Print where kg-etl keeps its state (KG_ETL_HOME)."""
    click.echo(str(kg_etl_home()))

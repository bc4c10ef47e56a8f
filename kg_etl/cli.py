"""The ``kg-etl`` command line: parse options, call the library, render with rich.

The only module that imports click or rich. Every ``KgEtlError`` is caught here, once, and printed as one
line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kg_etl import __version__
from kg_etl.config import DEFAULT_CATEGORIES, DEFAULT_MODEL, IngestSettings, kg_etl_home
from kg_etl.errors import KgEtlError
from kg_etl.graph.connection import Graph, GraphSettings
from kg_etl.graph.server import default_server
from kg_etl.pipeline import ALL_EXTRACTORS

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True)
out = Console()


def main() -> None:
    """Entry point of the ``kg-etl`` console script."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KgEtlError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kg-etl")
def cli() -> None:
    """kg-etl: turn a folder of PDFs into a Neo4j knowledge graph with small local LLMs."""


# -- graph connection ------------------------------------------------------------------------------------


def graph_options(f: F) -> F:
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
    )
    return GraphSettings(
        uri=info.uri, username=info.username, password=SecretStr(server.password()), database=info.database
    )


@contextmanager
def _open_graph(uri: str | None, username: str, password: str | None, database: str | None) -> Iterator[Graph]:
    with Graph(_graph_settings(uri, username, password, database)) as graph:
        graph.wait_ready()
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
    "--threads",
    type=click.IntRange(1),
    envvar="KG_ETL_THREADS",
    help="CPU threads for llama.cpp [env KG_ETL_THREADS; default: all cores].",
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
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@graph_options
def ingest(
    inputs: tuple[Path, ...],
    batch_size: int,
    model: str,
    no_download: bool,
    extract: str,
    categories: str | None,
    gpu_layers: int,
    require_gpu: bool,
    threads: int | None,
    n_ctx: int,
    retries: int,
    deterministic: bool,
    pdf_password: str | None,
    read_timeout: float,
    chunk_tokens: int | None,
    overlap_tokens: int | None,
    quiet: bool,
    neo4j_uri: str | None,
    neo4j_username: str,
    neo4j_password: str | None,
    neo4j_database: str | None,
) -> None:
    """Read PDFs (files or folders), extract knowledge with the local model, and write it to the graph.

    Re-running on the same files is safe: finished documents are skipped, interrupted ones resume.
    """
    from kg_etl.pipeline import ingest as run_ingest

    settings = IngestSettings(
        model=model,
        download=not no_download,
        batch_size=batch_size,
        extractors=_split(extract),
        retries=retries,
        n_ctx=n_ctx,
        gpu_layers=gpu_layers,
        require_gpu=require_gpu,
        threads=threads,
        deterministic=deterministic,
        read_timeout=read_timeout,
        password=SecretStr(pdf_password) if pdf_password else None,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        categories=_split(categories) if categories else DEFAULT_CATEGORIES,
    )
    with (
        _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph,
        _IngestDisplay(quiet) as display,
    ):
        report = run_ingest(list(inputs), graph, settings, on_event=display.on_event)
    _print_summary(report)
    if not report.ok:
        sys.exit(1)


def _split(values: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in values.split(",") if v.strip())


class _IngestDisplay:
    """A rich progress display fed by pipeline events; notices print above it."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=quiet,
        )
        self.task = self.progress.add_task("starting", total=None)

    def __enter__(self) -> _IngestDisplay:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()

    def on_event(self, event: Any) -> None:
        if event.kind == "notice":
            self.progress.console.print(event.message, highlight=False, markup=False)
        elif event.kind == "document_start":
            self.progress.reset(self.task, description=f"{Path(event.path).name}: chunks", total=None)
        elif event.kind == "chunk":
            self.progress.advance(self.task)


def _print_summary(report: Any) -> None:
    done = sum(d.status == "done" for d in report.documents)
    skipped = sum(d.status == "skipped" for d in report.documents)
    failed = [d for d in report.documents if d.status == "failed"]
    chunks = sum(d.chunks_written for d in report.documents)
    bad_chunks = sum(d.chunks_failed for d in report.documents)
    err.print(
        f"{done} ingested, {skipped} already done, {len(failed)} failed; {chunks} chunks written "
        f"({bad_chunks} with failed extractions), {report.llm_calls} LLM calls, {report.seconds:.1f} s",
        highlight=False,
    )
    for d in failed:
        err.print(f"  failed: {d.path}: {d.reason}", highlight=False, markup=False)


# -- export, schema, stats, query ---------------------------------------------------------------------------


@cli.command()
@click.argument("out_path", metavar="OUT.jsonl", type=click.Path(dir_okay=False, allow_dash=True))
@graph_options
def export(
    out_path: str, neo4j_uri: str | None, neo4j_username: str, neo4j_password: str | None, neo4j_database: str | None
) -> None:
    """Write the extracted facts, with document and page citations, as JSON lines ("-" for stdout)."""
    from kg_etl.export import export_facts

    with _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph:
        if out_path == "-":
            count = export_facts(graph, sys.stdout)
        else:
            with open(out_path, "w", encoding="utf-8") as f:
                count = export_facts(graph, f)
    err.print(f"{count} records written to {out_path}", highlight=False)


@cli.command()
@click.argument("document")
@graph_options
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
@graph_options
def schema_apply(
    neo4j_uri: str | None, neo4j_username: str, neo4j_password: str | None, neo4j_database: str | None
) -> None:
    """Create the constraints and indexes if they do not exist (ingest does this by itself)."""
    with _open_graph(neo4j_uri, neo4j_username, neo4j_password, neo4j_database) as graph:
        count = graph.apply_schema()
    err.print(f"{count} schema statements applied", highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@graph_options
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
@graph_options
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


@cli.command("home")
def home() -> None:
    """Print where kg-etl keeps its state (KG_ETL_HOME)."""
    click.echo(str(kg_etl_home()))

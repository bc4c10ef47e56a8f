"""Commands about this machine and its parts: the local graph server, models, chunks, doctor, bench, home."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from kg_etl import defaults as d
from kg_etl.cli.app import EXIT_ERROR, add_row, chunk_options, cli, graph_options, out, say, table
from kg_etl.errors import KgEtlError

__all__ = ["bench", "chunks", "doctor", "graph", "home", "models"]

# The shapes kg_etl.testing can write (tests check the two lists agree): named here so that --help needs
# neither numpy nor gguf.
BENCH_PRESETS = ("tiny", "350m", "700m", "1.2b", "2.6b")


# -- the local graph server ---------------------------------------------------------------------------------


@cli.group()
def graph() -> None:
    """The local graph server (ArcadeDB over Bolt), used when NEO4J_URI is not set."""


@graph.command("start")
def graph_start() -> None:
    """Start the local graph server on free loopback ports (or report the running one).

    \b
    Example:
      kg-etl graph start
    """
    from kg_etl.graph.server import default_server

    info = default_server().start()
    click.echo(f"running: {info.uri} pid {info.pid} database {info.database} user {info.username}")


@graph.command("stop")
def graph_stop() -> None:
    """Stop the local graph server (by its recorded PID) and wait until its process is gone.

    \b
    Example:
      kg-etl graph stop
    """
    from kg_etl.graph.server import default_server

    stopped = default_server().stop()
    click.echo("stopped" if stopped else "not running")


@graph.command("status")
def graph_status() -> None:
    """Print the local graph server's URI, PID and database, or that it is not running (exit 3).

    \b
    Example:
      kg-etl graph status
    """
    from kg_etl.graph.server import default_server

    server = default_server()
    info = server.status()
    if info is None:
        click.echo(f"not running (home {server.root})")
        sys.exit(EXIT_ERROR)
    click.echo(f"running: {info.uri} pid {info.pid} database {info.database} user {info.username}")
    click.echo(f"password file: {server.password_path}")


# -- models ------------------------------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """The LFM2 GGUF models kg-etl knows (gguf/models.toml), and the presets built from them."""


@models.command("list")
def models_list() -> None:
    """Each known model: whether it is downloaded, its size, its sampling, and where it is or comes from.

    \b
    Example:
      kg-etl models list
    """
    from kg_etl.llm.registry import download_dir, find_model_file, load_manifest

    grid = table("name", "present", "size", "for", "sampling", "path or source")
    for name, spec in sorted(load_manifest().items()):
        path = find_model_file(spec)
        size = path.stat().st_size if path else spec.size
        add_row(
            grid,
            name + (" (default)" if name == d.DEFAULT_MODEL else ""),
            "yes" if path else "no",
            f"{size / 1e6:.0f} MB" if size else "?",
            spec.task,
            spec.sampling_label,
            str(path) if path else spec.url,
        )
    out().print(grid)
    say(f"downloads go to {download_dir()} (KG_ETL_MODELS_DIR changes it)")


@models.command("pull")
@click.argument("name")
def models_pull(name: str) -> None:
    """Download a model from the Hugging Face hub and verify its checksum.

    \b
    Example:
      kg-etl models pull lfm2-1.2b-q4_k_m
    """
    from kg_etl.errors import ModelNotFoundError
    from kg_etl.llm.registry import load_manifest, pull_model

    spec = load_manifest().get(name.lower())
    if spec is None:
        raise ModelNotFoundError(f"{name}: unknown model; see `kg-etl models list`")
    path = pull_model(spec)
    click.echo(f"{spec.name}: {path}")


@models.command("presets")
def models_presets() -> None:
    """The presets (--preset NAME): which model each extractor runs on, and the memory each needs.

    \b
    Example:
      kg-etl models presets
    """
    from kg_etl.llm.presets import PRESETS

    grid = table("preset", "for", "models", "memory")
    for preset in PRESETS.values():
        add_row(grid, preset.name, preset.description, preset.summary(), preset.memory)
    out().print(grid)


# -- chunks ---------------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("pdf", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--model",
    default=d.DEFAULT_MODEL,
    show_default=True,
    envvar="KG_ETL_MODEL",
    help="The model whose tokenizer counts the tokens, as ingest counts them [env KG_ETL_MODEL].",
)
@chunk_options
@click.option("--password", envvar="KG_ETL_PDF_PASSWORD", help="Password for an encrypted PDF.")
def chunks(
    pdf: Path, model: str, chunk_tokens: int, overlap_tokens: int, password: str | None, read_timeout: float
) -> None:
    """Print a PDF's chunks as JSON lines, exactly as ingest cuts them (page warnings on stderr).

    \b
    Example:
      kg-etl chunks report.pdf --model lfm2-1.2b-q4_k_m
    """
    from kg_etl.chunk import chunk_pages
    from kg_etl.llm.registry import resolve_model
    from kg_etl.llm.runtime import Tokenizer
    from kg_etl.models import PageStatus
    from kg_etl.read import open_pdf

    tokenizer = Tokenizer(resolve_model(model, download=False))
    try:
        doc = open_pdf(pdf, password=password, timeout_s=read_timeout)
        pages = (_warned(page, pdf, PageStatus.OK) for page in doc.pages())
        for chunk in chunk_pages(pages, doc.meta.id, max_tokens=chunk_tokens, overlap_tokens=overlap_tokens,
                                 count_tokens=tokenizer.count_tokens):  # fmt: skip
            click.echo(chunk.model_dump_json(exclude={"doc_id"}))
    finally:
        tokenizer.close()


def _warned(page: Any, pdf: Path, ok: Any) -> Any:
    if page.status != ok:
        say(f"{pdf} page {page.number}: {page.status.value} ({page.reason})")
    return page


# -- doctor, bench, home ----------------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--model",
    default=d.DEFAULT_MODEL,
    show_default=True,
    envvar="KG_ETL_MODEL",
    help="The model to check (name or .gguf path) [env KG_ETL_MODEL].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@graph_options
def doctor(model: str, as_json: bool, **graph: Any) -> None:
    """Check that this machine can ingest: llama.cpp build and CPU, model file, placement probe, graph, disk.

    Exit 0 when everything an ingest needs is in order; otherwise 3, with the first problem on stderr.

    \b
    Example:
      kg-etl doctor --model lfm2-1.2b-q4_k_m
    """
    from kg_etl.doctor import diagnose

    auth = (graph["neo4j_username"], graph["neo4j_password"])
    report = diagnose(model, graph["neo4j_uri"], auth, graph["neo4j_database"])
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "checks": [c.model_dump() for c in report.checks]}, default=str))
    else:
        grid = table("check", "found", "problem")
        for check in report.checks:
            add_row(grid, check.name, check.found, check.problem or "")
        out().print(grid)
    if not report.ok:
        say(f"problem: {report.problems[0]}")
        sys.exit(EXIT_ERROR)


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
@click.option(
    "--preset",
    default="1.2b",
    show_default=True,
    type=click.Choice(BENCH_PRESETS),
    help="Shape of the random-weight LFM2 model the LLM figures run on.",
)
def bench(out_dir: Path, quick: bool, preset: str) -> None:
    """Measure every figure against its baseline in one run (needs the bench extra: pip install 'kg-etl[bench]').

    On a GPU machine, install llama-cpp-python with CUDA first (README, "GPU"): the LLM figures then use
    full offload.

    \b
    Example:
      kg-etl bench --quick --out bench-out
    """
    missing = [name for name in ("gguf", "psutil", "matplotlib", "arcadedb_embedded") if not _importable(name)]
    if missing:
        raise KgEtlError(f"kg-etl bench needs {', '.join(missing)}: pip install 'kg-etl[bench]'")
    from kg_etl.bench import suite

    results = suite.run(out_dir, quick=quick, preset=preset, log=say)
    out().print(suite.markdown(results), markup=False)
    say(f"written: {out_dir}/results.json, results.md, results.png")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@cli.command("home")
def home() -> None:
    """Print where kg-etl keeps its state (KG_ETL_HOME).

    \b
    Example:
      kg-etl home
    """
    click.echo(str(d.kg_etl_home()))

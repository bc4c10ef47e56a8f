"""Commands that read or change what is in the graph: export, remove, schema, stats, query."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kg_etl import defaults as d
from kg_etl.cli.app import add_row, cli, graph_options, open_graph, out, say, table
from kg_etl.errors import KgEtlError

# The graph formats of `kg-etl export` (kg_etl.export_graph.GRAPH_FORMATS, here without importing it for --help).
GRAPH_FORMATS = ("graphml", "cypher", "json-graph")

__all__ = ["export", "query", "remove", "schema", "stats"]


@cli.command()
@click.argument("out_path", metavar="OUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--kind",
    type=click.Choice(d.EXPORT_KINDS),
    default="qa",
    show_default=True,
    help="What to export: QA pairs, atomic facts, topic paths, keywords, chunk and document summaries, or the "
    "nodes of your own schema (ingest --schema) with their relationships.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["plain", "chat", "alpaca", "sharegpt", *GRAPH_FORMATS]),
    default="plain",
    show_default=True,
    help="QA record shape: plain (kg_etl/data/qa_record.schema.json), chat (messages), alpaca "
    "(instruction/input/output) or sharegpt (conversations); the last three carry the citation as metadata. "
    "Or the whole graph, with no other option: graphml (Gephi, yEd, Cytoscape), cypher (statements that "
    "rebuild it in an empty Neo4j) or json-graph (Cytoscape.js JSON, which Cytoscape imports).",
)
@click.option(
    "--validated-only/--all",
    default=True,
    show_default=True,
    help="QA pairs the validation pass judged valid, or every pair (invalid and unvalidated ones too).",
)
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
@graph_options
def export(
    out_path: str,
    kind: str,
    fmt: str,
    validated_only: bool,
    min_score: float | None,
    documents: tuple[str, ...],
    keep_duplicates: bool,
    system_prompt: str | None,
    **graph: Any,
) -> None:
    """Write the validated QA pairs (or another extraction) as JSON lines, each citing its document and pages.

    "-" writes to stdout. Near-duplicate questions are removed unless --keep-duplicates; stderr says how many,
    and how many pairs were left out as not (yet) valid. The same graph always gives the same file. A file is
    written whole or not at all, and only a regular file is ever written or replaced. --format graphml,
    cypher or json-graph writes the whole graph instead, for Gephi, yEd, Cytoscape or a Neo4j import.

    \b
    Examples:
      kg-etl export qa.jsonl
      kg-etl export train.jsonl --format sharegpt --min-score 0.8
      kg-etl export - --kind facts --document report.pdf
      kg-etl export papers.jsonl --kind schema
      kg-etl export graph.graphml --format graphml
    """
    if fmt in GRAPH_FORMATS:
        _export_graph(out_path, fmt, graph)
        return
    from kg_etl.export import QAOptions, export_to

    options: dict[str, Any] = {"format": fmt, "validated_only": validated_only, "min_score": min_score}
    options |= {"dedup": not keep_duplicates} | ({} if system_prompt is None else {"system": system_prompt})
    qa = QAOptions.model_validate(options)
    with open_graph(**graph) as conn:
        # Other kinds take no QA options: passing the defaults would read as asking for them.
        chosen = qa if kind == "qa" or qa != QAOptions() else None
        report = export_to(conn, out_path, kind, documents, chosen, stdout=sys.stdout)
    say(f"{report.written} {kind} records written to {out_path}")
    if kind == "qa":
        left_out = "not valid (--all writes them)" if validated_only else "below --min-score"
        say(f"{report.duplicates_removed} near-duplicate questions removed, {report.filtered_out} pairs {left_out}")


def _export_graph(out_path: str, fmt: str, graph: dict[str, Any]) -> None:
    """The whole graph in a graph format: the options that choose records do not apply, so none may be given."""
    from kg_etl.export_graph import export_graph_to

    ctx = click.get_current_context()
    given = [flag for name, flag in _RECORD_OPTIONS.items() if ctx.get_parameter_source(name) in _GIVEN]
    if given:
        raise click.UsageError(f"--format {fmt} writes the whole graph: it takes no {', '.join(given)}")
    with open_graph(**graph) as conn:
        report = export_graph_to(conn, out_path, fmt, stdout=sys.stdout)
    say(f"{report.nodes} nodes and {report.edges} relationships written to {out_path} ({fmt})")


_GIVEN = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
_RECORD_OPTIONS = {"kind": "--kind", "validated_only": "--all", "min_score": "--min-score", "documents": "--document",
                   "keep_duplicates": "--keep-duplicates", "system_prompt": "--system"}  # fmt: skip


@cli.command()
@click.argument("document")
@graph_options
def remove(document: str, **graph: Any) -> None:
    """Remove a document (by id, path or file name) and everything only it holds.

    Entities, topics, keywords and categories that other documents still use are kept.

    \b
    Example:
      kg-etl remove report.pdf
    """
    from kg_etl.graph.writer import GraphWriter

    with open_graph(**graph) as conn:
        writer = GraphWriter(conn)
        found = writer.find_documents(document)
        if not found:
            raise KgEtlError(f"{document}: no such document in the graph; `kg-etl query --file documents` lists them")
        for row in found:
            writer.remove_document(row["id"])
            say(f"removed {row['path']} ({row['id'][:12]})")


@cli.group()
def schema() -> None:
    """The graph's constraints and indexes (cypher/schema.cypher)."""


@schema.command("apply")
@graph_options
def schema_apply(**graph: Any) -> None:
    """Create the constraints and indexes if they do not exist (ingest does this by itself).

    \b
    Example:
      kg-etl schema apply
    """
    with open_graph(**graph) as conn:
        count = conn.apply_schema()
    say(f"{count} schema statements applied")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@graph_options
def stats(as_json: bool, **graph: Any) -> None:
    """Node counts per label and relationship counts per type.

    \b
    Example:
      kg-etl stats --json
    """
    from kg_etl.graph import statements as st

    with open_graph(**graph) as conn:
        labels = {r["label"]: r["count"] for r in conn.read_rows(st.COUNT_LABELS)}
        rels = {r["type"]: r["count"] for r in conn.read_rows(st.COUNT_RELATIONSHIPS)}
    if as_json:
        click.echo(json.dumps({"labels": labels, "relationships": rels}, sort_keys=True))
        return
    _print_table(["label", "nodes"], sorted(labels.items()))
    _print_table(["relationship", "count"], sorted(rels.items()))


@cli.command()
@click.argument("cypher", required=False)
@click.option(
    "--file",
    "-f",
    "query_file",
    metavar="FILE|NAME",
    help="Run the query in FILE, or an installed Browser query by name (see --list).",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A query parameter, typed as in Neo4j Browser's :param: 3, 0.5, true, null, 'text', [1, 2], "
    '{"k": 1}; anything else is a string. Repeatable.',
)
@click.option("--list", "list_queries", is_flag=True, help="List the installed Browser queries and their parameters.")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    envvar="KG_ETL_QUERY_TIMEOUT",
    help="Seconds a query may run; then it is stopped on the server too [env KG_ETL_QUERY_TIMEOUT].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@graph_options
def query(
    cypher: str | None,
    query_file: str | None,
    params: tuple[str, ...],
    list_queries: bool,
    timeout: float,
    as_json: bool,
    **graph: Any,
) -> None:
    """Run a read-only Cypher query: one that reads the graph and changes nothing.

    The server enforces it: on the local graph server the query runs as a user who may only read, with
    LOAD CSV's file and URL access off; on Neo4j in a READ transaction, with no LOAD CSV and only read-only
    procedures. Ctrl-C or --timeout stops it on the server, not only here.

    \b
    Examples:
      kg-etl query "MATCH (d:Document) RETURN d.name, d.status"
      kg-etl query --file entity_facts --param entity='World Health Organization'
      kg-etl query --file my_query.cypher -p document=report.pdf -p page=3
      kg-etl query --list
    """
    from kg_etl.graph.queries import installed_queries, load_query, parse_param

    if list_queries:
        grid = table("name", "parameters", "answers")
        for q in installed_queries():
            add_row(grid, q.name, ", ".join(q.parameters), q.summary)
        out().print(grid)
        return
    if (cypher is None) == (query_file is None):
        raise click.UsageError("give a Cypher query or --file FILE|NAME (not both)")
    values = dict(parse_param(p) for p in params)
    if query_file is not None:
        browser_query = load_query(query_file)
        missing = [name for name in browser_query.parameters if name not in values]
        if missing:
            examples = " ".join(f"-p {name}={browser_query.parameters[name]}" for name in missing)
            raise click.UsageError(f"{browser_query.name} needs {', '.join(missing)}; e.g. {examples}")
    text = cypher if cypher is not None else browser_query.text
    with open_graph(**graph, read_only=True) as conn:
        rows = conn.read_query(text, values, timeout=timeout)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str, ensure_ascii=False))
        return
    columns = list(rows[0]) if rows else []
    _print_table(columns, [[row[c] for c in columns] for row in rows])


def _print_table(columns: list[str], rows: Any) -> None:
    grid = table(*columns)
    for row in rows:
        add_row(grid, *(str(v) for v in row))
    out().print(grid)

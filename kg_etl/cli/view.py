"""`kg-etl view`: a neighbourhood of the graph as one HTML page, and opening it in a browser."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from kg_etl import defaults as d
from kg_etl.cli.app import cli, graph_options, open_graph, say

__all__ = ["open_in_browser", "view"]


@cli.command()
@click.option("--document", metavar="NAME", help="Start at a document: its id, path or file name.")
@click.option("--entity", metavar="NAME", help="Start at an entity: its name or an alias, in any case.")
@click.option("--topic", metavar="PATH", help="Start at a topic: its path ('Science > Biology') or its name.")
@click.option(
    "--depth",
    type=click.IntRange(0, 5),
    default=d.VIEW_DEPTH,
    show_default=True,
    help="Hops from the start nodes. A hop passes through chunks: one hop from a document reaches what its "
    "chunks hold.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=d.VIEW_LIMIT,
    show_default=True,
    help="The most nodes on the page (a browser lays out ~2,000 in seconds).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=d.VIEW_OUTPUT,
    show_default=True,
    help="The HTML file to write; an existing regular file is replaced, nothing else is.",
)
@click.option("--open", "open_page", is_flag=True, help="Open the page in the web browser.")
@graph_options
def view(
    document: str | None,
    entity: str | None,
    topic: str | None,
    depth: int,
    limit: int,
    output: Path,
    open_page: bool,
    **graph: Any,
) -> None:
    """Write the graph, or a neighbourhood of it, as one HTML page to look at in a browser.

    The page needs no server and no network: documents (their chunks collapsed into them until you show
    them), entities with their relations' predicates, topics as a tree, categories, keywords, questions and
    summaries. Click a node for its properties and citations: the document, pages and chunk text with the
    cited words highlighted. Without --document, --entity or --topic it starts at every document.

    \b
    Examples:
      kg-etl view --open
      kg-etl view --document report.pdf -o report.html
      kg-etl view --entity 'World Health Organization' --depth 2
      kg-etl view --topic 'Science > Biology' --limit 300
    """
    chosen = [name for name, value in (("--document", document), ("--entity", entity), ("--topic", topic)) if value]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one of --document, --entity and --topic, not {' and '.join(chosen)}")
    from kg_etl.export import check_target
    from kg_etl.view import Selection, select_view, write_html

    check_target(output, "")  # before reading the graph: a page that cannot be written is not worth building
    selection = Selection(document=document, entity=entity, topic=topic, depth=depth, limit=limit)
    with open_graph(**graph) as conn:
        page = select_view(conn, selection)
    write_html(page, output)
    say(f"{len(page.nodes)} nodes and {len(page.edges)} relationships written to {output}")
    if page.truncated:
        say(f"the limit of {limit} nodes was reached: more is within reach (raise --limit, or choose a start)")
    if open_page:
        open_in_browser(output)


def open_in_browser(path: Path) -> bool:
    """Open ``path`` in the user's browser; where none can be started (no display), say where the file is.

    On Linux with no display and no $BROWSER, Python's webbrowser would fall back to a text browser in this
    terminal, which cannot run the page: say where the page is instead.
    """
    import webbrowser

    url = path.resolve().as_uri()
    headless = sys.platform.startswith("linux") and not any(
        os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")
    )
    if headless:
        say(f"no display to open a browser on here: open {url} in a browser (or copy {path} to a machine with one)")
        return False
    try:
        opened = webbrowser.open(url)
    except (webbrowser.Error, OSError):
        opened = False
    if not opened:
        say(f"could not start a web browser: open {url} in one")
    return opened

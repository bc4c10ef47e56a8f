"""`kg-etl view` in a real browser: headless Chromium loads the page of a real ingest and is clicked like a user.

One ingest for the module: a PDF (with a line that tries to break out of the page's <script>) read, chunked and
extracted by the tiny model through `kg-etl ingest` into the real Bolt server, plus a document whose
extractions are known (tests/viewgraph.py: the tiny model's quotes are random, so a highlight needs known
ones). The pages are written by `kg-etl view`; the counts they show are checked against the graph, read
independently in Cypher. One Chromium for the module (tests/chromium.py: the DevTools protocol over a pipe).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import neo4j
import pytest
from click.testing import CliRunner
from PIL import Image
from pydantic import SecretStr

from kg_etl.cli import cli
from kg_etl.graph.connection import Graph, GraphSettings
from kg_etl.samples import make_pdf
from tests.chromium import Chromium, Page
from tests.conftest import GraphConn, reset_database
from tests.viewgraph import EVIDENCE, QUESTION, write_known_corpus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = [
    ["Photosynthesis converts light energy into chemical energy.", "Chlorophyll absorbs red and blue light.",
     "</script><script>window.__pwned = 1</script><!-- a line no page may run"],
    ["The Calvin cycle fixes carbon dioxide into sugars.", "It runs in the stroma of the chloroplast."],
]  # fmt: skip


@dataclass(frozen=True)
class Ingested:
    folder: Path
    nodes: int
    edges: int
    chunks: int
    question_key: str
    document_key: str


@pytest.fixture(scope="module")
def ingested(
    graph_server: GraphConn, graph_driver: neo4j.Driver, tiny_model_path: Path, placement_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Ingested:  # fmt: skip
    reset_database(graph_server)
    folder = tmp_path_factory.mktemp("view-browser")
    (folder / "pdfs").mkdir()
    make_pdf(folder / "pdfs" / "biology.pdf", PAGES, title="Energy in cells")
    env = {"KG_ETL_HOME": str(folder / "home"), "KG_ETL_THREADS": "1", "KG_ETL_PLACEMENT_CACHE": str(placement_cache),
           "NEO4J_URI": graph_server.uri, "NEO4J_USERNAME": graph_server.username,
           "NEO4J_PASSWORD": graph_server.password, "NEO4J_DATABASE": graph_server.database}  # fmt: skip
    runner = CliRunner(env=env)
    ingest = ["ingest", str(folder / "pdfs"), "--model", str(tiny_model_path), "--deterministic", "--quiet",
              "--chunk-tokens", "128", "--overlap-tokens", "16"]  # fmt: skip
    result = runner.invoke(cli, ingest, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    settings = GraphSettings(uri=graph_server.uri, username=graph_server.username,
                             password=SecretStr(graph_server.password), database=graph_server.database)  # fmt: skip
    with Graph(settings) as conn:
        write_known_corpus(conn)
    for args in (["view", "--limit", "10000", "-o", str(folder / "all.html")],
                 ["export", str(folder / "graph.json"), "--format", "json-graph"]):  # fmt: skip
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return Ingested(folder, *_counts(graph_driver), question_key=_key(graph_driver, "Question", QUESTION),
                    document_key=_key(graph_driver, "Document", "biology.pdf"))  # fmt: skip


def _counts(driver: neo4j.Driver) -> tuple[int, int, int]:
    nodes, _, _ = driver.execute_query("MATCH (n) RETURN count(n) AS n")
    edges, _, _ = driver.execute_query("MATCH ()-[r]->() RETURN count(r) AS n")
    chunks, _, _ = driver.execute_query("MATCH (c:Chunk) RETURN count(c) AS n")
    return nodes[0]["n"], edges[0]["n"], chunks[0]["n"]


def _key(driver: neo4j.Driver, label: str, name: str) -> str:
    records, _, _ = driver.execute_query(
        f"MATCH (n:{label}) WHERE n.question = $name OR n.name = $name RETURN n.id AS id", {"name": name}
    )
    return f"{label}:{records[0]['id']}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium(width=1280, height=800) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page(browser: Chromium, ingested: Ingested) -> Page:
    tab = browser.page()
    tab.goto((ingested.folder / "all.html").as_uri())
    tab.wait_for("window.kgView && window.kgView.ready", timeout=120)
    return tab


def _click_on(page: Page, selector: str) -> None:
    box = page.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                        " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()")  # fmt: skip
    page.click(box["x"], box["y"])


def _click_node(page: Page, key: str) -> None:
    """Click a node as a user would after zooming in on it: no other node or the legend lies over it then."""
    page.evaluate(f"(() => {{ const cy = kgView.cy, node = cy.getElementById({json.dumps(key)});"
                  " cy.zoom(2.5); cy.center(node); })()")  # fmt: skip
    at = page.evaluate(f"kgView.at({json.dumps(key)})")
    page.click(at["x"], at["y"])


def test_the_page_holds_every_node_and_relationship_of_the_graph(page: Page, ingested: Ingested) -> None:
    assert ingested.chunks >= 3 and ingested.nodes > 30
    counts = page.evaluate("({nodes: kgView.nodes, edges: kgView.edges, body: {...document.body.dataset}})")
    assert (counts["nodes"], counts["edges"]) == (ingested.nodes, ingested.edges)
    assert (counts["body"]["nodes"], counts["body"]["edges"]) == (str(ingested.nodes), str(ingested.edges))
    shown = page.evaluate("kgView.shown()")
    assert shown["nodes"] == ingested.nodes - ingested.chunks, "chunks start collapsed into their documents"
    _click_on(page, "#chunks")
    assert page.evaluate("kgView.shown()") == {"nodes": ingested.nodes, "edges": ingested.edges}
    _click_on(page, "#chunks")
    assert page.evaluate("kgView.shown()")["nodes"] == ingested.nodes - ingested.chunks
    legend = page.evaluate("[...document.querySelectorAll('#legend div')].map(d => d.innerText.split('\\n'))")
    assert sum(int(count) for _, count in legend) == ingested.nodes
    assert page.evaluate("window.__pwned === undefined"), "text from the PDF ran as a script"
    assert page.errors() == []


def test_clicking_a_node_shows_its_properties_and_its_citation_highlighted(page: Page, ingested: Ingested) -> None:
    _click_node(page, ingested.question_key)
    assert page.evaluate("document.getElementById('panel').dataset.key") == ingested.question_key
    panel = page.evaluate("document.getElementById('panel').innerText")
    assert QUESTION in panel and "cells.pdf, p. 1, chunk 0" in panel
    assert "verdict\tvalid" in panel and "evidence\t" + EVIDENCE in panel
    marks = page.evaluate("[...document.querySelectorAll('#panel mark')].map(m => m.textContent)")
    assert marks == ["ATP stores   energy in cells."]

    _click_node(page, ingested.document_key)
    panel = page.evaluate("document.getElementById('panel').innerText")
    assert "Energy in cells" in panel and "name\tbiology.pdf" in panel and "status\tdone" in panel
    assert page.errors() == []


def test_search_finds_a_node_and_shows_it(page: Page) -> None:
    _click_on(page, "#search")
    page.type_text("calvin cycle")
    assert page.evaluate("document.getElementById('matches').textContent").endswith("matches")
    page.press_enter()
    [selected] = page.evaluate("kgView.selected()")
    assert page.evaluate("document.getElementById('panel').dataset.key") == selected
    assert "calvin cycle" in page.evaluate("document.querySelector('#panel h2').textContent").lower()
    assert page.errors() == []


def test_a_screenshot_of_the_page_is_not_blank(page: Page, ingested: Ingested) -> None:
    search = "document.getElementById('search')"
    page.evaluate(f"{search}.value = ''; {search}.dispatchEvent(new Event('input')); kgView.cy.fit(undefined, 30); 0")
    shot = page.screenshot(ingested.folder / "view.png")
    with Image.open(shot) as image:
        size = image.size
        counted = image.convert("RGB").getcolors(maxcolors=1 << 24) or []
    colours = {colour: count for count, colour in counted}
    drawn = 1 - colours.get((255, 255, 255), 0) / (size[0] * size[1])
    assert len(colours) > 100 and drawn > 0.05, (len(colours), drawn)
    node_colours = {(0x4E, 0x79, 0xA7), (0x59, 0xA1, 0x4F), (0xF2, 0x8E, 0x2B)}  # documents, topics, facts
    assert node_colours <= colours.keys()


def test_cytoscape_reads_the_json_graph_export(page: Page, ingested: Ingested) -> None:
    exported = (ingested.folder / "graph.json").read_text(encoding="utf-8")
    loaded = page.evaluate(f"(() => {{ const g = cytoscape({{headless: true, elements: ({exported}).elements}});"
                           " return {nodes: g.nodes().length, edges: g.edges().length}; })()")  # fmt: skip
    assert loaded == {"nodes": ingested.nodes, "edges": ingested.edges}

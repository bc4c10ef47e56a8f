"""`kg-etl view` without a browser: the walk, the citations, the page's safety, the vendored libraries, the CLI.

The graph is written by the real GraphWriter into the real Bolt server (tests/viewgraph.py); what the walk
should choose is computed here independently, in Cypher. The page in a real browser: tests/test_view_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import neo4j
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.cli.app import EXIT_ERROR
from kg_etl.errors import ConfigError, KgEtlError
from kg_etl.graph.connection import Graph
from kg_etl.view import GraphView, Selection, render_html, select_view
from kg_etl.view.cite import find_spans, utf16_offsets
from kg_etl.view.render import ASSETS, VENDORED, script_json
from tests.conftest import GraphConn
from tests.viewgraph import EVIDENCE, HOSTILE, QUESTION, KnownCorpus, write_known_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus(kg: Graph) -> KnownCorpus:
    return write_known_corpus(kg)


def _nodes(view: GraphView) -> set[tuple[str, str]]:
    return {(n.kind, n.id) for n in view.nodes}


def _edges(view: GraphView) -> list[tuple[str, str, str]]:
    return sorted((e.source, e.type, e.target) for e in view.edges)


def _cypher_edges(driver: neo4j.Driver, nodes: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Every relationship between two of ``nodes``, as the view keys them, read independently of the view."""
    records, _, _ = driver.execute_query(
        "MATCH (a)-[r]->(b) RETURN labels(a)[0] AS la, a.id AS a, type(r) AS t, labels(b)[0] AS lb, b.id AS b"
    )
    return sorted((f"{r['la']}:{r['a']}", r["t"], f"{r['lb']}:{r['b']}") for r in records
                  if (r["la"], r["a"]) in nodes and (r["lb"], r["b"]) in nodes)  # fmt: skip


def _ids(driver: neo4j.Driver, query: str, **params: Any) -> set[tuple[str, str]]:
    records, _, _ = driver.execute_query(query, params)
    return {(r["label"], r["id"]) for r in records}


# ---------------------------------------------------------------- the walk


def test_the_whole_graph_is_every_node_and_every_relationship(
    kg: Graph, corpus: KnownCorpus, graph: neo4j.Driver
) -> None:
    view = select_view(kg, Selection())
    everything = _ids(graph, "MATCH (n) RETURN labels(n)[0] AS label, n.id AS id")
    assert _nodes(view) == everything and len(everything) > 20
    assert _edges(view) == _cypher_edges(graph, everything)
    assert not view.truncated
    assert view.nodes[0].kind == "Document", "documents first"


def test_one_hop_from_a_document_is_what_its_chunks_hold(kg: Graph, corpus: KnownCorpus, graph: neo4j.Driver) -> None:
    expected = _ids(
        graph,
        """
        MATCH (d:Document {name: $name})-[:HAS_CHUNK]->(c:Chunk)
        OPTIONAL MATCH (c)-[r]-(x) WHERE type(r) <> 'NEXT_CHUNK'
        OPTIONAL MATCH (d)--(y) WHERE NOT y:Chunk
        WITH collect(DISTINCT d) + collect(DISTINCT c) + collect(DISTINCT x) + collect(DISTINCT y) AS ns
        UNWIND ns AS n
        RETURN DISTINCT labels(n)[0] AS label, n.id AS id
        """,
        name="cells.pdf",
    )
    view = select_view(kg, Selection(document="cells.pdf"))
    assert _nodes(view) == expected
    assert ("Document", corpus.minutes.id) not in expected, "the other document is two hops away"
    assert _edges(view) == _cypher_edges(graph, expected)
    assert ("Entity", _entity_id(graph, "agenda")) not in _nodes(view)

    further = select_view(kg, Selection(document="/docs/cells.pdf", depth=2))
    assert ("Document", corpus.minutes.id) in _nodes(further), "through the entity ATP, which both mention"
    assert _nodes(select_view(kg, Selection(document=corpus.cells.id, depth=0))) == {("Document", corpus.cells.id)}


def _entity_id(driver: neo4j.Driver, name: str) -> str:
    records, _, _ = driver.execute_query("MATCH (e:Entity {name: $name}) RETURN e.id AS id", {"name": name})
    return str(records[0]["id"])


def test_an_entity_reaches_its_facts_relations_and_the_documents_that_mention_it(
    kg: Graph, corpus: KnownCorpus, graph: neo4j.Driver
) -> None:
    view = select_view(kg, Selection(entity="atp"))  # any case
    names = {(n.kind, n.name) for n in view.nodes}
    assert {("Fact", "ATP stores energy in cells."), ("Fact", "Mitochondria make ATP."),
            ("Fact", "ATP is on the agenda.")} <= names  # fmt: skip
    assert {("Entity", "energy"), ("Entity", "Mitochondria"), ("Entity", "agenda")} <= names
    assert {("Document", "Energy in cells"), ("Document", "Minutes")} <= names
    related = [e for e in view.edges if e.type == "RELATED"]
    assert {e.props["predicate"] for e in related} >= {"stores", "make", "is on"}
    assert ("Chunk", corpus.chunks["c1"].id) not in _nodes(view), "the Calvin cycle chunk does not mention ATP"


def test_a_topic_comes_with_its_broader_topics_as_a_tree(kg: Graph, corpus: KnownCorpus) -> None:
    view = select_view(kg, Selection(topic="Biology > Cells > Energy", depth=0))
    assert {n.name for n in view.nodes} == {"Energy", "Cells", "Biology"}
    assert sorted((e.source.split(":")[0], e.type) for e in view.edges) == [("Topic", "SUBTOPIC_OF")] * 2
    by_name = select_view(kg, Selection(topic="energy"))
    assert {n.name for n in by_name.nodes} >= {"Energy", "Cells", "Biology", "Energy in cells"}


def test_the_limit_keeps_kinds_in_order_and_says_there_is_more(kg: Graph, corpus: KnownCorpus) -> None:
    view = select_view(kg, Selection(limit=4))
    assert view.truncated and len(view.nodes) <= 4
    assert [n.kind for n in view.nodes][:2] == ["Document", "Document"]
    full = select_view(kg, Selection(limit=10_000))
    assert not full.truncated and len(full.nodes) > 20


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(document="nope.pdf"), "--document nope.pdf: no such document in the graph; `kg-etl query --file"),
        (Selection(entity="Nobody"), "--entity Nobody: no such entity in the graph; list them with: kg-etl query"),
        (Selection(topic="Nothing > Here"), "--topic Nothing > Here: no such topic in the graph; list them with"),
    ],
)
def test_an_unknown_start_names_itself_and_how_to_list_the_known_ones(
    kg: Graph, corpus: KnownCorpus, selection: Selection, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        select_view(kg, selection)


def test_an_empty_graph_says_so(kg: Graph) -> None:
    with pytest.raises(KgEtlError, match="the graph holds no documents yet"):
        select_view(kg, Selection())


def test_one_selector_at_a_time() -> None:
    with pytest.raises(ConfigError, match="choose one of --document, --entity and --topic"):
        Selection(document="a.pdf", entity="ATP")


# ---------------------------------------------------------------- citations


def _utf16_slice(text: str, span: tuple[int, int]) -> str:
    """What JavaScript's text.slice(start, end) gives for UTF-16 offsets."""
    units = text.encode("utf-16-le")
    return units[2 * span[0] : 2 * span[1]].decode("utf-16-le")


def test_a_question_cites_its_chunk_with_the_evidence_highlighted_as_javascript_counts(
    kg: Graph, corpus: KnownCorpus
) -> None:
    view = select_view(kg, Selection(document="cells.pdf"))
    question = next(n for n in view.nodes if n.kind == "Question" and n.name == QUESTION)
    [citation] = view.citations[question.key]
    text = view.texts[citation.chunk]
    assert (text.doc_name, text.page_start, text.index) == ("cells.pdf", 1, 0)
    assert [_utf16_slice(text.text, span) for span in citation.spans] == ["ATP stores   energy in cells."]
    assert EVIDENCE.rstrip(".") in " ".join(text.text.split())

    entity = next(n for n in view.nodes if n.kind == "Entity" and n.name == "ATP")
    cited = {c.chunk: c for c in view.citations[entity.key]}
    assert {_utf16_slice(view.texts[c].text, s) for c, cit in cited.items() for s in cit.spans} == {"ATP"}
    assert len(cited[corpus.chunks["c0"].id].spans) == 3, "every ATP in the chunk, none inside another word"


def test_find_spans_prefers_the_whole_statement_and_respects_words() -> None:
    text = "Ada Lovelace wrote the first program. Lovelace's notes, and adaptation."
    fact = {"text": "Ada Lovelace wrote the first program.", "subject": "Ada Lovelace", "object": "program"}
    assert find_spans(text, "Fact", fact) == [(0, 37)]
    loose = fact | {"text": "Lovelace was first."}
    assert [text[a:b] for a, b in find_spans(text, "Fact", loose)] == ["Ada Lovelace", "program"]
    assert [text[a:b] for a, b in find_spans(text, "Keyword", {"name": "ada"})] == ["Ada"], "not in 'adaptation'"
    assert find_spans(text, "Category", {"name": "Science"}) == []
    assert utf16_offsets("🔋 ab", [(2, 4)]) == [(3, 5)]


# ---------------------------------------------------------------- the page


class _Scripts(HTMLParser):
    """The page's elements as a browser's parser sees them: scripts (attributes, text) and links to elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.links: list[str] = []
        self.csp = ""
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.links += [f"{tag} {k}" for k in ("src", "href") if k in found]
        if tag == "meta" and found.get("http-equiv") == "Content-Security-Policy":
            self.csp = found.get("content") or ""
        if tag == "script":
            self._open = found
            self.scripts.append((found, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def test_text_from_a_pdf_stays_data_in_the_page(kg: Graph, corpus: KnownCorpus) -> None:
    view = select_view(kg, Selection())
    assert any(t.text == HOSTILE for t in view.texts.values())
    page = render_html(view)
    parsed = _Scripts()
    parsed.feed(page)
    assert len(parsed.scripts) == len(VENDORED) + 2, "the libraries, the page's script, the data: no more"
    [data] = [text for attrs, text in parsed.scripts if attrs.get("type") == "application/json"]
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data) == view.model_dump(mode="json"), "JSON.parse reads back exactly the view"
    assert parsed.links == [], "nothing is loaded from elsewhere"
    # Only the page's own scripts may run, by their hashes, and nothing may be fetched.
    ran = [text for attrs, text in parsed.scripts if "type" not in attrs]
    hashes = {base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in ran}
    assert set(re.findall(r"'sha256-([^']+)'", parsed.csp)) == hashes
    assert "default-src 'none'" in parsed.csp and "unsafe-inline" not in parsed.csp.split("style-src")[0]


def test_script_json_escapes_what_could_end_the_element() -> None:
    hostile = {"t": "</script><!--<script>\u2028&amp;", "</SCRIPT>": ["<!-- -->"]}
    text = script_json(hostile)
    assert not re.search(r"[<>&\u2028\u2029]", text)
    assert json.loads(text) == hostile


def test_the_vendored_libraries_are_the_npm_files_of_the_pinned_versions() -> None:
    pins = json.loads((ROOT / "package.json").read_text())["dependencies"]
    for lib in VENDORED:
        version = pins[lib.package]
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{lib.package}: pin an exact version, not {version}"
        installed = ROOT / "node_modules" / lib.package
        assert json.loads((installed / "package.json").read_text())["version"] == version, "run npm ci"
        vendored = ASSETS / "vendor" / lib.file
        assert vendored.read_bytes() == (installed / lib.dist_path).read_bytes(), (
            f"{lib.file} differs from {lib.package} {version}: copy {installed / lib.dist_path} over it"
        )
        licence = ASSETS / "vendor" / f"{lib.package}.LICENSE"
        assert licence.read_bytes() == (installed / "LICENSE").read_bytes()
        assert "</script" not in lib.text().lower() and "<!--" not in lib.text()


def test_the_wheel_carries_every_file_of_the_page() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["kg_etl"]
    package = ROOT / "kg_etl"
    shipped = {p for pattern in data for p in package.glob(pattern)}
    needed = {p for p in (package / "view").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert needed and needed <= shipped, sorted(str(p) for p in needed - shipped)


# ---------------------------------------------------------------- the command


def test_cli_view_writes_the_page_and_says_where(graph_env: GraphConn, corpus: KnownCorpus, tmp_path: Path) -> None:
    out = tmp_path / "cells.html"
    result = CliRunner().invoke(cli, ["view", "--document", "cells.pdf", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"written to {out}" in result.stderr and out.read_text(encoding="utf-8").startswith("<!doctype html>")
    again = CliRunner().invoke(cli, ["view", "--limit", "3", "-o", str(out)])
    assert again.exit_code == 0 and "the limit of 3 nodes was reached" in again.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--entity", "Nobody"], EXIT_ERROR, "--entity Nobody: no such entity in the graph; list them with"),
        (["--document", "a.pdf", "--topic", "B"], 2, "choose one of --document, --entity and --topic"),
        (["--depth", "9"], 2, "--depth"),
    ],
)
def test_cli_view_bad_input_is_one_line(
    graph_env: GraphConn, corpus: KnownCorpus, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = CliRunner().invoke(cli, ["view", *args, "-o", str(tmp_path / "g.html")])
    assert result.exit_code == code and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "g.html").exists()


def test_cli_view_of_an_empty_graph_says_so(graph_env: GraphConn, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["view", "-o", str(tmp_path / "g.html")])
    assert result.exit_code == EXIT_ERROR and "the graph holds no documents yet" in result.stderr


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [("fifo", EXIT_ERROR, "not a regular file; kg-etl writes regular files only"), ("folder", 2, "is a directory"),
     ("link", EXIT_ERROR, "a symbolic link; kg-etl writes regular files only")],
)  # fmt: skip
def test_cli_view_writes_only_regular_files(
    graph_env: GraphConn, corpus: KnownCorpus, tmp_path: Path, kind: str, code: int, message: str
) -> None:
    target = tmp_path / "g.html"
    if kind == "fifo":
        os.mkfifo(target)  # opening it would block: it is never opened
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(tmp_path / "elsewhere.html")
    result = CliRunner().invoke(cli, ["view", "-o", str(target)])
    assert result.exit_code == code and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "elsewhere.html").exists()
    assert kind != "fifo" or stat.S_ISFIFO(target.lstat().st_mode)


def test_open_without_a_display_says_where_the_page_is(
    graph_env: GraphConn, corpus: KnownCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    out = tmp_path / "g.html"
    result = CliRunner().invoke(cli, ["view", "--open", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"open {out.resolve().as_uri()} in a browser" in result.stderr


def test_open_starts_the_users_browser_on_the_page(
    graph_env: GraphConn, corpus: KnownCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {seen}\n')
    browser.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(browser))
    out = tmp_path / "g.html"
    result = CliRunner().invoke(cli, ["view", "--open", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert seen.read_text() == out.resolve().as_uri()


def test_without_chromium_the_browser_tests_fail_saying_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import chromium

    monkeypatch.setattr(chromium, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(chromium.ChromiumError, match=r"`\.ci/run` installs it"):
        chromium.chromium_path()

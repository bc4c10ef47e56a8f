"""`kg-etl export --format graphml|cypher|json-graph`: the whole graph for Gephi, yEd, Cytoscape or Neo4j.

GraphML is parsed back with xml.etree; the Cypher file is checked by Neo4j's own Cypher front-end and run into
an empty database on the real Bolt server, which must then hold the same nodes and relationships; the
Cytoscape.js JSON is checked for the shape Cytoscape reads (and loaded by cytoscape.js in the browser tests).
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import neo4j
import pytest
from click.testing import CliRunner

from kg_etl.cli import cli
from kg_etl.cli.app import EXIT_ERROR
from kg_etl.export_graph import GRAPH_FORMATS, cypher_literal, cypher_name, export_graph
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph, split_cypher
from tests.conftest import GraphConn, reset_database
from tests.cypherlint import CypherStatement, lint_statements
from tests.test_cypher import SCHEMA
from tests.viewgraph import HOSTILE, KnownCorpus, write_known_corpus

NS = {"g": "http://graphml.graphdrawing.org/xmlns"}
# Strings that break naive quoting, comments, statement splitting, line handling or encodings.
HOSTILE_STRINGS = [
    "it's", 'say "hi"', "back\\slash", "\\'", "ends with \\", "a;b", "x // not a comment", "/* nor this */",
    "line\nbreak\r\n", "tab\there", "\u2028\u2029\x85", "nul\x00byte", "esc\x1b[31m", "`backtick`", "{$param}",
    "'); MATCH (n) DETACH DELETE n; //", "emoji 🔋 and ünïcode", "",
]  # fmt: skip


@pytest.fixture
def corpus(kg: Graph) -> KnownCorpus:
    return write_known_corpus(kg)


def _counts(driver: neo4j.Driver) -> tuple[Counter[str], Counter[str]]:
    labels, _, _ = driver.execute_query("MATCH (n) RETURN labels(n)[0] AS label, count(*) AS n")
    types, _, _ = driver.execute_query("MATCH ()-[r]->() RETURN type(r) AS type, count(*) AS n")
    return Counter({r["label"]: r["n"] for r in labels}), Counter({r["type"]: r["n"] for r in types})


def _export(kg: Graph, fmt: str) -> tuple[str, Any]:
    out = io.StringIO()
    report = export_graph(kg, out, fmt)
    return out.getvalue(), report


# ---------------------------------------------------------------- GraphML


def test_graphml_is_valid_typed_and_holds_the_whole_graph(kg: Graph, corpus: KnownCorpus, graph: neo4j.Driver) -> None:
    text, report = _export(kg, "graphml")
    root = ET.fromstring(text)
    keys = {k.get("id"): k for k in root.findall("g:key", NS)}
    assert all(k.get("attr.type") in {"boolean", "int", "long", "float", "double", "string"} for k in keys.values())
    assert keys["n_n_pages"].get("attr.type") == "long" and keys["n_score"].get("attr.type") == "double"
    assert keys["e_share"].get("attr.type") == "double" and keys["n_labels"].get("for") == "node"
    nodes = root.findall("g:graph/g:node", NS)
    edges = root.findall("g:graph/g:edge", NS)
    used = {d.get("key") for element in nodes + edges for d in element.findall("g:data", NS)}
    assert used <= set(keys), "every data element has its key declared"
    ids = {n.get("id") for n in nodes}
    assert len(ids) == len(nodes) and all(e.get("source") in ids and e.get("target") in ids for e in edges)

    labels, types = _counts(graph)
    assert Counter(_data(n, "n_labels").lstrip(":") for n in nodes) == labels == Counter(report.labels)
    assert Counter(_data(e, "e_label") for e in edges) == types == Counter(report.relationships)
    chunk = next(n for n in nodes if _data(n, "n_id") == corpus.chunks["m0"].id)
    assert _data(chunk, "n_text") == HOSTILE, "the hostile chunk survives XML whole"
    entity = next(n for n in nodes if _data(n, "n_label") == "ATP" and _data(n, "n_labels") == ":Entity")
    assert json.loads(_data(entity, "n_aliases")) == ["ATP"], "lists are written as JSON"


def _data(element: ET.Element, key: str) -> str:
    found = element.find(f"g:data[@key='{key}']", NS)
    assert found is not None, key
    return found.text or ""


def test_graphml_replaces_only_characters_xml_cannot_hold(kg: Graph, graph: neo4j.Driver) -> None:
    graph.execute_query("CREATE (:Keyword {id: 'k1', name: $name})", {"name": "a\x00b\x1bc\td <&> 🔋"})
    text, _ = _export(kg, "graphml")
    node = ET.fromstring(text).find("g:graph/g:node", NS)
    assert node is not None and _data(node, "n_name") == "a\ufffdb\ufffdc\td <&> 🔋"


# ---------------------------------------------------------------- Cypher


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_a_cypher_literal_reads_back_as_the_same_string(graph: neo4j.Driver, value: str) -> None:
    records, _, _ = graph.execute_query(f"RETURN {cypher_literal(value)} AS v, {cypher_literal([value, 1.5e-7])} AS l")
    assert records[0]["v"] == value and records[0]["l"] == [value, 1.5e-7]


def test_cypher_literals_of_every_kind(graph: neo4j.Driver) -> None:
    values = {"i": -3, "f": 2.5, "big": 1e300, "small": -1.5e-300, "t": True, "n": None, "s": "x", "l": [1, 2],
              "odd key`": "v"}  # fmt: skip
    records, _, _ = graph.execute_query(f"RETURN {cypher_literal(values)} AS m")
    assert records[0]["m"] == {k: v for k, v in values.items() if v is not None}, "a null property is no property"
    assert cypher_name("a`b") == "`a``b`" and cypher_literal(float("nan")) == "toFloat('NaN')"
    statements = [CypherStatement(f"literal-{i}", f"RETURN {cypher_literal(v)} AS v") for i, v in
                  enumerate([*HOSTILE_STRINGS, values])]  # fmt: skip
    assert lint_statements(statements) == {s.name: [] for s in statements}


def test_the_cypher_export_rebuilds_the_graph_in_an_empty_database(
    kg: Graph, corpus: KnownCorpus, graph: neo4j.Driver, graph_server: GraphConn
) -> None:
    before = _counts(graph)
    records, _, _ = graph.execute_query("MATCH (c:Chunk) RETURN c.id AS id, properties(c) AS props")
    chunks = {r["id"]: r["props"] for r in records}
    text, report = _export(kg, "cypher")
    statements = split_cypher(text)
    assert not any("$" in s.split("'")[0] for s in statements), "parameter-free"
    checked = [CypherStatement(f"export-{i}", s) for i, s in enumerate(statements)]
    assert lint_statements(checked, SCHEMA) == {s.name: [] for s in checked}

    reset_database(graph_server)
    with graph.session() as session:
        for statement in statements:
            session.run(statement).consume()
    assert _counts(graph) == before
    assert (Counter(report.labels), Counter(report.relationships)) == before
    records, _, _ = graph.execute_query("MATCH (c:Chunk) RETURN c.id AS id, properties(c) AS props")
    assert {r["id"]: r["props"] for r in records} == chunks, "every property, the hostile text too"
    records, _, _ = graph.execute_query(
        "MATCH (:Entity)-[r:RELATED]->(o:Entity) RETURN r.predicate AS p, o.name AS o ORDER BY p"
    )
    assert ("is on", "agenda") in {(r["p"], r["o"]) for r in records}


def test_the_graph_statements_page_through_the_whole_graph(kg: Graph, corpus: KnownCorpus) -> None:
    from kg_etl.export_graph import iter_graph

    small = [n.key for n in iter_graph(kg, page_size=2)]
    assert small == [n.key for n in iter_graph(kg)] and len(set(small)) == len(small)
    assert set(st.GRAPH_PAGE) == set(st.LABELS)


# ---------------------------------------------------------------- Cytoscape.js JSON


def test_json_graph_is_the_elements_json_cytoscape_reads(kg: Graph, corpus: KnownCorpus, graph: neo4j.Driver) -> None:
    text, _ = _export(kg, "json-graph")
    doc = json.loads(text)
    nodes, edges = doc["elements"]["nodes"], doc["elements"]["edges"]
    ids = [n["data"]["id"] for n in nodes]
    assert len(set(ids)) == len(ids) and all(e["data"]["source"] in ids and e["data"]["target"] in ids for e in edges)
    labels, types = _counts(graph)
    assert Counter(n["data"]["label"] for n in nodes) == labels
    assert Counter(e["data"]["interaction"] for e in edges) == types
    doc_node = next(n["data"] for n in nodes if n["data"]["kg_id"] == corpus.cells.id)
    assert doc_node["name"] == "cells.pdf" and doc_node["title"] == "Energy in cells"


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize("fmt", GRAPH_FORMATS)
def test_cli_export_writes_the_graph_format(
    graph_env: GraphConn, corpus: KnownCorpus, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"graph.{fmt}"
    result = CliRunner().invoke(cli, ["export", str(out), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert f"written to {out} ({fmt})" in result.stderr and out.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == [out.name], "no temporary file left behind"
    stdout = CliRunner().invoke(cli, ["export", "-", "--format", fmt])
    assert stdout.exit_code == 0 and stdout.stdout == out.read_text(encoding="utf-8")


@pytest.mark.parametrize("args", [["--kind", "facts"], ["--document", "cells.pdf"], ["--all"], ["--min-score", "0.5"]])
def test_cli_graph_formats_take_no_record_options(graph_env: GraphConn, tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "g.graphml"), "--format", "graphml", *args])
    assert result.exit_code == 2 and "--format graphml writes the whole graph: it takes no" in result.output
    assert args[0] in result.output and list(tmp_path.iterdir()) == []


def test_cli_graph_export_to_a_fifo_is_refused(graph_env: GraphConn, corpus: KnownCorpus, tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "g.graphml"
    os.mkfifo(fifo)
    result = CliRunner().invoke(cli, ["export", str(fifo), "--format", "graphml"])
    assert result.exit_code == EXIT_ERROR and "not a regular file" in result.stderr

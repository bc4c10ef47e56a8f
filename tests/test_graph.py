"""The graph layer against the real Bolt server: idempotent batches, replacing a document without orphans,
literal storage of hostile strings, entity resolution, the schema, and the graph commands of the CLI.

Extractions are made by hand (tests/extractions.py), so every count below is exact.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import neo4j
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from kg_etl.cli import cli
from kg_etl.cli.app import EXIT_ERROR
from kg_etl.errors import GraphError
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.categories import categories_extractor
from kg_etl.graph import statements as st
from kg_etl.graph.connection import SCHEMA_FILE, Graph, GraphSettings, split_cypher
from kg_etl.graph.server import READER
from kg_etl.graph.writer import GraphWriter
from kg_etl.models import DocumentMeta
from tests.conftest import GraphConn, reset_database
from tests.extractions import chunks_of, document, extraction, valid, write_document

# ---------------------------------------------------------------- fixtures and helpers


def _settings(conn: GraphConn) -> GraphSettings:
    return GraphSettings(
        uri=conn.uri, username=conn.username, password=SecretStr(conn.password), database=conn.database
    )


SCHEMA_NAMES = set(re.findall(r"CREATE (?:CONSTRAINT|INDEX) (\w+)", SCHEMA_FILE.read_text(encoding="utf-8")))


@pytest.fixture
def graph(graph_server: GraphConn, graph_driver: neo4j.Driver) -> neo4j.Driver:
    """Overrides conftest's ``graph`` here: an empty graph with exactly the schema applied, as ingest leaves it.

    Deleting the nodes of a database that already has exactly the schema is much cheaper than recreating the
    database and applying the schema again, and this module's tests all start from that state.
    """
    names = {r["name"] for q in ("SHOW CONSTRAINTS", "SHOW INDEXES") for r in _rows(graph_driver, q)}
    if names - {n for n in names if "[" in n} == SCHEMA_NAMES:  # "Label[id]": the index a constraint owns
        graph_driver.execute_query("MATCH (n) DETACH DELETE n")
    else:
        reset_database(graph_server)
        with Graph(_settings(graph_server)) as g:
            g.apply_schema()
    return graph_driver


@pytest.fixture
def kg(graph: neo4j.Driver, graph_server: GraphConn) -> Iterator[Graph]:
    """A ``Graph`` on the empty graph."""
    with Graph(_settings(graph_server)) as g:
        yield g


@pytest.fixture
def writer(kg: Graph) -> GraphWriter:
    return GraphWriter(kg)


def _rows(driver: neo4j.Driver, query: str, **params: Any) -> list[dict[str, Any]]:
    return [r.data() for r in driver.execute_query(query, params).records]


def _counts(driver: neo4j.Driver) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in _rows(driver, "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS n"):
        counts[row["label"]] = row["n"]
    for row in _rows(driver, "MATCH ()-[r]->() RETURN type(r) AS type, count(*) AS n"):
        counts[row["type"]] = row["n"]
    return counts


def _canonical(props: dict[str, Any]) -> dict[str, Any]:
    # An entity's aliases are a set; their order is the order in which documents happened to be written.
    return {k: sorted(v) if k == "aliases" else v for k, v in props.items()}


def snapshot(driver: neo4j.Driver) -> dict[str, list[str]]:
    """Every node (labels, properties) and relationship (type, ends' ids, properties), sorted: a multiset."""
    nodes = _rows(driver, "MATCH (n) RETURN labels(n) AS labels, properties(n) AS props")
    rels = _rows(driver, "MATCH (a)-[r]->(b) RETURN type(r) AS type, a.id AS a, b.id AS b, properties(r) AS props")
    return {
        "nodes": sorted(json.dumps([n["labels"], _canonical(n["props"])], sort_keys=True) for n in nodes),
        "rels": sorted(json.dumps([r["type"], r["a"], r["b"], _canonical(r["props"])], sort_keys=True) for r in rels),
    }


def _ids(driver: neo4j.Driver) -> Counter[str]:
    return Counter(r["id"] for r in _rows(driver, "MATCH (n) RETURN n.id AS id"))


ORPHANS = {
    "entity": "MATCH (e:Entity) WHERE NOT (e)-[:MENTIONED_IN]->(:Chunk) RETURN count(e) AS n",
    "topic": "MATCH (t:Topic) WHERE NOT (:Chunk)-[:HAS_TOPIC]->(t) AND NOT (:Topic)-[:SUBTOPIC_OF]->(t) "
    "RETURN count(t) AS n",
    "keyword": "MATCH (k:Keyword) WHERE NOT (:Chunk)-[:HAS_KEYWORD]->(k) RETURN count(k) AS n",
    "category": "MATCH (k:Category) WHERE NOT (:Chunk)-[:IN_CATEGORY]->(k) RETURN count(k) AS n",
    "chunk": "MATCH (c:Chunk) WHERE NOT (:Document)-[:HAS_CHUNK]->(c) RETURN count(c) AS n",
    "owned": "MATCH (n) WHERE (n:Fact OR n:Question) AND NOT (n)-[:FROM_CHUNK]->(:Chunk) RETURN count(n) AS n",
    "summary": "MATCH (s:Summary) WHERE NOT (s)-[:SUMMARIZES]->() RETURN count(s) AS n",
}


def _orphans(driver: neo4j.Driver) -> dict[str, int]:
    return {name: _rows(driver, query)[0]["n"] for name, query in ORPHANS.items()}


# ---------------------------------------------------------------- a document with every kind of result

LOVELACE = ("Ada Lovelace", "person")


def _rich_document() -> tuple[DocumentMeta, list[ChunkExtraction]]:
    meta = document("/docs/engines.pdf", title="Engines")
    c = chunks_of(
        meta,
        [
            "Ada Lovelace wrote the first program. She was born in 1815.",
            "Charles Babbage designed the Analytical Engine.",
            "An algorithm is a finite sequence of steps.",
            "Ada Lovelace worked with Charles Babbage.",
        ],
    )
    return meta, [
        extraction(
            c[0],
            facts=[
                ("Ada Lovelace wrote the first program.", ("Ada Lovelace", "person", "wrote", "first program", "work")),
                ("Ada Lovelace was born in 1815.", None),
            ],
            topics=[["Computing", ("History of Computing", 5)]],
            keywords=["program", ("Ada Lovelace", 0.9)],
            categories=["Technology", "History"],
            summary="Ada Lovelace wrote the first program.",
            qa=[("Who wrote the first program?", "Ada Lovelace", "Ada Lovelace wrote the first program.")],
            verdicts=[valid()],
        ),
        extraction(
            c[1],
            facts=[
                (
                    "Charles Babbage designed the Analytical Engine.",
                    ("Charles Babbage", "person", "designed", "Analytical Engine", "technology"),
                )
            ],
            topics=[["Computing", "Hardware", ("Engines", 4)]],
            keywords=["engine", "program"],
            categories=["Technology"],
            summary="Babbage designed the Analytical Engine.",
            qa=[
                ("Who designed the Analytical Engine?", "Charles Babbage", "Charles Babbage designed the engine."),
                ("What did Babbage design here?", "The Analytical Engine", "Charles Babbage designed the engine."),
            ],
            verdicts=[valid(0.7), None],
        ),
        extraction(
            c[2],
            topics=[["Mathematics"]],
            keywords=["algorithm"],
            categories=["Mathematics"],
            summary="Defines what an algorithm is.",
            failures=[("facts", "1 validation error for Facts", '{"facts": [{"statement": "An alg')],
        ),
        extraction(
            c[3],
            facts=[
                (
                    "Ada Lovelace worked with Charles Babbage.",
                    ("Ada Lovelace", "person", "worked with", "Charles Babbage", "person"),
                )
            ],
            topics=[["Computing", "History of Computing"]],
            keywords=["program"],
            categories=["Technology"],
            summary="Lovelace and Babbage worked together.",
        ),
    ]


RICH_COUNTS = {
    "Document": 1, "Chunk": 4, "Fact": 4, "Entity": 4, "Topic": 5, "Keyword": 4, "Category": 3, "Summary": 5,
    "Question": 3, "HAS_CHUNK": 4, "NEXT_CHUNK": 3, "FROM_CHUNK": 7, "MENTIONS": 6, "MENTIONED_IN": 6,
    "RELATED": 3, "HAS_TOPIC": 8, "SUBTOPIC_OF": 3, "HAS_KEYWORD": 6, "IN_CATEGORY": 8, "SUMMARIZES": 5,
}  # fmt: skip


def test_a_document_is_written_exactly(graph: neo4j.Driver, writer: GraphWriter) -> None:
    meta, extractions = _rich_document()
    write_document(writer, meta, extractions, summary="About engines.", batch_size=3)
    assert _counts(graph) == Counter(RICH_COUNTS)
    assert _orphans(graph) == dict.fromkeys(ORPHANS, 0)
    # NEXT_CHUNK runs in text order, also across the batch boundary (chunk 2 -> 3).
    chain = _rows(graph, "MATCH (a:Chunk)-[:NEXT_CHUNK]->(b:Chunk) RETURN a.index AS a, b.index AS b ORDER BY a")
    assert [(r["a"], r["b"]) for r in chain] == [(0, 1), (1, 2), (2, 3)]
    failed = _rows(graph, "MATCH (c:Chunk {status: 'failed'}) RETURN c.index AS i, c.failed_extractors AS x")
    assert failed == [{"i": 2, "x": ["facts"]}]
    # Every fact and question cites its document and pages.
    cites = _rows(
        graph,
        "MATCH (n)-[:FROM_CHUNK]->(c:Chunk) RETURN n.doc_id = c.doc_id AND n.page_start = c.page_start "
        "AND n.page_end = c.page_end AS ok",
    )
    assert cites and all(r["ok"] for r in cites)
    shares = _rows(graph, "MATCH (:Document)-[r:IN_CATEGORY]->(k) RETURN k.name AS k, r.share AS s ORDER BY s DESC, k")
    assert [(r["k"], r["s"]) for r in shares] == [("Technology", 0.75), ("History", 0.25), ("Mathematics", 0.25)]


def test_writing_the_same_batches_twice_changes_nothing(graph: neo4j.Driver, writer: GraphWriter) -> None:
    meta, extractions = _rich_document()
    write_document(writer, meta, extractions, summary="About engines.", batch_size=2)
    first, first_ids = snapshot(graph), _ids(graph)
    write_document(writer, meta, extractions, summary="About engines.", batch_size=2)
    writer.write_batch(extractions[:2], None, "test-model")  # one batch replayed alone: a resume after a crash
    assert _counts(graph) == Counter(RICH_COUNTS)
    assert _ids(graph) == first_ids
    assert snapshot(graph) == first


# ---------------------------------------------------------------- replacing and removing documents


def _other_document() -> tuple[DocumentMeta, list[ChunkExtraction]]:
    meta = document("/docs/other.pdf")
    [c] = chunks_of(meta, ["Ada Lovelace wrote notes on the engine."])
    return meta, [
        extraction(
            c,
            facts=[("Ada Lovelace wrote notes on the engine.", ("Ada Lovelace", "person", "wrote", "notes", "work"))],
            topics=[["Computing", "History of Computing"]],
            keywords=["program"],
            categories=["Technology"],
            summary="Lovelace's notes on the engine.",
        )
    ]


def _report(version: str) -> tuple[DocumentMeta, list[ChunkExtraction]]:
    """Two versions of one PDF: the old one has more (an alias, a topic, a keyword, a category of its own)."""
    meta = document("/docs/report.pdf", version=version)
    if version == "2":
        [c] = chunks_of(meta, ["Ada Lovelace met Charles Babbage in 1833."])
        return meta, [
            extraction(
                c,
                facts=[
                    (
                        "Ada Lovelace met Charles Babbage.",
                        ("Ada Lovelace", "person", "met", "Charles Babbage", "person"),
                    )
                ],
                topics=[["Computing", "History of Computing"]],
                keywords=["program"],
                categories=["Technology"],
                summary="Lovelace met Babbage in 1833.",
            )
        ]
    c = chunks_of(meta, ["ADA LOVELACE met Charles Babbage.", "The Analytical Engine was never built."])
    return meta, [
        extraction(
            c[0],
            facts=[
                ("ADA LOVELACE met Charles Babbage.", ("ADA LOVELACE", "person", "met", "Charles Babbage", "person"))
            ],
            topics=[["Computing", "Hardware", "Engines"], ["Computing", "History of Computing"]],
            keywords=["engine", "program"],
            categories=["Technology", "History"],
            summary="Lovelace met Babbage.",
            qa=[("Whom did Ada Lovelace meet?", "Charles Babbage", "ADA LOVELACE met Charles Babbage.")],
        ),
        extraction(
            c[1],
            facts=[
                (
                    "The Analytical Engine was never built.",
                    ("Analytical Engine", "technology", "was never", "built", "other"),
                )
            ],
            topics=[["Computing", "Hardware", "Engines"]],
            keywords=["engine"],
            categories=["History"],
            summary="The engine was never built.",
        ),
    ]


def test_a_changed_document_replaces_the_old_one_without_orphans(
    graph: neo4j.Driver, graph_server: GraphConn, kg: Graph, writer: GraphWriter
) -> None:
    other, new = _other_document(), _report("2")
    # As the pipeline does: the other document, the old version, the new version, then the old one goes.
    for meta, extractions in (other, _report("1"), new):
        write_document(writer, meta, extractions, summary=f"Summary of {meta.path}.")
    old_id = _report("1")[0].id
    replaced = writer.other_versions(new[0])
    assert replaced == [old_id]
    for doc_id in replaced:
        writer.remove_document(doc_id)

    assert _orphans(graph) == dict.fromkeys(ORPHANS, 0)
    left = _rows(graph, "MATCH (n) WHERE n.id = $id OR n.doc_id = $id RETURN labels(n) AS l", id=old_id)
    assert left == []
    assert _rows(graph, "MATCH ()-[r:RELATED {doc_id: $id}]->() RETURN count(r) AS n", id=old_id) == [{"n": 0}]
    # Shared entities and topics stay, linked to the chunks of the documents that still mention them.
    ada = _rows(
        graph,
        "MATCH (e:Entity {name: 'Ada Lovelace'})-[:MENTIONED_IN]->(c:Chunk) "
        "RETURN e.aliases AS aliases, collect(c.doc_id) AS docs",
    )
    assert len(ada) == 1
    assert sorted(ada[0]["docs"]) == sorted([other[0].id, new[0].id])
    assert ada[0]["aliases"] == ["Ada Lovelace"]  # "ADA LOVELACE" was only the old version's
    names = {r["name"] for r in _rows(graph, "MATCH (n) WHERE n:Entity OR n:Topic OR n:Keyword OR n:Category "
                                              "RETURN coalesce(n.path, n.name) AS name")}  # fmt: skip
    assert names == {
        "Ada Lovelace", "Charles Babbage", "notes",  # entities
        "Computing", "Computing > History of Computing",  # topics: Hardware and Engines were the old one's
        "program", "Technology",  # keyword, category
    }  # fmt: skip

    # The strongest check: the graph is exactly what writing only the remaining documents gives.
    after = snapshot(graph)
    reset_database(graph_server)
    kg.apply_schema()
    for meta, extractions in (other, new):
        write_document(writer, meta, extractions, summary=f"Summary of {meta.path}.")
    assert after == snapshot(graph)


def test_removing_every_document_leaves_an_empty_graph(graph: neo4j.Driver, writer: GraphWriter) -> None:
    docs = [_rich_document(), _other_document(), _report("1")]
    for meta, extractions in docs:
        write_document(writer, meta, extractions, summary="A summary of it.")
    for meta, _ in docs:
        writer.remove_document(meta.id)
        assert _orphans(graph) == dict.fromkeys(ORPHANS, 0)
    assert sum(_counts(graph).values()) == 0


# ---------------------------------------------------------------- hostile strings


NASTY = [
    "it's a \"quoted\" 'string'",
    "`backticked` name",
    "{braces: 1} and [brackets]",
    "}) DETACH DELETE n //",
    "'}) MATCH (n) DETACH DELETE n //",
    "$param and $rows",
    "line one\nline two\r\nline three",
    "back\\slash \\' \\u0041",
    "/* comment */ RETURN 1;",
]


def _nasty_document() -> tuple[DocumentMeta, list[ChunkExtraction]]:
    meta = DocumentMeta(
        id="nasty-doc", path="/docs/it's {`$weird`}\n}) DETACH DELETE n //.pdf", name="x.pdf", n_pages=9,
        title=NASTY[3], author=NASTY[6],
    )  # fmt: skip
    labels = categories_extractor([n[:60] for n in NASTY])
    extractions = []
    for chunk, s in zip(chunks_of(meta, NASTY), NASTY, strict=True):
        short = s[:40]
        extractions.append(
            extraction(
                chunk,
                facts=[(f"Fact: {s}", (f"S {short}", "person", f"p {short}"[:40], f"O {short}", "other"))],
                topics=[[f"T {short}"[:40], f"U {short}"[:40]]],
                keywords=[f"K {short}"[:40]],
                categories=[s[:60]],
                categories_schema=labels.schema,
                summary=f"Summary: {s}",
                qa=[(f"Question: {s}?", f"Answer: {s}", f"Evidence: {s}")],
            )
        )
    return meta, extractions


def _clean(text: str) -> str:
    return " ".join(text.split())


def test_hostile_strings_are_stored_literally_and_change_nothing_else(graph: neo4j.Driver, writer: GraphWriter) -> None:
    bystander, bystander_extractions = _rich_document()
    write_document(writer, bystander, bystander_extractions, summary="About engines.")
    before = snapshot(graph)

    meta, extractions = _nasty_document()
    write_document(writer, meta, extractions, summary=NASTY[4])
    n = len(NASTY)
    added = {
        "Document": 1, "Chunk": n, "Fact": n, "Entity": 2 * n, "Topic": 2 * n, "Keyword": n, "Category": n,
        "Summary": n + 1, "Question": n,
    }  # fmt: skip
    counts = _counts(graph)
    for label, count in added.items():
        assert counts[label] == RICH_COUNTS[label] + count, label

    doc = _rows(graph, "MATCH (d:Document {id: 'nasty-doc'}) RETURN d.path AS path, d.title AS t, d.author AS a")
    assert doc == [{"path": meta.path, "t": NASTY[3], "a": NASTY[6]}]
    got = _rows(
        graph,
        "MATCH (:Document {id: 'nasty-doc'})-[:HAS_CHUNK]->(c:Chunk) "
        "MATCH (f:Fact)-[:FROM_CHUNK]->(c) MATCH (q:Question)-[:FROM_CHUNK]->(c) "
        "MATCH (s:Summary)-[:SUMMARIZES]->(c) MATCH (c)-[:IN_CATEGORY]->(g:Category) "
        "MATCH (c)-[:HAS_KEYWORD]->(k:Keyword) MATCH (f)-[:MENTIONS]->(e:Entity)-[r:RELATED]->(:Entity) "
        "MATCH (c)-[:HAS_TOPIC]->(t:Topic {level: 2}) "
        "RETURN c.index AS i, c.text AS text, f.text AS fact, f.subject AS subject, q.question AS question, "
        "q.answer AS answer, s.text AS summary, g.name AS category, k.name AS keyword, e.name AS entity, "
        "e.aliases AS aliases, r.predicate AS predicate, t.name AS topic, t.path AS path ORDER BY i",
    )
    assert len(got) == n
    for row, s in zip(got, NASTY, strict=True):
        short = s[:40]
        assert row == {
            "i": row["i"], "text": s, "fact": f"Fact: {s}", "subject": f"S {short}", "question": f"Question: {s}?",
            "answer": f"Answer: {s}", "summary": f"Summary: {s}", "category": s[:60].strip(),
            "keyword": f"K {short}"[:40].strip(), "entity": _clean(f"S {short}"), "aliases": [_clean(f"S {short}")],
            "predicate": f"p {short}"[:40].strip().lower(), "topic": f"U {short}"[:40].strip(),
            "path": f"T {short}"[:40].strip() + " > " + f"U {short}"[:40].strip(),
        }  # fmt: skip
    summary = _rows(graph, "MATCH (s:Summary)-[:SUMMARIZES]->(:Document {id: 'nasty-doc'}) RETURN s.text AS t")
    assert summary == [{"t": NASTY[4]}]

    # Nothing outside the new document changed, and removing it restores the graph exactly.
    writer.remove_document(meta.id)
    assert snapshot(graph) == before


# ---------------------------------------------------------------- entity resolution


def _write_triples(
    writer: GraphWriter, path: str, triples: list[tuple[str, str, str, str, str]], *, batch_size: int = 10
) -> None:
    meta = document(path)
    chunks = chunks_of(meta, [f"chunk {i}: {t[0]} {t[2]} {t[3]}" for i, t in enumerate(triples)])
    extractions = [extraction(c, facts=[(f"{t[0]} {t[2]} {t[3]}.", t)]) for c, t in zip(chunks, triples, strict=True)]
    write_document(writer, meta, extractions, batch_size=batch_size)


def _entities(driver: neo4j.Driver) -> dict[tuple[str, str], list[str]]:
    rows = _rows(driver, "MATCH (e:Entity) RETURN e.name AS name, e.type AS type, e.aliases AS aliases")
    return {(r["name"], r["type"]): sorted(r["aliases"]) for r in rows}


def test_an_acronym_joins_its_full_name_within_a_batch(graph: neo4j.Driver, writer: GraphWriter) -> None:
    _write_triples(
        writer,
        "/docs/who.pdf",
        [
            ("WHO", "organization", "coordinates", "vaccination", "concept"),
            ("World Health Organization", "organization", "was founded in", "1948", "date"),
            ("WHO", "person", "is", "a pronoun", "concept"),  # another type: not the organisation
        ],
    )
    entities = _entities(graph)
    assert entities[("World Health Organization", "organization")] == ["WHO", "World Health Organization"]
    assert ("WHO", "person") in entities
    assert len(entities) == 5


def test_surface_variants_of_one_name_merge(graph: neo4j.Driver, writer: GraphWriter) -> None:
    variants = ["The Beatles", "Beatles", "the  beatles", "BEATLES", "The Beatles'", "ＢＥＡＴＬＥＳ", "Beatles\u2019s"]
    # In separate batches and documents: resolution by key needs no batch context.
    for i, name in enumerate(variants):
        _write_triples(writer, f"/docs/b{i}.pdf", [(name, "organization", "released", "Abbey Road", "work")])
    entities = _entities(graph)
    assert set(entities) == {("The Beatles", "organization"), ("Abbey Road", "work")}
    assert entities[("The Beatles", "organization")] == sorted(_clean(v) for v in variants)
    mentions = _rows(graph, "MATCH (:Entity {name: 'The Beatles'})-[m:MENTIONED_IN]->() RETURN count(m) AS n")
    assert mentions == [{"n": len(variants)}]


def test_homonyms_of_different_types_stay_apart(graph: neo4j.Driver, writer: GraphWriter) -> None:
    _write_triples(
        writer,
        "/docs/jaguar.pdf",
        [
            ("Jaguar", "concept", "lives in", "Amazon rainforest", "location"),
            ("Jaguar", "organization", "builds", "cars", "product"),
            ("jaguar", "organization", "is owned by", "Tata Motors", "organization"),
        ],
    )
    entities = _entities(graph)
    assert entities[("Jaguar", "concept")] == ["Jaguar"]
    assert entities[("Jaguar", "organization")] == ["Jaguar", "jaguar"]
    related = _rows(
        graph,
        "MATCH (s:Entity {name: 'Jaguar'})-[r:RELATED]->(o) RETURN s.type AS type, r.predicate AS p, o.name AS o "
        "ORDER BY p",
    )
    assert related == [
        {"type": "organization", "p": "builds", "o": "cars"},
        {"type": "organization", "p": "is owned by", "o": "Tata Motors"},
        {"type": "concept", "p": "lives in", "o": "Amazon rainforest"},
    ]


def test_predicates_are_properties_of_one_relationship_type(graph: neo4j.Driver, writer: GraphWriter) -> None:
    predicates = [f"Predicate Number {i}" for i in range(25)]
    _write_triples(writer, "/docs/p.pdf", [("Ada Lovelace", "person", p, f"thing {i}", "concept")
                                           for i, p in enumerate(predicates)])  # fmt: skip
    meta, extractions = _rich_document()
    write_document(writer, meta, extractions)
    types = {r["t"] for r in _rows(graph, "MATCH ()-[r]->() RETURN DISTINCT type(r) AS t")}
    assert types <= set(st.RELATIONSHIP_TYPES)
    stored = {r["p"] for r in _rows(graph, "MATCH ()-[r:RELATED]->() RETURN DISTINCT r.predicate AS p")}
    assert {p.lower() for p in predicates} <= stored


def test_topics_merge_by_path_across_documents_and_not_by_name(graph: neo4j.Driver, writer: GraphWriter) -> None:
    for path, topics in (
        ("/docs/a.pdf", [["Biology", "Cells"]]),
        ("/docs/b.pdf", [["biology", "cells"], ["Computing", "Cells"]]),
    ):
        meta = document(path)
        [c] = chunks_of(meta, [f"text of {path}"])
        write_document(writer, meta, [extraction(c, topics=topics)])
    rows = _rows(
        graph,
        "MATCH (t:Topic) OPTIONAL MATCH (c:Chunk)-[:HAS_TOPIC]->(t) "
        "RETURN t.path AS path, t.name AS name, count(c) AS chunks ORDER BY path",
    )
    assert rows == [
        {"path": "Biology", "name": "Biology", "chunks": 2},
        {"path": "Biology > Cells", "name": "Cells", "chunks": 2},
        {"path": "Computing", "name": "Computing", "chunks": 1},
        {"path": "Computing > Cells", "name": "Cells", "chunks": 1},
    ]
    parents = _rows(graph, "MATCH (t:Topic)-[:SUBTOPIC_OF]->(p:Topic) RETURN t.path AS t, p.path AS p ORDER BY t")
    assert parents == [{"t": "Biology > Cells", "p": "Biology"}, {"t": "Computing > Cells", "p": "Computing"}]


# ---------------------------------------------------------------- schema and server detection


def test_schema_applies_on_a_new_database_and_again(graph_server: GraphConn, graph: neo4j.Driver, kg: Graph) -> None:
    reset_database(graph_server)
    count = len(split_cypher(SCHEMA_FILE.read_text(encoding="utf-8")))
    assert kg.apply_schema() == count
    assert kg.apply_schema() == count  # IF NOT EXISTS: nothing changes
    constrained = {
        r["labelsOrTypes"][0]
        for r in _rows(graph, "SHOW CONSTRAINTS")
        if r["type"] == "UNIQUENESS" and r["properties"] == ["id"]
    }
    assert constrained == set(st.LABELS)
    indexes = {r["name"] for r in _rows(graph, "SHOW INDEXES")}
    assert {"document_path", "chunk_doc_id", "entity_name", "question_verdict", "related_doc_id"} <= indexes
    with pytest.raises(neo4j.exceptions.ConstraintError):
        graph.execute_query("CREATE (:Entity {id: 'x'}), (:Entity {id: 'x'})")


def test_the_local_server_is_not_taken_for_neo4j(kg: Graph) -> None:
    assert "ArcadeDB" in kg.server_agent()
    assert kg.is_neo4j() is False


@pytest.mark.parametrize(
    ("agent", "neo4j_itself"),
    [
        ("Neo4j/5.26.0", True),
        ("Neo4j/5.27-aura", True),
        ("Neo4j/4.4.35", True),
        ("Neo4j/5.26.0 compatible (ArcadeDB 26.10.2)", False),
        ("Neo4j/v5.11.0 compatible graph database server - Memgraph", False),
        ("FalkorDB/4.0", False),
    ],
)
def test_neo4j_is_told_from_compatible_servers_by_its_agent(
    agent: str, neo4j_itself: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Graph, "server_agent", lambda self: agent)
    graph = Graph(GraphSettings(uri="bolt://127.0.0.1:1", username="u", password=SecretStr("p")))
    try:
        assert graph.is_neo4j() is neo4j_itself
    finally:
        graph.close()


def test_neo4j_only_schema_is_sent_only_to_neo4j(kg: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    # Taken for Neo4j, the local server gets the full-text indexes too, and rejects them: proof they are sent.
    monkeypatch.setattr(Graph, "is_neo4j", lambda self: True)
    with pytest.raises(GraphError, match="Only standard, RANGE and TEXT index types"):
        kg.apply_schema()


# ---------------------------------------------------------------- read-only queries


def test_a_procedure_that_writes_is_refused_by_the_server(graph: neo4j.Driver, graph_server: GraphConn) -> None:
    with _reader(graph_server) as kg, pytest.raises(GraphError, match="refused this one"):
        kg.read_query("CALL apoc.merge.node(['Probe'], {x: 1}) YIELD node RETURN node")
    assert _rows(graph, "MATCH (n) RETURN count(n) AS n") == [{"n": 0}]


def _reader(conn: GraphConn) -> Graph:
    from pydantic import SecretStr

    return Graph(GraphSettings(uri=conn.uri, username=READER, password=SecretStr(conn.reader_password),
                               database=conn.database))  # fmt: skip


# ---------------------------------------------------------------- the CLI's graph commands


def test_cli_stats_query_and_remove(graph_env: GraphConn, graph: neo4j.Driver, writer: GraphWriter) -> None:
    meta, extractions = _rich_document()
    write_document(writer, meta, extractions, summary="About engines.")
    other, other_extractions = _other_document()
    write_document(writer, other, other_extractions, summary="Other.")
    runner = CliRunner()

    result = runner.invoke(cli, ["stats", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    counts = _counts(graph)
    assert stats["labels"] == {k: v for k, v in counts.items() if k in st.LABELS}
    assert stats["relationships"] == {k: v for k, v in counts.items() if k in st.RELATIONSHIP_TYPES}

    query = "MATCH (d:Document) RETURN d.path AS path, d.n_chunks AS chunks ORDER BY path"
    result = runner.invoke(cli, ["query", query, "--json"], env=graph_env.reader_env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"path": "/docs/engines.pdf", "chunks": 4},
        {"path": "/docs/other.pdf", "chunks": 1},
    ]

    result = runner.invoke(cli, ["remove", "/docs/engines.pdf"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _rows(graph, "MATCH (d:Document) RETURN d.path AS p") == [{"p": "/docs/other.pdf"}]
    assert _orphans(graph) == dict.fromkeys(ORPHANS, 0)
    before = snapshot(graph)
    result = runner.invoke(cli, ["remove", "/docs/engines.pdf"])
    assert result.exit_code == EXIT_ERROR
    assert "no such document" in result.stderr
    assert snapshot(graph) == before


@pytest.mark.parametrize(
    "query",
    [
        "CREATE (n:Probe {x: 1}) RETURN n",
        "MATCH (d:Document) DETACH DELETE d",
        "CREATE INDEX probe FOR (n:Probe) ON (n.x)",
    ],
)
def test_cli_query_refuses_writes_with_one_line(
    query: str, graph_env: GraphConn, graph: neo4j.Driver, writer: GraphWriter
) -> None:
    meta, extractions = _other_document()
    write_document(writer, meta, extractions)
    before, indexes = snapshot(graph), _rows(graph, "SHOW INDEXES")
    result = CliRunner().invoke(cli, ["query", query], env=graph_env.reader_env)
    assert result.exit_code == EXIT_ERROR, result.output
    assert result.stdout == ""
    err = result.stderr.strip()
    assert "\n" not in err
    assert err.startswith("error:") and "read-only" in err
    assert snapshot(graph) == before
    assert _rows(graph, "SHOW INDEXES") == indexes

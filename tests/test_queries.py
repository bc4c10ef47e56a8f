"""The Neo4j Browser queries in cypher/queries/: documented, checked against the model, and run on real data.

The module's graph is built once: a real ingest (tiny LFM2 model, real llama.cpp) of a PDF with known text and
of a file that is not a PDF, plus two documents whose extractions are written by hand through the same
``GraphWriter``, because a random-weight model writes no entities, relations, aliases, failed chunks or
validated questions that a test could count on. Every query file runs with parameters taken from that data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neo4j
import pytest
from pydantic import SecretStr

from kg_etl.config import IngestSettings
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph, GraphSettings, split_cypher
from kg_etl.graph.writer import GraphWriter
from kg_etl.pipeline import ingest
from kg_etl.samples import make_pdf
from tests.conftest import GraphConn, reset_database
from tests.extractions import chunks_of, document, extraction, valid, write_document

QUERY_DIR = Path(__file__).resolve().parents[1] / "cypher" / "queries"
QUERIES = sorted(QUERY_DIR.glob("*.cypher"))
PAGES = [
    ["Photosynthesis converts light energy into chemical energy.", "Chlorophyll absorbs red and blue light."],
    ["The Calvin cycle fixes carbon dioxide into sugars.", "It runs in the stroma of the chloroplast."],
    ["Cellular respiration releases the energy stored in glucose.", "Mitochondria host the Krebs cycle."],
]
WHO_PATH, UNICEF_PATH = "/docs/who.pdf", "/docs/unicef.pdf"


@dataclass(frozen=True)
class Corpus:
    biology: str  # path of the ingested PDF
    broken: str  # path of the file that is not a PDF
    question_page: int  # a page of the biology PDF that has questions


def _query(path: Path) -> str:
    [text] = split_cypher(path.read_text(encoding="utf-8"))
    return text


def _hand_written(writer: GraphWriter) -> None:
    """Two documents that share an entity, keywords and topics; one failed chunk; one validated question."""
    who = document(WHO_PATH, title="Global health")
    c = chunks_of(who, ["The WHO coordinates vaccination.", "The World Health Organization is in Geneva.", "Malaria."])
    write_document(
        writer,
        who,
        [
            extraction(
                c[0],
                facts=[
                    (
                        "The WHO coordinates vaccination.",
                        ("WHO", "organization", "coordinates", "vaccination", "concept"),
                    )
                ],
                topics=[["Medicine", "Public Health", ("Vaccination", 5)]],
                keywords=["vaccination", "WHO"],
                categories=["Medicine & Health"],
                summary="The WHO coordinates vaccination.",
                qa=[("Who coordinates vaccination?", "The WHO", "The WHO coordinates vaccination.")],
                verdicts=[valid(0.9)],
            ),
            extraction(
                c[1],
                facts=[
                    (
                        "The World Health Organization is based in Geneva.",
                        ("World Health Organization", "organization", "is based in", "Geneva", "location"),
                    )
                ],
                topics=[["Medicine", "Public Health"]],
                keywords=["Geneva"],
                categories=["Medicine & Health", "History"],
                summary="The World Health Organization is based in Geneva.",
                qa=[("Where is the WHO based?", "Geneva", "The World Health Organization is in Geneva.")],
                verdicts=[None],
            ),
            extraction(
                c[2],
                topics=[["Medicine", "Tropical Diseases"]],
                keywords=["malaria"],
                summary="A chunk about malaria.",
                failures=[("facts", "1 validation error for Facts", '{"facts": [{"statement": "Mal')],
            ),
        ],
        summary="The WHO and vaccination.",
        batch_size=2,
    )
    unicef = document(UNICEF_PATH, title="Children")
    [c0] = chunks_of(unicef, ["UNICEF works with the World Health Organization on vaccination."])
    write_document(
        writer,
        unicef,
        [
            extraction(
                c0,
                facts=[
                    (
                        "UNICEF works with the World Health Organization.",
                        ("UNICEF", "organization", "works with", "World Health Organization", "organization"),
                    )
                ],
                topics=[["Medicine", "Public Health"]],
                keywords=["vaccination", "WHO"],
                categories=["Medicine & Health"],
                summary="UNICEF works with the WHO.",
            )
        ],
        summary="UNICEF and the WHO.",
    )


@pytest.fixture(scope="module")
def corpus(
    graph_server: GraphConn, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Corpus]:
    """The populated graph, built once for the module; the tests below only read it."""
    reset_database(graph_server)
    folder = tmp_path_factory.mktemp("query-pdfs")
    biology = make_pdf(folder / "biology.pdf", PAGES, title="Energy in cells")
    broken = folder / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    settings = GraphSettings(
        uri=graph_server.uri,
        username=graph_server.username,
        password=SecretStr(graph_server.password),
        database=graph_server.database,
    )
    ingest_settings = IngestSettings(
        model=str(tiny_model_path), deterministic=True, chunk_tokens=48, overlap_tokens=8, batch_size=2, threads=1
    )
    # Module scope runs outside the per-test KG_ETL_HOME: give the ingest (its extraction cache) its own.
    with pytest.MonkeyPatch.context() as mp, Graph(settings) as graph:
        mp.setenv("KG_ETL_HOME", str(tmp_path_factory.mktemp("kg-etl-home")))
        report = ingest([folder], graph, ingest_settings)
        assert [d.status for d in report.documents] == ["done", "failed"]
        _hand_written(GraphWriter(graph))
        pages = graph.read_query(
            "MATCH (q:Question {doc_id: $id}) RETURN min(q.page_start) AS page", {"id": report.documents[0].doc_id}
        )
    yield Corpus(biology=str(biology.resolve()), broken=str(broken.resolve()), question_page=pages[0]["page"])


@pytest.fixture
def run(corpus: Corpus, graph_driver: neo4j.Driver) -> Callable[[str, dict[str, Any]], list[dict[str, Any]]]:
    """Runs a query file by name; fails if another test module reset the graph in between."""
    documents = graph_driver.execute_query("MATCH (d:Document) RETURN count(d) AS n").records[0]["n"]
    assert documents == 4, "the module's corpus is gone: did a test of another module run in between?"

    def run_query(name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        text = _query(QUERY_DIR / f"{name}.cypher")
        assert set(params) == set(re.findall(r"\$(\w+)", text)), "pass exactly the query's parameters"
        return [record.data() for record in graph_driver.execute_query(text, params).records]

    return run_query


# ---------------------------------------------------------------- the files themselves


def test_there_are_enough_queries() -> None:
    assert len(QUERIES) >= 12


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.stem)
def test_each_query_says_what_it_answers_and_declares_its_parameters(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    header = source[: source.index("\n", source.index("Parameters:"))]
    assert all(line.startswith("//") for line in header.splitlines()), "the file starts with // comments"
    used = set(re.findall(r"\$(\w+)", _query(path)))
    hinted = set(re.findall(r"^//\s+:param (\w+) =>", source, flags=re.MULTILINE))
    assert hinted == used, "one `:param name => value` hint per $parameter, for Neo4j Browser"
    declared = set(re.findall(r"\$(\w+)", header))
    assert declared == used, "the Parameters: line names every $parameter"
    if not used:
        assert "Parameters: none." in header
    assert path.stem in CHECKS, f"add {path.stem} to CHECKS in this module"


def test_the_ingested_graph_uses_only_the_models_vocabulary(corpus: Corpus, graph_driver: neo4j.Driver) -> None:
    def rows(query: str) -> list[dict[str, Any]]:
        return [r.data() for r in graph_driver.execute_query(query).records]

    keys = rows("MATCH (n) UNWIND labels(n) AS label UNWIND keys(n) AS key RETURN DISTINCT label, key")
    keys += rows("MATCH ()-[r]->() UNWIND keys(r) AS key RETURN DISTINCT type(r) AS label, key")
    unknown = sorted(f"{r['label']}.{r['key']}" for r in keys if r["key"] not in st.PROPERTY_KEYS.get(r["label"], ()))
    assert unknown == [], "add them to statements.PROPERTY_KEYS (and the README's Graph model table)"
    types = {r["t"] for r in rows("MATCH ()-[r]->() RETURN DISTINCT type(r) AS t")}
    assert types == set(st.RELATIONSHIP_TYPES)
    labels = {r["l"] for r in rows("MATCH (n) UNWIND labels(n) AS l RETURN DISTINCT l")}
    # This corpus is ingested without a user schema (tests/test_schema.py covers SchemaNode's keys).
    assert labels == set(st.LABELS) - {"SchemaNode"}


# ---------------------------------------------------------------- each query on the data

Check = Callable[[Callable[[str, dict[str, Any]], list[dict[str, Any]]], Corpus], None]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    def register(f: Check) -> Check:
        CHECKS[name] = f
        return f

    return register


@check("documents")
def _documents(run: Any, corpus: Corpus) -> None:
    rows = {r["path"]: r for r in run("documents", {})}
    assert set(rows) == {corpus.biology, corpus.broken, WHO_PATH, UNICEF_PATH}
    assert rows[corpus.biology]["status"] == "done" and rows[corpus.biology]["chunks"] >= 3
    assert rows[corpus.broken]["status"] == "failed" and rows[corpus.broken]["chunks"] == 0
    who = rows[WHO_PATH]
    assert (who["chunks"], who["failed_chunks"], who["facts"], who["questions"]) == (3, 1, 2, 2)


@check("document_topics")
def _document_topics(run: Any, corpus: Corpus) -> None:
    rows = run("document_topics", {"document": corpus.biology})
    assert rows, "the ingest gives every chunk a taxonomy"
    assert [r["importance"] for r in rows] == sorted((r["importance"] for r in rows), reverse=True)
    assert all(1 <= r["top_importance"] <= 5 and r["chunks"] >= 1 for r in rows)
    rows = run("document_topics", {"document": "who.pdf"})  # by file name
    assert [(r["topic"], r["chunks"]) for r in rows][:2] == [("Medicine", 3), ("Medicine > Public Health", 2)]


@check("document_summary")
def _document_summary(run: Any, corpus: Corpus) -> None:
    [row] = run("document_summary", {"document": corpus.biology})
    assert row["title"] == "Energy in cells" and row["summary"]
    assert row["categories"] and all(0 < c["share"] <= 1 for c in row["categories"])
    [row] = run("document_summary", {"document": WHO_PATH})
    assert row["summary"] == "The WHO and vaccination."
    # Shares of the chunks that were classified (2 of 3: the third has no categories).
    assert row["categories"] == [
        {"category": "Medicine & Health", "share": 1.0},
        {"category": "History", "share": 0.5},
    ]


@check("entity_facts")
def _entity_facts(run: Any, corpus: Corpus) -> None:
    rows = run("entity_facts", {"entity": "who"})  # an alias, in another case
    assert [(r["entity"], r["document"], r["page_start"]) for r in rows] == [
        ("World Health Organization", UNICEF_PATH, 1),
        ("World Health Organization", WHO_PATH, 1),
        ("World Health Organization", WHO_PATH, 2),
    ]


@check("entity_relations")
def _entity_relations(run: Any, corpus: Corpus) -> None:
    rows = run("entity_relations", {"entity": "World Health Organization"})
    assert [(r["subject"], r["predicate"], r["object"], r["document"], r["page_start"]) for r in rows] == [
        ("World Health Organization", "coordinates", "vaccination", WHO_PATH, 1),
        ("World Health Organization", "is based in", "Geneva", WHO_PATH, 2),
        ("UNICEF", "works with", "World Health Organization", UNICEF_PATH, 1),
    ]


@check("entity_graph")
def _entity_graph(run: Any, corpus: Corpus) -> None:
    rows = run("entity_graph", {"entity": "WHO"})
    assert len(rows) == 3 + 3  # three RELATED paths, three facts that mention it
    assert all(isinstance(r["path"], list) for r in rows)  # paths, for Browser's graph view


@check("entity_aliases")
def _entity_aliases(run: Any, corpus: Corpus) -> None:
    rows = run("entity_aliases", {"min_aliases": 2})
    assert [(r["entity"], sorted(r["aliases"]), r["chunks"]) for r in rows] == [
        ("World Health Organization", ["WHO", "World Health Organization"], 3)
    ]


@check("topic_tree")
def _topic_tree(run: Any, corpus: Corpus) -> None:
    rows = run("topic_tree", {"topic": "medicine"})
    assert [(r["topic"], r["depth"], r["chunks"]) for r in rows] == [
        ("Medicine", 0, 4),
        ("Medicine > Public Health", 1, 3),
        ("Medicine > Public Health > Vaccination", 2, 1),
        ("Medicine > Tropical Diseases", 1, 1),
    ]
    assert [r["topic"] for r in run("topic_tree", {"topic": "Medicine > Public Health"})] == [
        "Medicine > Public Health",
        "Medicine > Public Health > Vaccination",
    ]


@check("top_topics")
def _top_topics(run: Any, corpus: Corpus) -> None:
    rows = run("top_topics", {"limit": 3})
    assert len(rows) == 3
    assert [r["importance"] for r in rows] == sorted((r["importance"] for r in rows), reverse=True)
    medicine = {r["topic"]: r for r in run("top_topics", {"limit": 1000})}["Medicine"]
    assert (medicine["chunks"], medicine["documents"], medicine["importance"]) == (4, 2, 12)


@check("page_questions")
def _page_questions(run: Any, corpus: Corpus) -> None:
    params = {"document": corpus.biology, "page": corpus.question_page, "validated_only": False, "min_score": 0.0}
    rows = run("page_questions", params)
    assert rows and all(r["page_start"] <= corpus.question_page <= r["page_end"] for r in rows)
    assert all(r["verdict"] in {"valid", "invalid", "unvalidated"} for r in rows)
    params = {"document": WHO_PATH, "page": 1, "validated_only": True, "min_score": 0.5}
    assert [(r["question"], r["score"]) for r in run("page_questions", params)] == [
        ("Who coordinates vaccination?", 0.9)
    ]
    params = {"document": WHO_PATH, "page": 2, "validated_only": False, "min_score": 0.0}
    assert [(r["verdict"], r["score"]) for r in run("page_questions", params)] == [("unvalidated", None)]


@check("qa_dataset")
def _qa_dataset(run: Any, corpus: Corpus) -> None:
    rows = run("qa_dataset", {"min_score": 0.5})
    assert [(r["question"], r["document"], r["page_start"]) for r in rows] == [
        ("Who coordinates vaccination?", WHO_PATH, 1)
    ]


@check("keyword_cooccurrence")
def _keyword_cooccurrence(run: Any, corpus: Corpus) -> None:
    rows = run("keyword_cooccurrence", {"min_count": 2, "limit": 10})
    assert {"keyword": "WHO", "other": "vaccination", "chunks": 2} in rows
    assert all(r["chunks"] >= 2 for r in rows)


@check("documents_sharing_entities")
def _documents_sharing_entities(run: Any, corpus: Corpus) -> None:
    pair = {"document": UNICEF_PATH, "other": WHO_PATH, "shared": 1, "entities": ["World Health Organization"]}
    assert pair in run("documents_sharing_entities", {"min_shared": 1})
    assert pair not in run("documents_sharing_entities", {"min_shared": 2})


@check("failed_chunks")
def _failed_chunks(run: Any, corpus: Corpus) -> None:
    rows = [r for r in run("failed_chunks", {}) if r["document"] == WHO_PATH]
    assert rows == [
        {
            "document": WHO_PATH,
            "chunk": 2,
            "page_start": 3,
            "page_end": 3,
            "extractors": ["facts"],
            "errors": ["1 validation error for Facts"],
            "raw_replies": ['{"facts": [{"statement": "Mal'],
        }
    ]


@check("failed_documents")
def _failed_documents(run: Any, corpus: Corpus) -> None:
    [row] = run("failed_documents", {})
    assert row["path"] == corpus.broken and "not a PDF" in row["reason"]


@check("search_chunks")
def _search_chunks(run: Any, corpus: Corpus) -> None:
    rows = run("search_chunks", {"text": "CHLOROPHYLL", "limit": 5})
    assert rows and {r["document"] for r in rows} == {corpus.biology}
    assert all("Chlorophyll" in r["text"] and r["page_start"] == 1 for r in rows)
    assert len(run("search_chunks", {"text": "", "limit": 2})) == 2


@check("category_documents")
def _category_documents(run: Any, corpus: Corpus) -> None:
    rows = run("category_documents", {"category": "medicine & health"})  # any case
    shares = {r["document"]: r["share"] for r in rows}
    assert (shares[WHO_PATH], shares[UNICEF_PATH]) == (1.0, 1.0)
    assert all(r["category"] == "Medicine & Health" for r in rows)


@pytest.mark.parametrize("name", [p.stem for p in QUERIES])
def test_query_runs_on_the_ingested_graph(
    name: str, run: Callable[[str, dict[str, Any]], list[dict[str, Any]]], corpus: Corpus
) -> None:
    CHECKS[name](run, corpus)

"""The extractor registry: the same graph as before it, and every part of kg-etl iterating over it.

``tests/data/graph_snapshot.json`` was written by the code before the registry existed (commit ba0d475),
from a real PDF through ``pipeline.ingest`` into the real Bolt server, with scripted replies in place of a
model (replies keyed by schema and chunk, so the graph cannot depend on a model's arithmetic on this CPU).
The test ingests the same PDF with the same replies and compares every node, relationship and property.
Set ``KG_ETL_WRITE_SNAPSHOT=1`` to write the file anew, after a deliberate change of the graph model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import neo4j
import pytest

from kg_etl.config import IngestSettings
from kg_etl.extract.base import Job, OnReply, Reply
from kg_etl.graph.connection import Graph
from kg_etl.llm.pool import PooledBackend
from kg_etl.pipeline import ingest
from kg_etl.samples import make_pdf
from tests.conftest import GraphConn, graph_settings

SNAPSHOT = Path(__file__).parent / "data" / "graph_snapshot.json"

PAGES = [
    [
        "The World Health Organization (WHO) coordinates malaria surveillance in Angola.",
        "The WHO published its survey in March 2021 with the Ministry of Health.",
    ],
    [
        "Rosetta reached comet 67P in August 2014 after a ten-year journey.",
        "Its lander Philae touched down on the comet in November 2014.",
    ],
    [
        "The court ruled in 2019 that the supply contract was void.",
        "The appeal was dismissed a year later by the higher court.",
    ],
]

# By schema name, then by a word that identifies the chunk in the prompt: the reply to give.
_FACTS = {
    "WHO": [
        ("The WHO coordinates malaria surveillance in Angola.",
         ("WHO", "organization", "coordinates", "malaria surveillance", "concept")),
        ("The World Health Organization published a survey in March 2021.",
         ("World Health Organization", "organization", "published", "survey", "work")),
        ("The survey was published with the Ministry of Health.", None),
    ],
    "Rosetta": [
        ("Rosetta reached comet 67P in August 2014.", ("Rosetta", "product", "reached", "comet 67P", "location")),
        ("Philae touched down on the comet in November 2014.",
         ("Philae", "product", "touched down on", "comet 67P", "location")),
    ],
    "court": [
        ("The court ruled the supply contract void in 2019.",
         ("court", "organization", "ruled void", "supply contract", "law")),
    ],
}  # fmt: skip
_TOPICS = {
    "WHO": [[("Health", 4), ("Malaria", 5)], [("Health", 4), ("Surveillance", 3)]],
    "Rosetta": [[("Space", 4), ("Comets", 5)]],
    "court": [[("Law", 4), ("Contracts", 5)]],
}
_KEYWORDS = {"WHO": [("malaria", 0.9), ("WHO", 0.8)], "Rosetta": [("comet 67P", 0.9)], "court": [("contract", 0.7)]}
_CATEGORIES = {"WHO": ["Medicine & Health", "Science"], "Rosetta": ["Science"], "court": ["Law & Regulation"]}
_QA = {
    "WHO": [("Who coordinates malaria surveillance in Angola?", "The World Health Organization",
             "coordinates malaria surveillance in Angola")],
    "Rosetta": [("When did Rosetta reach comet 67P?", "August 2014", "Rosetta reached comet 67P in August 2014"),
                ("What is Philae?", "a lander", "Its lander Philae touched down")],
    "court": [("What did the court rule in 2019?", "that the supply contract was void",
               "the supply contract was void")],
}  # fmt: skip
_ANSWERS = {
    "Who coordinates": "the World Health Organization",
    "When did": "August 2014",
    "What is Philae": "the comet",  # a judge that disagrees: this pair is invalid
    "What did the court": "the supply contract was void",
}


def _key(prompt: str) -> str:
    """The chunk a prompt is about (its distinctive word); the document summary has none."""
    return next((key for key in ("WHO", "Rosetta", "court") if key in prompt), "")


def scripted_reply(job: Job) -> Reply:
    """The canned reply to a job, by its schema and the chunk (or question) in its prompt."""
    prompt = "\n".join(str(m.content) for m in job.messages)
    name, key = job.schema.__name__, _key(prompt)
    value: Any
    if name == "Facts":
        value = {"facts": [_fact(statement, triple) for statement, triple in _FACTS[key]]}
    elif name == "Taxonomy":
        value = {"paths": [{"nodes": [{"name": n, "importance": i} for n, i in path]} for path in _TOPICS[key]]}
    elif name == "Keywords":
        value = {"keywords": [{"term": t, "relevance": r} for t, r in _KEYWORDS[key]]}
    elif name == "Categories":
        value = {"labels": _CATEGORIES[key]}
    elif name == "Summary":
        reducing = "A summary of the" in prompt  # the document summary's prompt holds the chunk summaries
        value = {"summary": "The document summary." if reducing else f"A summary of the {key} part."}
    elif name == "QAPairs":
        value = {"pairs": [{"question": q, "answer": a, "evidence": e} for q, a, e in _QA[key]]}
    elif name == "Judgement":
        answer = next(a for start, a in _ANSWERS.items() if f"Question: {start}" in prompt)
        value = {"answerable": True, "answer": answer}
    else:
        raise AssertionError(f"no scripted reply for {name}")
    return Reply(text=json.dumps(value), prompt_tokens=len(prompt) // 4, completion_tokens=20)


def _fact(statement: str, triple: tuple[str, str, str, str, str] | None) -> dict[str, Any]:
    if triple is None:
        return {"statement": statement, "triple": None}
    keys = ("subject", "subject_type", "predicate", "object", "object_type")
    return {"statement": statement, "triple": dict(zip(keys, triple, strict=True))}


def _scripted_run(self: PooledBackend, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
    replies = [scripted_reply(job) for job in jobs]
    for i, reply in enumerate(replies):
        if on_reply is not None:
            on_reply(i, reply)
    return replies


# Properties that differ from run to run (where the file lies, when and by whom it was processed).
_VOLATILE = {"path", "owner", "heartbeat", "claimed_at", "finished_at", "updated_at", "started_at", "batches"}


def graph_snapshot(driver: neo4j.Driver) -> dict[str, Any]:
    """Every node (labels, id, properties) and relationship (type, ends, properties), in a stable order."""
    nodes = driver.execute_query("MATCH (n) RETURN labels(n) AS labels, properties(n) AS props").records
    rels = driver.execute_query(
        "MATCH (a)-[r]->(b) RETURN type(r) AS type, a.id AS start, b.id AS end, properties(r) AS props"
    ).records
    node_rows = sorted(
        ({"labels": sorted(r["labels"]), "props": _stable(r["props"])} for r in nodes),
        key=lambda row: json.dumps(row, sort_keys=True),
    )
    rel_rows = sorted(
        ({"type": r["type"], "start": r["start"], "end": r["end"], "props": _stable(r["props"])} for r in rels),
        key=lambda row: json.dumps(row, sort_keys=True),
    )
    return {"nodes": node_rows, "relationships": rel_rows}


def _stable(props: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in sorted(props.items()) if key not in _VOLATILE}


def test_the_graph_is_the_same_as_before_the_registry(
    graph_server: GraphConn,
    graph: neo4j.Driver,
    tiny_model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(PooledBackend, "run", _scripted_run)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "mixed.pdf", PAGES, title="Three Reports")
    settings = IngestSettings(model=str(tiny_model_path), chunk_tokens=110, overlap_tokens=0, batch_size=2)
    with Graph(graph_settings(graph_server)) as kg:
        report = ingest([folder], kg, settings)
    assert report.ok, report
    assert report.documents[0].chunks == 3
    snapshot = graph_snapshot(graph)
    if os.environ.get("KG_ETL_WRITE_SNAPSHOT"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(snapshot, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert snapshot["nodes"] == expected["nodes"]
    assert snapshot["relationships"] == expected["relationships"]

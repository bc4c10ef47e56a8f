"""Every Cypher statement kg-etl sends, in one place, each with example parameters.

Statements are constants: values travel only as parameters, never formatted into the text. The example
parameters document each statement's inputs and let the test suite check every statement with Neo4j's own
Cypher front-end (undeclared parameters are errors there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL", "Statement"]


@dataclass(frozen=True)
class Statement:
    """A named, parameterised Cypher statement."""

    name: str
    text: str
    example: dict[str, Any] = field(default_factory=dict)


_DOC_PROPS = {"path": "a.pdf", "name": "a.pdf", "n_pages": 1, "status": "processing"}
_CHUNK_ROW = {
    "id": "c1", "doc_id": "d1", "prev_id": None,
    "props": {"index": 0, "text": "t", "page_start": 1, "page_end": 1, "char_start": 0, "char_end": 1},
}
_FACT_ROW = {"id": "f1", "chunk_id": "c1", "props": {"text": "t", "page_start": 1, "page_end": 1}}

PING = Statement("ping", "RETURN 1 AS ok")

UPSERT_DOCUMENT = Statement(
    "upsert_document",
    """
MERGE (d:Document {id: $id})
SET d += $props
""",
    {"id": "d1", "props": _DOC_PROPS},
)

SET_DOCUMENT_STATUS = Statement(
    "set_document_status",
    """
MATCH (d:Document {id: $id})
SET d.status = $status, d.reason = $reason
""",
    {"id": "d1", "status": "done", "reason": None},
)

GET_DOCUMENT = Statement(
    "get_document",
    """
MATCH (d:Document {id: $id})
RETURN d.status AS status, d.n_chunks AS n_chunks
""",
    {"id": "d1"},
)

DONE_CHUNK_IDS = Statement(
    "done_chunk_ids",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
RETURN c.id AS id
""",
    {"doc_id": "d1"},
)

WRITE_CHUNKS = Statement(
    "write_chunks",
    """
UNWIND $rows AS row
MATCH (d:Document {id: row.doc_id})
MERGE (c:Chunk {id: row.id})
SET c += row.props
MERGE (d)-[:HAS_CHUNK]->(c)
""",
    {"rows": [_CHUNK_ROW]},
)

LINK_CHUNKS = Statement(
    "link_chunks",
    """
UNWIND $rows AS row
MATCH (prev:Chunk {id: row.prev_id})
MATCH (c:Chunk {id: row.id})
MERGE (prev)-[:NEXT_CHUNK]->(c)
""",
    {"rows": [_CHUNK_ROW]},
)

WRITE_FACTS = Statement(
    "write_facts",
    """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
MERGE (f:Fact {id: row.id})
SET f += row.props
MERGE (f)-[:FROM_CHUNK]->(c)
""",
    {"rows": [_FACT_ROW]},
)

EXPORT_FACTS = Statement(
    "export_facts",
    """
MATCH (f:Fact)-[:FROM_CHUNK]->(c:Chunk)<-[:HAS_CHUNK]-(d:Document)
WHERE f.id > $after
RETURN f.id AS id, f.text AS text, f.subject AS subject, f.predicate AS predicate, f.object AS object,
       c.id AS chunk_id, c.page_start AS page_start, c.page_end AS page_end,
       d.id AS doc_id, d.path AS doc_path, d.title AS doc_title
ORDER BY f.id
LIMIT $limit
""",
    {"after": "", "limit": 1000},
)

COUNT_LABELS = Statement(
    "count_labels",
    """
MATCH (n)
UNWIND labels(n) AS label
RETURN label, count(*) AS count
ORDER BY label
""",
)

COUNT_RELATIONSHIPS = Statement(
    "count_relationships",
    """
MATCH ()-[r]->()
RETURN type(r) AS type, count(*) AS count
ORDER BY type
""",
)

ALL: dict[str, Statement] = {
    s.name: s
    for s in (
        PING, UPSERT_DOCUMENT, SET_DOCUMENT_STATUS, GET_DOCUMENT, DONE_CHUNK_IDS, WRITE_CHUNKS, LINK_CHUNKS,
        WRITE_FACTS, EXPORT_FACTS, COUNT_LABELS, COUNT_RELATIONSHIPS,
    )
}

"""Every Cypher statement kg-etl sends, in one place, each with example parameters.

Statements are constants: values travel only as parameters, never formatted into the text, so document
text can never change a query. The example parameters document each statement's inputs and let the test
suite check every statement with Neo4j's own Cypher front-end (undeclared parameters are errors there).

The graph model (see README and cypher/schema.cypher):

    (:Document)-[:HAS_CHUNK]->(:Chunk)-[:NEXT_CHUNK]->(:Chunk)
    (:Fact)-[:FROM_CHUNK]->(:Chunk)    (:Fact)-[:MENTIONS]->(:Entity)-[:MENTIONED_IN {aliases}]->(:Chunk)
    (:Entity)-[:RELATED {predicate, fact_id, doc_id}]->(:Entity)
    (:Chunk)-[:HAS_TOPIC {importance}]->(:Topic)-[:SUBTOPIC_OF]->(:Topic)
    (:Chunk)-[:IN_CATEGORY]->(:Category)<-[:IN_CATEGORY {share}]-(:Document)
    (:Chunk)-[:HAS_KEYWORD {relevance}]->(:Keyword)
    (:Summary)-[:SUMMARIZES]->(:Chunk | :Document)
    (:Question)-[:FROM_CHUNK]->(:Chunk)
    (:SchemaNode:<Type>)-[:MENTIONED_IN]->(:Chunk)   (:SchemaNode)-[:<RELATIONSHIP> {chunk_id, doc_id}]->(:SchemaNode)

The last line is a user's schema (``--schema``): its types and relationships are the user's declared ones,
checked when the schema is loaded; their statements are built per type by ``graph.user_schema``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL", "LABELS", "PROPERTY_KEYS", "RELATIONSHIP_TYPES", "Statement"]

# The model's whole vocabulary. The Cypher checker is given it, so a statement or a Browser query that names
# anything else (a misspelt label, type or property) fails the tests; the query tests check that an ingested
# graph uses nothing outside it. Relationship types are fixed: an extracted predicate is a property of
# RELATED, never a type of its own, so the number of types cannot grow with the documents.
LABELS = ("Document", "Chunk", "Fact", "Entity", "Topic", "Category", "Keyword", "Summary", "Question", "SchemaNode")
RELATIONSHIP_TYPES = (
    "HAS_CHUNK", "NEXT_CHUNK", "FROM_CHUNK", "MENTIONS", "MENTIONED_IN", "RELATED", "HAS_TOPIC", "SUBTOPIC_OF",
    "IN_CATEGORY", "HAS_KEYWORD", "SUMMARIZES",
)  # fmt: skip
_CITATION = ("doc_id", "chunk_id", "page_start", "page_end", "model")
PROPERTY_KEYS: dict[str, tuple[str, ...]] = {
    "Document": (
        "id", "path", "name", "n_pages", "title", "author", "created", "modified", "status", "reason", "n_chunks",
        "owner", "heartbeat", "batches_done", "finished_at", "coverage",
    ),
    "Chunk": (
        "id", "doc_id", "index", "text", "page_start", "page_end", "char_start", "char_end", "n_tokens",
        "overlap_chars", "status", "failed_extractors", "failure_errors", "failure_raw", "coverage",
    ),
    "Fact": ("id", "text", "subject", "predicate", "object", "version", *_CITATION),
    "Entity": ("id", "name", "type", "aliases"),
    "SchemaNode": ("id", "schema", "type", "name"),
    "Topic": ("id", "name", "path", "level"),
    "Category": ("id", "name"),
    "Keyword": ("id", "name"),
    "Summary": ("id", "text", "kind", "version", *_CITATION),
    "Question": (
        "id", "question", "answer", "evidence", "verdict", "score", "judgement", "model_answer", "evidence_found",
        "evidence_score", "answer_overlap", "qa_version", "validate_version", "judge_model", *_CITATION,
    ),
    "MENTIONED_IN": ("aliases",),
    "RELATED": ("predicate", "fact_id", "doc_id"),
    "HAS_TOPIC": ("importance",),
    "IN_CATEGORY": ("share",),
    "HAS_KEYWORD": ("relevance",),
}  # fmt: skip


@dataclass(frozen=True)
class Statement:
    """A named, parameterised Cypher statement."""

    name: str
    text: str
    example: dict[str, Any] = field(default_factory=dict)


_DOC_PROPS = {"path": "a.pdf", "name": "a.pdf", "n_pages": 1, "status": "processing"}
_CHUNK_ROW = {
    "id": "c1",
    "doc_id": "d1",
    "prev_id": None,
    "props": {"index": 0, "text": "t", "page_start": 1, "page_end": 1, "char_start": 0, "char_end": 1},
}
_FACT_ROW = {"id": "f1", "chunk_id": "c1", "props": {"text": "t", "page_start": 1, "page_end": 1}}
_ENTITY_ROW = {"id": "e1", "chunk_id": "c1", "name": "Ada", "type": "person", "alias": "Ada"}
_RELATION_ROW = {"fact_id": "f1", "subject_id": "e1", "object_id": "e2", "predicate": "wrote", "doc_id": "d1"}
_TOPIC_ROW = {"id": "t1", "name": "Cells", "path": "Biology > Cells", "level": 2, "parent_id": "t0"}
_CHUNK_LINK_ROW = {"chunk_id": "c1", "id": "t1", "name": "x", "weight": 0.5}
_OWNED_ROW = {"id": "s1", "chunk_id": "c1", "props": {"text": "t"}}

PING = Statement("ping", "RETURN 1 AS ok")

# -- the watchdog of `kg-etl query`: a query past its time is found by its text and ended on the server ----

RUNNING_TRANSACTIONS = Statement(
    "running_transactions",
    "SHOW TRANSACTIONS YIELD transactionId, currentQuery RETURN transactionId AS id, currentQuery AS query",
)
TERMINATE_TRANSACTIONS = Statement("terminate_transactions", "TERMINATE TRANSACTIONS $ids", {"ids": ["q1-a"]})

# -- documents -------------------------------------------------------------------------------------------

UPSERT_DOCUMENT = Statement(
    "upsert_document",
    """
MERGE (d:Document {id: $id})
SET d += $props
""",
    {"id": "d1", "props": _DOC_PROPS},
)

CLAIM_DOCUMENT = Statement(
    "claim_document",
    """
MERGE (d:Document {id: $id})
ON CREATE SET d.status = 'pending'
WITH d
WHERE (d.status <> 'done' OR $reopen) AND (d.owner IS NULL OR d.owner = $owner OR d.owner IN $stale_owners
      OR d.heartbeat < $stale_before)
SET d.owner = $owner, d.heartbeat = $now, d.status = 'processing'
RETURN d.id AS id
""",
    {"id": "d1", "owner": "host:1:1", "stale_owners": [], "stale_before": 0, "now": 1, "reopen": False},
)

CLAIM_OWNER = Statement(
    "claim_owner",
    """
MATCH (d:Document {id: $id})
RETURN d.owner AS owner, d.status AS status
""",
    {"id": "d1"},
)

HEARTBEAT = Statement(
    "heartbeat",
    """
MATCH (d:Document {id: $id, owner: $owner})
SET d.heartbeat = $now, d.batches_done = coalesce(d.batches_done, 0) + 1
""",
    {"id": "d1", "owner": "host:1:1", "now": 1},
)

RELEASE_DOCUMENT = Statement(
    "release_document",
    """
MATCH (d:Document {id: $id, owner: $owner})
REMOVE d.owner
SET d.status = CASE d.status WHEN 'processing' THEN 'pending' ELSE d.status END
""",
    {"id": "d1", "owner": "host:1:1"},
)

GET_DOCUMENT = Statement(
    "get_document",
    """
MATCH (d:Document {id: $id})
RETURN d.status AS status, d.n_chunks AS n_chunks, d.coverage AS coverage
""",
    {"id": "d1"},
)

FIND_DOCUMENTS = Statement(
    "find_documents",
    """
MATCH (d:Document)
WHERE d.id = $ref OR d.path = $ref OR d.name = $ref
RETURN d.id AS id, d.path AS path, d.name AS name
ORDER BY d.path
""",
    {"ref": "a.pdf"},
)

OTHER_VERSIONS = Statement(
    "other_versions",
    """
MATCH (d:Document {path: $path})
WHERE d.id <> $id
RETURN d.id AS id
""",
    {"path": "/a.pdf", "id": "d1"},
)

DONE_CHUNK_IDS = Statement(
    "done_chunk_ids",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
RETURN c.id AS id, c.coverage AS coverage
""",
    {"doc_id": "d1"},
)

CHUNK_SUMMARIES = Statement(
    "chunk_summaries",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)<-[:SUMMARIZES]-(s:Summary)
RETURN c.index AS index, s.text AS text
ORDER BY c.index
""",
    {"doc_id": "d1"},
)

CHUNK_CATEGORIES = Statement(
    "chunk_categories",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)-[:IN_CATEGORY]->(k:Category)
RETURN c.id AS chunk_id, collect(k.name) AS labels
""",
    {"doc_id": "d1"},
)

WRITE_DOCUMENT_SUMMARY = Statement(
    "write_document_summary",
    """
MATCH (d:Document {id: $doc_id})
MERGE (s:Summary {id: $id})
SET s.text = $text, s.kind = 'document', s.doc_id = $doc_id
MERGE (s)-[:SUMMARIZES]->(d)
""",
    {"doc_id": "d1", "id": "s1", "text": "t"},
)

WRITE_DOCUMENT_CATEGORIES = Statement(
    "write_document_categories",
    """
MATCH (d:Document {id: $doc_id})
UNWIND $rows AS row
MERGE (k:Category {id: row.id})
ON CREATE SET k.name = row.name
MERGE (d)-[r:IN_CATEGORY]->(k)
SET r.share = row.weight
""",
    {"doc_id": "d1", "rows": [_CHUNK_LINK_ROW]},
)

# -- one batch of chunks and their extractions (one transaction) ------------------------------------------

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

WRITE_ENTITIES = Statement(
    "write_entities",
    """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
MERGE (e:Entity {id: row.id})
ON CREATE SET e.name = row.name, e.type = row.type, e.aliases = [row.alias]
ON MATCH SET e.aliases = CASE WHEN row.alias IN e.aliases THEN e.aliases ELSE e.aliases + row.alias END
MERGE (e)-[m:MENTIONED_IN]->(c)
ON CREATE SET m.aliases = [row.alias]
ON MATCH SET m.aliases = CASE WHEN row.alias IN m.aliases THEN m.aliases ELSE m.aliases + row.alias END
""",
    {"rows": [_ENTITY_ROW]},
)

WRITE_RELATIONS = Statement(
    "write_relations",
    """
UNWIND $rows AS row
MATCH (f:Fact {id: row.fact_id})
MATCH (s:Entity {id: row.subject_id})
MATCH (o:Entity {id: row.object_id})
MERGE (f)-[:MENTIONS]->(s)
MERGE (f)-[:MENTIONS]->(o)
MERGE (s)-[r:RELATED {fact_id: row.fact_id}]->(o)
SET r.predicate = row.predicate, r.doc_id = row.doc_id
""",
    {"rows": [_RELATION_ROW]},
)

WRITE_TOPICS = Statement(
    "write_topics",
    """
UNWIND $rows AS row
MERGE (t:Topic {id: row.id})
ON CREATE SET t.name = row.name, t.path = row.path, t.level = row.level
""",
    {"rows": [_TOPIC_ROW]},
)

LINK_TOPICS = Statement(
    "link_topics",
    """
UNWIND $rows AS row
MATCH (t:Topic {id: row.id})
MATCH (parent:Topic {id: row.parent_id})
MERGE (t)-[:SUBTOPIC_OF]->(parent)
""",
    {"rows": [_TOPIC_ROW]},
)

CHUNK_TOPICS = Statement(
    "chunk_topics",
    """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
MATCH (t:Topic {id: row.id})
MERGE (c)-[r:HAS_TOPIC]->(t)
SET r.importance = row.weight
""",
    {"rows": [_CHUNK_LINK_ROW]},
)

WRITE_CATEGORIES = Statement(
    "write_categories",
    """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
MERGE (k:Category {id: row.id})
ON CREATE SET k.name = row.name
MERGE (c)-[:IN_CATEGORY]->(k)
""",
    {"rows": [_CHUNK_LINK_ROW]},
)

WRITE_KEYWORDS = Statement(
    "write_keywords",
    """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
MERGE (k:Keyword {id: row.id})
ON CREATE SET k.name = row.name
MERGE (c)-[r:HAS_KEYWORD]->(k)
SET r.relevance = row.weight
""",
    {"rows": [_CHUNK_LINK_ROW]},
)

WRITE_SUMMARIES = Statement(
    "write_summaries",
    """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
MERGE (s:Summary {id: row.id})
SET s += row.props
MERGE (s)-[:SUMMARIZES]->(c)
""",
    {"rows": [_OWNED_ROW]},
)

WRITE_QUESTIONS = Statement(
    "write_questions",
    """
UNWIND $rows AS row
MATCH (c:Chunk {id: row.chunk_id})
MERGE (q:Question {id: row.id})
SET q += row.props
MERGE (q)-[:FROM_CHUNK]->(c)
""",
    {"rows": [_OWNED_ROW]},
)

# -- removing a document (kg-etl remove, or a changed PDF replacing its old version) ------------------------

SHARED_NODES_OF_DOCUMENT = Statement(
    "shared_nodes_of_document",
    """
MATCH (:Document {id: $id})-[:HAS_CHUNK]->(c:Chunk)
OPTIONAL MATCH (c)<-[:MENTIONED_IN]-(e:Entity)
OPTIONAL MATCH (c)-[:HAS_TOPIC]->(:Topic)-[:SUBTOPIC_OF*0..]->(t:Topic)
OPTIONAL MATCH (c)-[:HAS_KEYWORD]->(k:Keyword)
OPTIONAL MATCH (c)-[:IN_CATEGORY]->(g:Category)
OPTIONAL MATCH (c)<-[:MENTIONED_IN]-(n:SchemaNode)
RETURN collect(DISTINCT e.id) AS entities, collect(DISTINCT t.id) AS topics,
       collect(DISTINCT k.id) AS keywords, collect(DISTINCT g.id) AS categories,
       collect(DISTINCT n.id) AS schema_nodes
""",
    {"id": "d1"},
)

DELETE_DOCUMENT_RELATIONS = Statement(
    "delete_document_relations",
    """
MATCH (:Entity)-[r:RELATED {doc_id: $id}]->(:Entity)
DELETE r
""",
    {"id": "d1"},
)

# A user schema's relationships, whatever their types (declared by the user): each records its document.
DELETE_DOCUMENT_SCHEMA_RELATIONSHIPS = Statement(
    "delete_document_schema_relationships",
    """
MATCH (:SchemaNode)-[r]->(:SchemaNode)
WHERE r.doc_id = $id
DELETE r
""",
    {"id": "d1"},
)

DELETE_DOCUMENT_OWNED = Statement(
    "delete_document_owned",
    """
MATCH (:Document {id: $id})-[:HAS_CHUNK]->(:Chunk)<-[:FROM_CHUNK|SUMMARIZES]-(n)
DETACH DELETE n
""",
    {"id": "d1"},
)

DELETE_DOCUMENT = Statement(
    "delete_document",
    """
MATCH (d:Document {id: $id})
OPTIONAL MATCH (d)-[:HAS_CHUNK]->(c:Chunk)
OPTIONAL MATCH (d)<-[:SUMMARIZES]-(s:Summary)
DETACH DELETE c, s, d
""",
    {"id": "d1"},
)

DELETE_ORPHAN_ENTITIES = Statement(
    "delete_orphan_entities",
    """
UNWIND $ids AS id
MATCH (e:Entity {id: id})
WHERE NOT (e)-[:MENTIONED_IN]->(:Chunk)
DETACH DELETE e
""",
    {"ids": ["e1"]},
)

DELETE_ORPHAN_SCHEMA_NODES = Statement(
    "delete_orphan_schema_nodes",
    """
UNWIND $ids AS id
MATCH (n:SchemaNode {id: id})
WHERE NOT (n)-[:MENTIONED_IN]->(:Chunk)
DETACH DELETE n
""",
    {"ids": ["n1"]},
)

DELETE_ORPHAN_TOPICS = Statement(
    "delete_orphan_topics",
    """
UNWIND $ids AS id
MATCH (t:Topic {id: id})
WHERE NOT (:Chunk)-[:HAS_TOPIC]->(t) AND NOT (:Topic)-[:SUBTOPIC_OF]->(t)
DETACH DELETE t
""",
    {"ids": ["t1"]},
)

DELETE_ORPHAN_KEYWORDS = Statement(
    "delete_orphan_keywords",
    """
UNWIND $ids AS id
MATCH (k:Keyword {id: id})
WHERE NOT (:Chunk)-[:HAS_KEYWORD]->(k)
DETACH DELETE k
""",
    {"ids": ["k1"]},
)

DELETE_ORPHAN_CATEGORIES = Statement(
    "delete_orphan_categories",
    """
UNWIND $ids AS id
MATCH (g:Category {id: id})
WHERE NOT (:Chunk)-[:IN_CATEGORY]->(g)
DETACH DELETE g
""",
    {"ids": ["g1"]},
)

REFRESH_ENTITY_ALIASES = Statement(
    "refresh_entity_aliases",
    """
UNWIND $ids AS id
MATCH (e:Entity {id: id})-[m:MENTIONED_IN]->(:Chunk)
UNWIND coalesce(m.aliases, []) AS alias
WITH e, collect(DISTINCT alias) AS aliases
SET e.aliases = aliases, e.name = CASE WHEN e.name IN aliases THEN e.name ELSE aliases[0] END
""",
    {"ids": ["e1"]},
)

# -- reading back --------------------------------------------------------------------------------------------

# Export: documents in (path, id) order, then each document's chunks in (index, id) order, a page of chunks at
# a time with what hangs off each one. Keyset paging on those keys keeps every page O(page) to transfer and the
# order total, so two exports of one graph are identical; scoping pages to one document keeps the sort that
# the server does per page to that document's chunks, not the whole graph.

_CHUNK_PAGE = {"doc_id": "d1", "index": -1, "chunk_id": "", "limit": 250}

EXPORT_DOCUMENTS = Statement(
    "export_documents",
    """
MATCH (d:Document)
WHERE ($ids IS NULL OR d.id IN $ids) AND (d.path > $path OR (d.path = $path AND d.id > $id))
RETURN d.id AS id, d.path AS path, d.name AS name, d.title AS title, d.n_pages AS n_pages
ORDER BY d.path, d.id
LIMIT $limit
""",
    {"ids": None, "path": "", "id": "", "limit": 100},
)

EXPORT_QA_CHUNKS = Statement(
    "export_qa_chunks",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
WHERE c.index > $index OR (c.index = $index AND c.id > $chunk_id)
WITH c
ORDER BY c.index, c.id
LIMIT $limit
RETURN c.id AS chunk_id, c.index AS chunk_index, c.page_start AS page_start, c.page_end AS page_end,
       [(c)<-[:FROM_CHUNK]-(q:Question) | q {.id, .question, .answer, .evidence, .verdict, .score, .judgement,
        .model_answer, .evidence_found, .evidence_score, .answer_overlap, .model, .qa_version,
        .validate_version, .judge_model}] AS items
ORDER BY chunk_index, chunk_id
""",
    _CHUNK_PAGE,
)

EXPORT_FACT_CHUNKS = Statement(
    "export_fact_chunks",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
WHERE c.index > $index OR (c.index = $index AND c.id > $chunk_id)
WITH c
ORDER BY c.index, c.id
LIMIT $limit
RETURN c.id AS chunk_id, c.index AS chunk_index, c.page_start AS page_start, c.page_end AS page_end,
       [(c)<-[:FROM_CHUNK]-(f:Fact) | f {.id, .text, .subject, .predicate, .object, .model}] AS items
ORDER BY chunk_index, chunk_id
""",
    _CHUNK_PAGE,
)

EXPORT_TOPIC_CHUNKS = Statement(
    "export_topic_chunks",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
WHERE c.index > $index OR (c.index = $index AND c.id > $chunk_id)
WITH c
ORDER BY c.index, c.id
LIMIT $limit
RETURN c.id AS chunk_id, c.index AS chunk_index, c.page_start AS page_start, c.page_end AS page_end,
       [(c)-[r:HAS_TOPIC]->(t:Topic) | {id: t.id, name: t.name, path: t.path, level: t.level,
        importance: r.importance}] AS items
ORDER BY chunk_index, chunk_id
""",
    _CHUNK_PAGE,
)

EXPORT_KEYWORD_CHUNKS = Statement(
    "export_keyword_chunks",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
WHERE c.index > $index OR (c.index = $index AND c.id > $chunk_id)
WITH c
ORDER BY c.index, c.id
LIMIT $limit
RETURN c.id AS chunk_id, c.index AS chunk_index, c.page_start AS page_start, c.page_end AS page_end,
       [(c)-[r:HAS_KEYWORD]->(k:Keyword) | {id: k.id, name: k.name, relevance: r.relevance}] AS items
ORDER BY chunk_index, chunk_id
""",
    _CHUNK_PAGE,
)

EXPORT_SUMMARY_CHUNKS = Statement(
    "export_summary_chunks",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
WHERE c.index > $index OR (c.index = $index AND c.id > $chunk_id)
WITH c
ORDER BY c.index, c.id
LIMIT $limit
RETURN c.id AS chunk_id, c.index AS chunk_index, c.page_start AS page_start, c.page_end AS page_end,
       [(c)<-[:SUMMARIZES]-(s:Summary) | s {.id, .text, .model}] AS items
ORDER BY chunk_index, chunk_id
""",
    _CHUNK_PAGE,
)

# A user schema's nodes named in each chunk, with their properties and the relationships that chunk stated.
EXPORT_SCHEMA_CHUNKS = Statement(
    "export_schema_chunks",
    """
MATCH (:Document {id: $doc_id})-[:HAS_CHUNK]->(c:Chunk)
WHERE c.index > $index OR (c.index = $index AND c.id > $chunk_id)
WITH c
ORDER BY c.index, c.id
LIMIT $limit
RETURN c.id AS chunk_id, c.index AS chunk_index, c.page_start AS page_start, c.page_end AS page_end,
       [(c)<-[:MENTIONED_IN]-(n:SchemaNode) | n {.id, .schema, .type, .name, properties: properties(n),
        relationships: [(n)-[r]->(m:SchemaNode) WHERE r.chunk_id = c.id |
                        {type: type(r), target_id: m.id, target: m.name, target_type: m.type}]}] AS items
ORDER BY chunk_index, chunk_id
""",
    _CHUNK_PAGE,
)

EXPORT_DOCUMENT_SUMMARIES = Statement(
    "export_document_summaries",
    """
MATCH (:Document {id: $doc_id})<-[:SUMMARIZES]-(s:Summary)
RETURN s.id AS id, s.text AS text, s.model AS model
ORDER BY s.id
""",
    {"doc_id": "d1"},
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

# -- kg-etl view and the graph export (graphml, cypher, json-graph) ---------------------------------------------
# One statement per label, the label taken from LABELS (never from data), so that every lookup by id uses that
# label's uniqueness index. Each relationship is one node's outgoing one, with its properties: the edges of a
# set of nodes are the outgoing ones of its nodes that end inside it. A node of a user schema is named by
# SchemaNode, not by its declared type (a label of the user's, which labels(m)[0] may return).


def _by_label(name: str, text: str, example: dict[str, Any]) -> dict[str, Statement]:
    return {label: Statement(f"{name}_{label.lower()}", text.replace("{label}", label), example) for label in LABELS}


VIEW_NODES = _by_label(
    "view_nodes",
    """
UNWIND $ids AS id
MATCH (n:{label} {id: id})
RETURN n.id AS id, properties(n) AS props,
       [(n)-[r]->(m) | {type: type(r), label: CASE WHEN m:SchemaNode THEN 'SchemaNode' ELSE labels(m)[0] END,
                        id: m.id, doc_id: m.doc_id, props: properties(r)}] AS outgoing,
       [(n)<-[r]-(m) | {type: type(r), label: CASE WHEN m:SchemaNode THEN 'SchemaNode' ELSE labels(m)[0] END,
                        id: m.id, doc_id: m.doc_id}] AS incoming
""",
    {"ids": ["d1"]},
)

GRAPH_PAGE = _by_label(
    "graph_page",
    """
MATCH (n:{label})
WHERE n.id > $after
WITH n
ORDER BY n.id
LIMIT $limit
RETURN n.id AS id, properties(n) AS props,
       [(n)-[r]->(m) | {type: type(r), label: CASE WHEN m:SchemaNode THEN 'SchemaNode' ELSE labels(m)[0] END,
                        id: m.id, props: properties(r)}] AS outgoing
ORDER BY id
""",
    {"after": "", "limit": 500},
)

VIEW_DOCUMENTS = Statement(
    "view_documents",
    """
MATCH (d:Document)
RETURN d.id AS id
ORDER BY d.path, d.id
LIMIT $limit
""",
    {"limit": 1000},
)

FIND_ENTITIES = Statement(
    "find_entities",
    """
MATCH (e:Entity)
WHERE e.id = $ref OR toLower(e.name) = toLower($ref) OR any(alias IN e.aliases WHERE toLower(alias) = toLower($ref))
RETURN e.id AS id
ORDER BY e.name, e.id
""",
    {"ref": "Ada"},
)

FIND_TOPICS = Statement(
    "find_topics",
    """
MATCH (t:Topic)
WHERE t.id = $ref OR toLower(t.path) = toLower($ref) OR toLower(t.name) = toLower($ref)
RETURN t.id AS id
ORDER BY t.path, t.id
""",
    {"ref": "Biology > Cells"},
)

TOPIC_ANCESTORS = Statement(
    "topic_ancestors",
    """
UNWIND $ids AS id
MATCH (:Topic {id: id})-[:SUBTOPIC_OF*1..]->(a:Topic)
RETURN id, collect(DISTINCT a.id) AS ancestors
""",
    {"ids": ["t1"]},
)

CHUNK_TEXTS = Statement(
    "chunk_texts",
    """
UNWIND $ids AS id
MATCH (c:Chunk {id: id})
OPTIONAL MATCH (d:Document)-[:HAS_CHUNK]->(c)
RETURN c.id AS id, c.text AS text, c.index AS index, c.page_start AS page_start, c.page_end AS page_end,
       d.id AS doc_id, d.name AS doc_name
""",
    {"ids": ["c1"]},
)

# Every statement above, by name: built from the module so none can be forgotten.
ALL: dict[str, Statement] = {
    s.name: s
    for value in list(globals().values())
    for s in (value.values() if isinstance(value, dict) else [value])
    if isinstance(s, Statement)
}

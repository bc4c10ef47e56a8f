"""A user schema's results in the graph: one statement per declared node type and relationship type.

Cypher cannot take a label or a relationship type as a parameter, so these statements are built here, one
per type the schema declares, with the name in backticks. Names come only from the loaded schema, which
checked them (``extract.schema``: identifiers, none of kg-etl's own), and each is checked again here
against that schema before it is written into a statement; values still travel only as parameters.

    (:SchemaNode:<Type> {id, schema, type, name, ...its properties})-[:MENTIONED_IN]->(:Chunk)
    (:SchemaNode)-[:<RELATIONSHIP> {chunk_id, doc_id, schema}]->(:SchemaNode)

A node's id is its schema, type and normalised key (``resolve.name_key``), so the same thing named in many
chunks or documents is one node, cited by every chunk that names it; a relationship is one per chunk that
states it, and records its document, so removing the document removes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kg_etl.errors import KgEtlError
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.schema import SCHEMA_EXTRACTOR, GraphSchema, node_key
from kg_etl.graph import statements as st
from kg_etl.graph.resolve import name_key
from kg_etl.graph.rows import Row, RowBuilder, Rows
from kg_etl.models import Chunk, content_id

__all__ = ["node_statement", "relationship_statement", "schema_node_id", "schema_rows", "statements_for"]

_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")


def _checked(name: str, declared: Sequence[str], what: str) -> str:
    """``name`` quoted for Cypher, once it is known to be one of the schema's declared, well-formed names."""
    if name not in declared or not _IDENTIFIER.match(name):
        raise KgEtlError(f"{what} {name!r} is not declared by the schema: refusing to write it into Cypher")
    return f"`{name}`"


def node_statement(schema: GraphSchema, label: str) -> st.Statement:
    """MERGE the nodes of one declared type and link each to the chunk that names it.

    Both labels are in the MERGE, not added by a later SET: ArcadeDB gives a node a new type when a label is
    added, which breaks the uniqueness constraint on SchemaNode ids. A node's type is part of its id, so it
    never changes.
    """
    quoted = _checked(label, schema.labels(), "node type")
    return st.Statement(
        f"write_schema_nodes_{label}",
        f"""
UNWIND $rows AS row
MATCH (c:Chunk {{id: row.chunk_id}})
MERGE (n:SchemaNode:{quoted} {{id: row.id}})
ON CREATE SET n.schema = row.schema, n.type = row.type, n.name = row.name, n += row.key
SET n += row.props
MERGE (n)-[:MENTIONED_IN]->(c)
""",
        {
            "rows": [
                {
                    "id": "n1",
                    "chunk_id": "c1",
                    "schema": schema.name,
                    "type": label,
                    "name": "x",
                    "key": {},
                    "props": {},
                }
            ]
        },
    )


def relationship_statement(schema: GraphSchema, kind: str) -> st.Statement:
    """MERGE the relationships of one declared type, one per chunk that states it."""
    quoted = _checked(kind, schema.relationship_types(), "relationship type")
    return st.Statement(
        f"write_schema_relationships_{kind}",
        f"""
UNWIND $rows AS row
MATCH (a:SchemaNode {{id: row.source_id}})
MATCH (b:SchemaNode {{id: row.target_id}})
MERGE (a)-[r:{quoted} {{chunk_id: row.chunk_id}}]->(b)
SET r.doc_id = row.doc_id, r.schema = row.schema
""",
        {"rows": [{"source_id": "n1", "target_id": "n2", "chunk_id": "c1", "doc_id": "d1", "schema": schema.name}]},
    )


def statements_for(schema: GraphSchema) -> list[st.Statement]:
    """Every statement a run with ``schema`` may send for it (the tests lint each one)."""
    return [node_statement(schema, label) for label in schema.labels()] + [
        relationship_statement(schema, kind) for kind in schema.relationship_types()
    ]


def schema_node_id(schema: GraphSchema, label: str, key: str) -> str:
    """The same schema, type and (normalised) key: the same node, across chunks and documents."""
    return content_id("schema", schema.name, label, name_key(key))


def schema_rows(schema: GraphSchema) -> RowBuilder:
    """The row builder for ``schema``'s extractor: nodes by type, then relationships by type."""

    def build(batch: Sequence[ChunkExtraction], model: str | None) -> Rows:
        nodes: dict[str, list[Row]] = {label: [] for label in schema.labels()}
        links: dict[str, list[Row]] = {kind: [] for kind in schema.relationship_types()}
        for extraction in batch:
            result = extraction.results.get(SCHEMA_EXTRACTOR)
            if result is not None:
                reply = result.model_dump()
                _add_nodes(schema, extraction.chunk, reply.get("nodes", []), nodes)
                _add_links(schema, extraction.chunk, reply, links)
        return [(node_statement(schema, label), rows) for label, rows in nodes.items()] + [
            (relationship_statement(schema, kind), rows) for kind, rows in links.items()
        ]

    return build


def _add_nodes(schema: GraphSchema, chunk: Chunk, replied: list[dict[str, Any]], into: dict[str, list[Row]]) -> None:
    for node in replied:
        label, key = str(node["type"]), node_key(schema, node)
        key_name = schema.nodes[label].key
        # The key names the node as the chunk that created it wrote it; later chunks' forms do not rename it.
        props = {name: value for name, value in node.items() if name not in ("type", key_name) and value is not None}
        into[label].append(
            {
                "id": schema_node_id(schema, label, key),
                "chunk_id": chunk.id,
                "schema": schema.name,
                "type": label,
                "name": key,
                "key": {key_name: key},
                "props": props,
            }
        )


def _add_links(schema: GraphSchema, chunk: Chunk, reply: dict[str, Any], into: dict[str, list[Row]]) -> None:
    """Each relationship between the nodes of its reply (the reply model already dropped any other)."""
    named = {(str(n["type"]), name_key(node_key(schema, n))): node_key(schema, n) for n in reply.get("nodes", [])}
    declared = {rel.type: rel for rel in schema.relationships}
    for link in reply.get("relationships", []):
        rel = declared[str(link["type"])]
        ends = [
            next((schema_node_id(schema, kind, named[(kind, name_key(end))]) for kind in kinds
                  if (kind, name_key(end)) in named), None)
            for end, kinds in ((link["source"], rel.source), (link["target"], rel.target))
        ]  # fmt: skip
        if ends[0] is None or ends[1] is None:  # cannot be: the reply model kept only links between its nodes
            continue
        into[rel.type].append(
            {
                "source_id": ends[0],
                "target_id": ends[1],
                "chunk_id": chunk.id,
                "doc_id": chunk.doc_id,
                "schema": schema.name,
            }
        )

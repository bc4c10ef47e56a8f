"""Batched, idempotent writes: one transaction per batch of chunks, ``UNWIND $rows ... MERGE`` on content ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import neo4j

from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.facts import Facts
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph
from kg_etl.models import Chunk, DocumentMeta, content_id

__all__ = ["DocStatus", "GraphWriter", "chunk_row", "fact_rows"]


class DocStatus:
    """Values of ``Document.status``: what a rerun does with the document."""

    PROCESSING = "processing"  # started; a rerun resumes it at its first chunk not yet in the graph
    DONE = "done"  # complete; a rerun skips it without reading the model or the graph further
    FAILED = "failed"  # unreadable (reason says why); a rerun tries it again


class GraphWriter:
    """Writes documents, chunks and their extractions."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def document_status(self, doc_id: str) -> str | None:
        rows = self.graph.read_rows(st.GET_DOCUMENT, id=doc_id)
        return str(rows[0]["status"]) if rows else None

    def upsert_document(self, meta: DocumentMeta, status: str, reason: str | None = None, **extra: Any) -> None:
        props = meta.model_dump(exclude={"id"}) | {"status": status, "reason": reason} | extra
        self.graph.run(st.UPSERT_DOCUMENT, id=meta.id, props=props)

    def set_status(self, doc_id: str, status: str, reason: str | None = None) -> None:
        self.graph.run(st.SET_DOCUMENT_STATUS, id=doc_id, status=status, reason=reason)

    def done_chunk_ids(self, doc_id: str) -> set[str]:
        return {str(r["id"]) for r in self.graph.read_rows(st.DONE_CHUNK_IDS, doc_id=doc_id)}

    def write_batch(self, batch: Sequence[ChunkExtraction], prev_chunk_id: str | None, model: str) -> None:
        """One batch in one transaction: its chunks, their links and their extractions, or nothing."""
        chunk_rows = []
        prev = prev_chunk_id
        for extraction in batch:
            chunk_rows.append(chunk_row(extraction, prev))
            prev = extraction.chunk.id
        facts = [row for e in batch for row in fact_rows(e, model)]

        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(st.WRITE_CHUNKS.text, rows=chunk_rows).consume()
            tx.run(st.LINK_CHUNKS.text, rows=[r for r in chunk_rows if r["prev_id"]]).consume()
            if facts:
                tx.run(st.WRITE_FACTS.text, rows=facts).consume()

        self.graph.write(work)


def chunk_row(extraction: ChunkExtraction, prev_id: str | None) -> dict[str, Any]:
    """The ``WRITE_CHUNKS`` row of a chunk: provenance, text, and any extraction failures."""
    chunk = extraction.chunk
    failures = extraction.failures
    props = chunk.model_dump(exclude={"id", "doc_id"}) | {
        "status": "failed" if failures else "done",
        "failed_extractors": [f.extractor for f in failures],
        "failure_errors": [f.error for f in failures],
        "failure_raw": [f.raw for f in failures],
    }
    return {"id": chunk.id, "doc_id": chunk.doc_id, "prev_id": prev_id, "props": props}


def fact_rows(extraction: ChunkExtraction, model: str) -> list[dict[str, Any]]:
    """``WRITE_FACTS`` rows: one per fact, id from the chunk and the statement."""
    result = extraction.results.get("facts")
    if not isinstance(result, Facts):
        return []
    chunk: Chunk = extraction.chunk
    rows = []
    for fact in result.facts:
        triple = fact.triple
        props = {
            "text": fact.statement,
            "subject": triple.subject if triple else None,
            "predicate": triple.predicate if triple else None,
            "object": triple.object if triple else None,
            "page_start": chunk.page_start,
            "page_end": chunk.page_end,
            "model": model,
        }
        rows.append({"id": content_id(chunk.id, "fact", fact.statement), "chunk_id": chunk.id, "props": props})
    return rows

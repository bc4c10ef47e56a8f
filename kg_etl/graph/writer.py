"""Batched, idempotent writes: one transaction per batch of chunks, ``UNWIND $rows ... MERGE`` on content ids.

Rows are built from the pydantic extraction results by each extractor's row builder (``graph.rows``, named by
the extractor registry); the Cypher is in ``statements``. Ids are content hashes, so writing the same batch
twice changes nothing, and a crash between batches leaves only whole batches behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import neo4j

from kg_etl.errors import GraphError
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.categories import document_categories
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph
from kg_etl.graph.resolve import term_id
from kg_etl.graph.rows import Row, RowBuilder, Rows, chunk_rows
from kg_etl.models import DocumentMeta, content_id
from kg_etl.registry import builtin_row_builders

__all__ = ["DocStatus", "GraphWriter", "batch_rows"]


class DocStatus:
    """Values of ``Document.status``: what a rerun does with the document."""

    PROCESSING = "processing"  # started; a rerun resumes it at its first chunk not yet in the graph
    DONE = "done"  # complete; a rerun skips it without loading the model
    FAILED = "failed"  # unreadable (reason says why); a rerun tries it again


class GraphWriter:
    """Writes documents, chunks and their extractions; removes documents without leaving orphans."""

    def __init__(self, graph: Graph, rows: Sequence[RowBuilder] | None = None) -> None:
        """``rows``: the row builders of the extractors whose results it writes (default: the built-in ones)."""
        self.graph = graph
        self.rows = list(rows) if rows is not None else builtin_row_builders()

    # -- documents ---------------------------------------------------------------------------------------

    def document_status(self, doc_id: str) -> str | None:
        return self.document_state(doc_id)[0]

    def document_state(self, doc_id: str) -> tuple[str | None, list[str]]:
        """The document's status, and the extractions (name@version@model) its ``done`` covers."""
        rows = self.graph.read_rows(st.GET_DOCUMENT, id=doc_id)
        if not rows:
            return None, []
        return str(rows[0]["status"]), [str(c) for c in rows[0]["coverage"] or []]

    def upsert_document(self, meta: DocumentMeta, status: str, reason: str | None = None, **extra: Any) -> None:
        props = meta.model_dump(exclude={"id"}) | {"status": status, "reason": reason} | extra
        self.graph.run(st.UPSERT_DOCUMENT, id=meta.id, props=props)

    def claim(self, meta: DocumentMeta, owner: str, stale: Callable[[str], bool], *, reopen: bool = False) -> bool:
        """Take a document for this process, unless it is done (and not ``reopen``) or another live process holds it.

        Two ingests on one folder each claim documents in a transaction, so no document is processed twice
        at once. A claim whose owner is gone (``stale(owner)``, e.g. a killed process on this host) or whose
        heartbeat is older than ``CLAIM_TIMEOUT_S`` is taken over. ``reopen`` takes a done document whose
        extractions do not cover what this run asks for.
        """

        def work(tx: neo4j.ManagedTransaction) -> bool:
            current = tx.run(st.CLAIM_OWNER.text, id=meta.id).single()
            holder = current["owner"] if current is not None else None
            now = time.time()
            claimed = tx.run(
                st.CLAIM_DOCUMENT.text,
                id=meta.id,
                owner=owner,
                now=now,
                stale_owners=[holder] if holder and holder != owner and stale(holder) else [],
                stale_before=now - CLAIM_TIMEOUT_S,
                reopen=reopen,
            ).single()
            if claimed is not None:
                props = meta.model_dump(exclude={"id"}) | {"status": DocStatus.PROCESSING, "reason": None}
                tx.run(st.UPSERT_DOCUMENT.text, id=meta.id, props=props).consume()
            return claimed is not None

        try:
            return self.graph.write(work)
        except GraphError:
            # Two processes creating the same Document at once: the loser breaks the uniqueness constraint.
            # Asking again sees the winner's claim.
            return self.graph.write(work)

    def release(self, doc_id: str, owner: str) -> None:
        """Give up this process's claim; a document it was processing goes back to ``pending``."""
        self.graph.run(st.RELEASE_DOCUMENT, id=doc_id, owner=owner)

    def done_chunk_ids(self, doc_id: str, coverage: Collection[str] = ()) -> set[str]:
        """The document's chunks in the graph whose extractions cover ``coverage`` (name@version@model each)."""
        wanted = set(coverage)
        rows = self.graph.read_rows(st.DONE_CHUNK_IDS, doc_id=doc_id)
        return {str(r["id"]) for r in rows if wanted <= set(r["coverage"] or [])}

    def chunk_summaries(self, doc_id: str) -> dict[int, str]:
        """The document's chunk summaries by chunk index, in order."""
        return {int(r["index"]): str(r["text"]) for r in self.graph.read_rows(st.CHUNK_SUMMARIES, doc_id=doc_id)}

    def write_document_summary(self, doc_id: str, text: str) -> None:
        self.graph.run(st.WRITE_DOCUMENT_SUMMARY, doc_id=doc_id, id=content_id(doc_id, "summary"), text=text)

    def write_document_categories(self, doc_id: str) -> list[tuple[str, float]]:
        """The document's categories from its chunks' votes; returns (label, share of chunks)."""
        votes = [r["labels"] for r in self.graph.read_rows(st.CHUNK_CATEGORIES, doc_id=doc_id)]
        ranked = document_categories(votes)
        rows = [{"id": term_id("category", label), "name": label, "weight": share} for label, share in ranked]
        if rows:
            self.graph.run(st.WRITE_DOCUMENT_CATEGORIES, doc_id=doc_id, rows=rows)
        return ranked

    def other_versions(self, meta: DocumentMeta) -> list[str]:
        """Ids of older documents at the same path: a changed PDF replaces them."""
        return [str(r["id"]) for r in self.graph.read_rows(st.OTHER_VERSIONS, path=meta.path, id=meta.id)]

    def find_documents(self, ref: str) -> list[Row]:
        """Documents whose id, path or file name is ``ref``."""
        return self.graph.read_rows(st.FIND_DOCUMENTS, ref=ref)

    def remove_document(self, doc_id: str) -> None:
        """Delete a document, its chunks and what only they hold, in one transaction.

        Entities, topics, keywords and categories that other documents still use are kept.
        """

        def work(tx: neo4j.ManagedTransaction) -> None:
            shared = tx.run(st.SHARED_NODES_OF_DOCUMENT.text, id=doc_id).single()
            for statement in (
                st.DELETE_DOCUMENT_RELATIONS,
                st.DELETE_DOCUMENT_SCHEMA_RELATIONSHIPS,
                st.DELETE_DOCUMENT_OWNED,
                st.DELETE_DOCUMENT,
            ):
                tx.run(statement.text, id=doc_id).consume()
            if shared is None:
                return
            tx.run(st.DELETE_ORPHAN_ENTITIES.text, ids=shared["entities"]).consume()
            # A surface form that only the removed document used is no longer an alias.
            tx.run(st.REFRESH_ENTITY_ALIASES.text, ids=shared["entities"]).consume()
            tx.run(st.DELETE_ORPHAN_KEYWORDS.text, ids=shared["keywords"]).consume()
            tx.run(st.DELETE_ORPHAN_CATEGORIES.text, ids=shared["categories"]).consume()
            tx.run(st.DELETE_ORPHAN_SCHEMA_NODES.text, ids=shared["schema_nodes"]).consume()
            # A topic is only an orphan once its subtopics are gone: one sweep per possible path level.
            for _ in range(_MAX_TOPIC_DEPTH):
                tx.run(st.DELETE_ORPHAN_TOPICS.text, ids=shared["topics"]).consume()

        self.graph.write(work)

    # -- batches ------------------------------------------------------------------------------------------

    def write_batch(
        self,
        batch: Sequence[ChunkExtraction],
        prev_chunk_id: str | None,
        model: str | None = None,
        owner: str | None = None,
        coverage: Sequence[str] = (),
    ) -> None:
        """One batch in one transaction: its chunks, their links and their extractions, or nothing.

        Each result cites the model that made it (``ChunkExtraction.models``; ``model`` where none is named).
        With ``owner``, the document's claim heartbeat and batch count move in the same transaction. Each chunk
        records ``coverage``, the extractions (name@version@model) it was written with.
        """
        rows = batch_rows(batch, prev_chunk_id, model, coverage, self.rows)

        def work(tx: neo4j.ManagedTransaction) -> None:
            for statement, statement_rows in rows:
                if statement_rows:
                    tx.run(statement.text, rows=statement_rows).consume()
            if owner is not None and batch:
                tx.run(st.HEARTBEAT.text, id=batch[0].chunk.doc_id, owner=owner, now=time.time()).consume()

        self.graph.write(work)


_MAX_TOPIC_DEPTH = 4  # TopicPath.nodes max_length
# A claim not renewed for this long is abandoned: a batch of ten chunks on a slow CPU can take ~10 minutes.
CLAIM_TIMEOUT_S = 30 * 60


def batch_rows(
    batch: Sequence[ChunkExtraction],
    prev_chunk_id: str | None,
    model: str | None = None,
    coverage: Sequence[str] = (),
    builders: Sequence[RowBuilder] | None = None,
) -> Rows:
    """Every statement of a batch with its rows, in dependency order (nodes before their links).

    The chunks come first, then each extractor's rows in the registry's order (default: the built-in ones).
    """
    rows = chunk_rows(batch, prev_chunk_id, coverage)
    for build in builders if builders is not None else builtin_row_builders():
        rows += build(batch, model)
    return rows

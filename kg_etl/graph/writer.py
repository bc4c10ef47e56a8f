"""Batched, idempotent writes: one transaction per batch of chunks, ``UNWIND $rows ... MERGE`` on content ids.

Rows are built from the pydantic extraction results here; the Cypher is in ``statements``. Ids are content
hashes, so writing the same batch twice changes nothing, and a crash between batches leaves only whole
batches behind.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import neo4j
from pydantic import BaseModel

from kg_etl.errors import GraphError
from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.categories import document_categories
from kg_etl.extract.facts import FACTS, Facts
from kg_etl.extract.keywords import Keywords
from kg_etl.extract.qa import QA, QAPairs
from kg_etl.extract.run import Validations
from kg_etl.extract.summary import SUMMARY, Summary
from kg_etl.extract.taxonomy import Taxonomy
from kg_etl.extract.validate import VALIDATE
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph
from kg_etl.graph.resolve import entity_id, name_key, resolve_acronyms, term_id, topic_id
from kg_etl.models import Chunk, DocumentMeta, content_id

__all__ = ["DocStatus", "GraphWriter", "batch_rows"]

Row = dict[str, Any]


class DocStatus:
    """Values of ``Document.status``: what a rerun does with the document."""

    PROCESSING = "processing"  # started; a rerun resumes it at its first chunk not yet in the graph
    DONE = "done"  # complete; a rerun skips it without loading the model
    FAILED = "failed"  # unreadable (reason says why); a rerun tries it again


class GraphWriter:
    """Writes documents, chunks and their extractions; removes documents without leaving orphans."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

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
            for statement in (st.DELETE_DOCUMENT_RELATIONS, st.DELETE_DOCUMENT_OWNED, st.DELETE_DOCUMENT):
                tx.run(statement.text, id=doc_id).consume()
            if shared is None:
                return
            tx.run(st.DELETE_ORPHAN_ENTITIES.text, ids=shared["entities"]).consume()
            # A surface form that only the removed document used is no longer an alias.
            tx.run(st.REFRESH_ENTITY_ALIASES.text, ids=shared["entities"]).consume()
            tx.run(st.DELETE_ORPHAN_KEYWORDS.text, ids=shared["keywords"]).consume()
            tx.run(st.DELETE_ORPHAN_CATEGORIES.text, ids=shared["categories"]).consume()
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
        rows = batch_rows(batch, prev_chunk_id, model, coverage)

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
    batch: Sequence[ChunkExtraction], prev_chunk_id: str | None, model: str | None = None, coverage: Sequence[str] = ()
) -> list[tuple[st.Statement, list[Row]]]:
    """Every statement of a batch with its rows, in dependency order (nodes before their links)."""
    chunks, links = _chunk_rows(batch, prev_chunk_id, coverage)
    facts, entities, relations = _fact_rows(batch, model)
    topics, parents, chunk_topics = _topic_rows(batch)
    return [
        (st.WRITE_CHUNKS, chunks),
        (st.LINK_CHUNKS, links),
        (st.WRITE_FACTS, facts),
        (st.WRITE_ENTITIES, entities),
        (st.WRITE_RELATIONS, relations),
        (st.WRITE_TOPICS, topics),
        (st.LINK_TOPICS, parents),
        (st.CHUNK_TOPICS, chunk_topics),
        (st.WRITE_CATEGORIES, _category_rows(batch)),
        (st.WRITE_KEYWORDS, _keyword_rows(batch)),
        (st.WRITE_SUMMARIES, _summary_rows(batch, model)),
        (st.WRITE_QUESTIONS, _question_rows(batch, model)),
    ]


def _results(batch: Iterable[ChunkExtraction], name: str, kind: type[BaseModel]) -> Iterable[tuple[Chunk, Any]]:
    for extraction in batch:
        result = extraction.results.get(name)
        if isinstance(result, kind):
            yield extraction.chunk, result


def _chunk_rows(
    batch: Sequence[ChunkExtraction], prev: str | None, coverage: Sequence[str]
) -> tuple[list[Row], list[Row]]:
    rows = []
    for extraction in batch:
        chunk, failures = extraction.chunk, extraction.failures
        props = chunk.model_dump(exclude={"id", "doc_id"}) | {
            "doc_id": chunk.doc_id,
            "status": "failed" if failures else "done",
            "failed_extractors": [f.extractor for f in failures],
            "failure_errors": [f.error for f in failures],
            "failure_raw": [f.raw for f in failures],
            "coverage": list(coverage),
        }
        rows.append({"id": chunk.id, "doc_id": chunk.doc_id, "prev_id": prev, "props": props})
        prev = chunk.id
    return rows, [r for r in rows if r["prev_id"]]


def _model(extraction: ChunkExtraction, name: str, default: str | None) -> str | None:
    return extraction.models.get(name, default)


def _cite(chunk: Chunk, model: str | None) -> Row:
    return {
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
        "page_start": chunk.page_start,
        "page_end": chunk.page_end,
        "model": model,
    }


def _fact_rows(batch: Sequence[ChunkExtraction], model: str | None) -> tuple[list[Row], list[Row], list[Row]]:
    facts: list[Row] = []
    entities: list[Row] = []
    relations: list[Row] = []
    found = list(_results(batch, "facts", Facts))
    made_by = {e.chunk.id: _model(e, "facts", model) for e in batch}
    named = [(_clean(t.subject), t.subject_type) for _, r in found for f in r.facts if (t := f.triple)]
    named += [(_clean(t.object), t.object_type) for _, r in found for f in r.facts if (t := f.triple)]
    acronyms = resolve_acronyms(named)
    # An entity is named after its most frequent surface form in the batch (ties: the first), so that
    # "the WHO's" or "WORLD HEALTH ORGANIZATION" seen once does not name it; an acronym's entity is named
    # after its full name. The name is set when the entity is created: later batches add aliases only.
    forms: dict[tuple[str, str], Counter[str]] = {}
    for name, kind in named:
        forms.setdefault((kind, name_key(name)), Counter())[name] += 1

    def entity(chunk: Chunk, raw: str, kind: str) -> str:
        name = _clean(raw)
        key = name_key(name)
        canonical = forms[(kind, acronyms.get((kind, key), key))].most_common(1)[0][0]
        row = {"id": entity_id(canonical, kind), "chunk_id": chunk.id, "name": canonical, "type": kind, "alias": name}
        entities.append(row)
        return str(row["id"])

    for chunk, result in found:
        for fact in result.facts:
            fact_id = content_id(chunk.id, "fact", fact.statement)
            t = fact.triple
            props = _cite(chunk, made_by[chunk.id]) | {
                "text": fact.statement,
                "subject": t.subject if t else None,
                "predicate": t.predicate if t else None,
                "object": t.object if t else None,
                "version": FACTS.version,
            }
            facts.append({"id": fact_id, "chunk_id": chunk.id, "props": props})
            if t is not None:
                relations.append(
                    {
                        "fact_id": fact_id,
                        "subject_id": entity(chunk, t.subject, t.subject_type),
                        "object_id": entity(chunk, t.object, t.object_type),
                        "predicate": t.predicate.strip().lower(),
                        "doc_id": chunk.doc_id,
                    }
                )
    return facts, entities, relations


def _clean(name: str) -> str:
    """A name as stored (display name, alias): its words joined by single spaces."""
    return " ".join(name.split())


def _topic_rows(batch: Sequence[ChunkExtraction]) -> tuple[list[Row], list[Row], list[Row]]:
    topics: dict[str, Row] = {}
    links: dict[tuple[str, str], Row] = {}
    for chunk, result in _results(batch, "taxonomy", Taxonomy):
        for path in result.paths:
            names = [node.name.strip() for node in path.nodes]
            parent = None
            for level, node in enumerate(path.nodes, start=1):
                tid = topic_id(names[:level])
                topics.setdefault(
                    tid,
                    {
                        "id": tid,
                        "name": names[level - 1],
                        "path": " > ".join(names[:level]),
                        "level": level,
                        "parent_id": parent,
                    },
                )
                key = (chunk.id, tid)
                best = max(node.importance, links[key]["weight"]) if key in links else node.importance
                links[key] = {"chunk_id": chunk.id, "id": tid, "name": names[level - 1], "weight": best}
                parent = tid
    rows = list(topics.values())
    return rows, [r for r in rows if r["parent_id"]], list(links.values())


def _category_rows(batch: Sequence[ChunkExtraction]) -> list[Row]:
    return [
        {"chunk_id": chunk.id, "id": term_id("category", label), "name": label, "weight": 1.0}
        for chunk, result in _results(batch, "categories", BaseModel)
        for label in dict.fromkeys(getattr(result, "labels", []))
    ]


def _keyword_rows(batch: Sequence[ChunkExtraction]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for chunk, result in _results(batch, "keywords", Keywords):
        for keyword in result.keywords:
            kid = term_id("keyword", keyword.term)
            row = rows.setdefault(
                (chunk.id, kid),
                {"chunk_id": chunk.id, "id": kid, "name": keyword.term.strip(), "weight": keyword.relevance},
            )
            row["weight"] = max(row["weight"], keyword.relevance)
    return list(rows.values())


def _summary_rows(batch: Sequence[ChunkExtraction], model: str | None) -> list[Row]:
    made_by = {e.chunk.id: _model(e, "summary", model) for e in batch}
    return [
        {
            "id": content_id(chunk.id, "summary"),
            "chunk_id": chunk.id,
            "props": _cite(chunk, made_by[chunk.id])
            | {"text": result.summary, "kind": "chunk", "version": SUMMARY.version},
        }
        for chunk, result in _results(batch, "summary", Summary)
    ]


def _question_rows(batch: Sequence[ChunkExtraction], model: str | None) -> list[Row]:
    rows = []
    for extraction in batch:
        pairs = extraction.results.get("qa")
        if not isinstance(pairs, QAPairs):
            continue
        checks = extraction.results.get("validation")
        verdicts = checks.items if isinstance(checks, Validations) else [None] * len(pairs.pairs)
        chunk = extraction.chunk
        for pair, verdict in zip(pairs.pairs, verdicts, strict=True):
            props = _cite(chunk, _model(extraction, "qa", model)) | pair.model_dump()
            props |= {"verdict": "unvalidated", "score": None, "judge_model": None}
            props |= {"qa_version": QA.version, "validate_version": VALIDATE.version if verdict else None}
            if verdict is not None:
                props |= {
                    "verdict": verdict.verdict,
                    "score": verdict.score,
                    "judgement": verdict.judgement,
                    "model_answer": verdict.model_answer,
                    "evidence_found": verdict.evidence_found,
                    "evidence_score": verdict.evidence_score,
                    "answer_overlap": verdict.answer_overlap,
                    "judge_model": _model(extraction, "validation", model),
                }
            rows.append({"id": content_id(chunk.id, "qa", pair.question), "chunk_id": chunk.id, "props": props})
    return rows

"""Hand-made extraction results for graph tests: exact inputs for ``GraphWriter``, no model involved.

``extraction(chunk, facts=..., topics=..., ...)`` builds a ``ChunkExtraction`` through the extractors' own
pydantic schemas (so every bound they set still applies), and ``write_document`` writes a document the way
the ingest pipeline does: the document as processing, its chunks batch by batch, then the document's
categories and summary, then the document as done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from kg_etl.extract.base import ChunkExtraction, ExtractionFailure
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import Fact, Facts, Triple
from kg_etl.extract.keywords import Keyword, Keywords
from kg_etl.extract.qa import QAPair, QAPairs
from kg_etl.extract.summary import Summary
from kg_etl.extract.taxonomy import Taxonomy, TopicNode, TopicPath
from kg_etl.extract.validate import Validation, Validations
from kg_etl.graph.writer import DocStatus, GraphWriter
from kg_etl.models import Chunk, DocumentMeta, content_id

__all__ = ["CATEGORIES", "chunks_of", "document", "extraction", "valid", "write_document"]

CATEGORIES = categories_extractor().schema

# (subject, subject_type, predicate, object, object_type)
TripleSpec = tuple[str, str, str, str, str]


def document(path: str, version: str = "1", title: str | None = None) -> DocumentMeta:
    """A document whose id depends on its path and version (a new version = a changed PDF)."""
    return DocumentMeta(
        id=content_id("doc", path, version), path=path, name=path.rsplit("/", 1)[-1], n_pages=3, title=title
    )


def chunks_of(meta: DocumentMeta, texts: Sequence[str]) -> list[Chunk]:
    """Consecutive chunks of ``meta``, one page each (page = index + 1)."""
    chunks, offset = [], 0
    for index, text in enumerate(texts):
        chunks.append(
            Chunk(
                id=content_id(meta.id, index, text),
                doc_id=meta.id,
                index=index,
                text=text,
                page_start=index + 1,
                page_end=index + 1,
                char_start=offset,
                char_end=offset + len(text),
                n_tokens=len(text.split()),
            )
        )
        offset += len(text) + 2
    return chunks


def valid(score: float = 0.9) -> Validation:
    """A positive verdict on a QA pair."""
    return Validation(
        verdict="valid",
        score=score,
        judgement="agrees",
        model_answer="as stated",
        evidence_found=True,
        evidence_score=1.0,
        answer_overlap=0.8,
    )


def extraction(
    chunk: Chunk,
    *,
    facts: Sequence[tuple[str, TripleSpec | None]] = (),
    topics: Sequence[Sequence[str | tuple[str, int]]] = (),
    keywords: Sequence[str | tuple[str, float]] = (),
    categories: Sequence[str] = (),
    categories_schema: type[BaseModel] = CATEGORIES,
    summary: str | None = None,
    qa: Sequence[tuple[str, str, str]] = (),
    verdicts: Sequence[Validation | None] | None = None,
    failures: Sequence[tuple[str, str, str]] = (),
) -> ChunkExtraction:
    """One chunk's results; an empty argument leaves that extractor out (as if it was not run).

    Args:
        facts: (statement, triple or None) pairs; a triple is (subject, type, predicate, object, type).
        topics: paths from broad to specific; a node is a name (importance 3) or (name, importance).
        keywords: terms (relevance 0.5) or (term, relevance).
        qa: (question, answer, evidence); ``verdicts`` aligns with it (None = not validated).
        failures: (extractor, error, raw reply) of extractors that gave no valid reply.
    """
    results: dict[str, BaseModel] = {}
    if facts:
        results["facts"] = Facts(facts=[_fact(statement, triple) for statement, triple in facts])
    if topics:
        results["taxonomy"] = Taxonomy(paths=[TopicPath(nodes=[_node(n) for n in path]) for path in topics])
    if keywords:
        results["keywords"] = Keywords(
            keywords=[Keyword(term=k, relevance=0.5) if isinstance(k, str) else Keyword(term=k[0], relevance=k[1])
                      for k in keywords]
        )  # fmt: skip
    if categories:
        results["categories"] = categories_schema(labels=list(categories))
    if summary is not None:
        results["summary"] = Summary(summary=summary)
    if qa:
        results["qa"] = QAPairs(pairs=[QAPair(question=q, answer=a, evidence=e) for q, a, e in qa])
        if verdicts is not None:
            results["validate"] = Validations(items=list(verdicts))
    failed = [ExtractionFailure(extractor=name, error=error, raw=raw, attempts=3) for name, error, raw in failures]
    return ChunkExtraction(chunk=chunk, results=results, failures=failed)


def _fact(statement: str, triple: TripleSpec | None) -> Fact:
    if triple is None:
        return Fact(statement=statement, triple=None)
    subject, subject_type, predicate, obj, object_type = triple
    spec: dict[str, Any] = {
        "subject": subject,
        "subject_type": subject_type,
        "predicate": predicate,
        "object": obj,
        "object_type": object_type,
    }
    return Fact(statement=statement, triple=Triple(**spec))


def _node(node: str | tuple[str, int]) -> TopicNode:
    return TopicNode(name=node, importance=3) if isinstance(node, str) else TopicNode(name=node[0], importance=node[1])


def write_document(
    writer: GraphWriter,
    meta: DocumentMeta,
    extractions: Sequence[ChunkExtraction],
    *,
    summary: str | None = None,
    batch_size: int = 10,
    model: str = "test-model",
) -> None:
    """Write a document as the pipeline does, in batches of ``batch_size`` chunks."""
    writer.upsert_document(meta, DocStatus.PROCESSING)
    prev: str | None = None
    for start in range(0, len(extractions), batch_size):
        batch = extractions[start : start + batch_size]
        writer.write_batch(batch, prev, model)
        prev = batch[-1].chunk.id
    writer.write_document_categories(meta.id)
    if summary is not None:
        writer.write_document_summary(meta.id, summary)
    writer.upsert_document(meta, DocStatus.DONE, n_chunks=len(extractions))

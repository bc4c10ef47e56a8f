"""Export records: what ``kg-etl export`` writes for each kind, each with its citation, and how rows become them.

The records are the public shape of an export line (``kg_etl/data/qa_record.schema.json`` documents the QA
one); each builder takes the document row, the chunk row (None for document-level items) and the item row
that the export statements return.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.extract.facts import FACTS
from kg_etl.extract.keywords import KEYWORDS
from kg_etl.extract.qa import QA
from kg_etl.extract.summary import SUMMARY
from kg_etl.extract.taxonomy import TAXONOMY
from kg_etl.extract.validate import VALIDATE

__all__ = [
    "FactRecord",
    "KeywordRecord",
    "QARecord",
    "Row",
    "SchemaRecord",
    "SummaryRecord",
    "TopicRecord",
    "cite",
    "fact_record",
    "keyword_record",
    "qa_record",
    "schema_record",
    "summary_record",
    "topic_record",
]

Row = dict[str, Any]

# Each record class lists its own fields first and the citation last: pydantic orders fields base-last-first,
# so ``class X(_Citation, _XFields)`` dumps _XFields' fields, then _Citation's.


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Citation(_Record):
    """Where a record comes from: the PDF (its sha256 is the Document id), its pages, and the chunk."""

    doc_sha256: str
    doc_path: str
    doc_name: str
    doc_title: str | None
    page_start: int = Field(ge=1)
    page_end: int = Field(ge=1)
    chunk_id: str | None = Field(description="None only for a document summary")
    chunk_index: int | None = Field(ge=0)


class _QAFields(_Record):
    id: str
    question: str
    answer: str
    evidence: str
    verdict: Literal["valid", "invalid", "unvalidated"]
    score: float | None = Field(ge=0, le=1)
    judgement: str | None
    model_answer: str | None
    evidence_found: bool | None
    evidence_score: float | None
    answer_overlap: float | None
    model: str | None
    qa_version: str
    validate_version: str | None
    judge_model: str | None


class QARecord(_Citation, _QAFields):
    """One question/answer pair, its validation and its citation: ``kg_etl/data/qa_record.schema.json``."""


class _FactFields(_Record):
    id: str
    text: str
    subject: str | None
    predicate: str | None
    object: str | None
    model: str | None
    extractor_version: str


class FactRecord(_Citation, _FactFields):
    """One atomic fact (with its triple, where it has one) and its citation."""


class _TopicFields(_Record):
    topic_id: str
    topic: str
    topic_path: str
    level: int
    importance: float | None
    extractor_version: str


class TopicRecord(_Citation, _TopicFields):
    """One chunk's place in the taxonomy: a topic (its path from the broadest field) and how central it is."""


class _KeywordFields(_Record):
    keyword_id: str
    keyword: str
    relevance: float | None
    extractor_version: str


class KeywordRecord(_Citation, _KeywordFields):
    """One key term of a chunk and its relevance."""


class _SummaryFields(_Record):
    id: str
    kind: Literal["chunk", "document"]
    text: str
    model: str | None
    extractor_version: str


class SummaryRecord(_Citation, _SummaryFields):
    """A chunk's summary, or a document's (no chunk; pages 1 to the last)."""


def cite(doc: Row, chunk: Row | None) -> Row:
    """The citation fields of a record: the document (its sha256 is its id), pages and chunk."""
    pages = {"page_start": 1, "page_end": max(1, doc["n_pages"] or 1), "chunk_id": None, "chunk_index": None}
    if chunk is not None:
        pages = {k: chunk[k] for k in ("page_start", "page_end", "chunk_id", "chunk_index")}
    document = {"doc_sha256": doc["id"], "doc_path": doc["path"], "doc_name": doc["name"], "doc_title": doc["title"]}
    return document | pages


def qa_record(doc: Row, chunk: Row | None, item: Row) -> QARecord:
    # Versions are stored on each pair when written; older graphs without them get the current ones.
    item = dict(item)
    validated = item["verdict"] in ("valid", "invalid")
    qa_version = item.pop("qa_version", None) or QA.version
    validate_version = item.pop("validate_version", None) or (VALIDATE.version if validated else None)
    return QARecord(**cite(doc, chunk), **item, qa_version=qa_version, validate_version=validate_version)


def fact_record(doc: Row, chunk: Row | None, item: Row) -> FactRecord:
    return FactRecord(**cite(doc, chunk), **item, extractor_version=FACTS.version)


def topic_record(doc: Row, chunk: Row | None, item: Row) -> TopicRecord:
    return TopicRecord(
        **cite(doc, chunk),
        topic_id=item["id"],
        topic=item["name"],
        topic_path=item["path"],
        level=item["level"],
        importance=item["importance"],
        extractor_version=TAXONOMY.version,
    )


def keyword_record(doc: Row, chunk: Row | None, item: Row) -> KeywordRecord:
    return KeywordRecord(
        **cite(doc, chunk),
        keyword_id=item["id"],
        keyword=item["name"],
        relevance=item["relevance"],
        extractor_version=KEYWORDS.version,
    )


def summary_record(doc: Row, chunk: Row | None, item: Row) -> SummaryRecord:
    kind: Literal["chunk", "document"] = "chunk" if chunk is not None else "document"
    return SummaryRecord(**cite(doc, chunk), **item, kind=kind, extractor_version=SUMMARY.version)


class _SchemaFields(_Record):
    id: str
    schema_name: str = Field(description="the schema that declared the type")
    type: str = Field(description="the node type, a label of the node")
    name: str = Field(description="the node's key, as the text names it")
    properties: dict[str, Any] = Field(description="the properties the text stated")
    relationships: list[dict[str, Any]] = Field(
        description="what this chunk relates it to: type, target_id, target (its name) and target_type"
    )


class SchemaRecord(_Citation, _SchemaFields):
    """A node of the user's schema as one chunk names it, with the relationships that chunk states."""


# Set by kg-etl on every schema node; the record lists them once, not again among the properties.
_SCHEMA_NODE_KEYS = ("id", "schema", "type", "name")


def schema_record(doc: Row, chunk: Row | None, item: Row) -> SchemaRecord:
    properties = {k: v for k, v in sorted((item.get("properties") or {}).items()) if k not in _SCHEMA_NODE_KEYS}
    relationships = sorted(item.get("relationships") or [], key=lambda r: (r["type"], r["target_id"]))
    return SchemaRecord(
        **cite(doc, chunk),
        id=item["id"],
        schema_name=item["schema"],
        type=item["type"],
        name=item["name"],
        properties=properties,
        relationships=relationships,
    )

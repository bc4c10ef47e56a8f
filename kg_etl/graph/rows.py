"""Extraction results -> the rows of the writer's ``UNWIND $rows`` statements, one builder per extractor.

A builder takes a batch's extractions and the default model id (for results that name none) and returns its
statements with their rows, nodes before the links to them. The extractor registry (``kg_etl.registry``)
names each extractor's builder; ``chunk_rows`` is the batch's own, always written first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.facts import FACTS, Facts
from kg_etl.extract.keywords import Keywords
from kg_etl.extract.qa import QA, QAPairs
from kg_etl.extract.summary import SUMMARY, Summary
from kg_etl.extract.taxonomy import Taxonomy
from kg_etl.extract.validate import VALIDATE, Validations
from kg_etl.graph import statements as st
from kg_etl.graph.resolve import entity_id, name_key, resolve_acronyms, term_id, topic_id
from kg_etl.models import Chunk, content_id

__all__ = [
    "Row",
    "RowBuilder",
    "Rows",
    "category_rows",
    "chunk_rows",
    "cite",
    "clean_name",
    "fact_rows",
    "keyword_rows",
    "made_by",
    "question_rows",
    "results_of",
    "summary_rows",
    "topic_rows",
]

Row = dict[str, Any]
Rows = list[tuple[st.Statement, list[Row]]]
RowBuilder = Callable[[Sequence[ChunkExtraction], "str | None"], Rows]


def chunk_rows(batch: Sequence[ChunkExtraction], prev: str | None, coverage: Sequence[str]) -> Rows:
    """The batch's chunks (with their failures and coverage) and the NEXT_CHUNK links between them."""
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
    return [(st.WRITE_CHUNKS, rows), (st.LINK_CHUNKS, [r for r in rows if r["prev_id"]])]


def results_of(batch: Iterable[ChunkExtraction], name: str, kind: type[BaseModel]) -> Iterable[tuple[Chunk, Any]]:
    """Each chunk with its result of extractor ``name``, where it has one of type ``kind``."""
    for extraction in batch:
        result = extraction.results.get(name)
        if isinstance(result, kind):
            yield extraction.chunk, result


def made_by(extraction: ChunkExtraction, name: str, default: str | None) -> str | None:
    """The model that made a result: the one the extraction names, else the batch's default."""
    return extraction.models.get(name, default)


def cite(chunk: Chunk, model: str | None) -> Row:
    """The citation every extracted node carries: its chunk, document, pages and model."""
    return {
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
        "page_start": chunk.page_start,
        "page_end": chunk.page_end,
        "model": model,
    }


def fact_rows(batch: Sequence[ChunkExtraction], model: str | None) -> Rows:
    """Facts, the entities their triples name (resolved within the batch), and RELATED between them."""
    facts: list[Row] = []
    relations: list[Row] = []
    found = list(results_of(batch, FACTS.name, Facts))
    models = {e.chunk.id: made_by(e, FACTS.name, model) for e in batch}
    entity = _Entities([(t.subject, t.subject_type) for _, r in found for f in r.facts if (t := f.triple)]
                       + [(t.object, t.object_type) for _, r in found for f in r.facts if (t := f.triple)])  # fmt: skip
    for chunk, result in found:
        for fact in result.facts:
            fact_id = content_id(chunk.id, "fact", fact.statement)
            t = fact.triple
            props = cite(chunk, models[chunk.id]) | {
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
    return [(st.WRITE_FACTS, facts), (st.WRITE_ENTITIES, entity.rows), (st.WRITE_RELATIONS, relations)]


class _Entities:
    """The entities named in one batch, as rows: each named after its most frequent surface form.

    So "the WHO's" or "WORLD HEALTH ORGANIZATION" seen once does not name an entity (ties: the first form);
    an acronym's entity is named after its full name. The name is set when the entity is created: later
    batches add aliases only.
    """

    def __init__(self, raw: Sequence[tuple[str, str]]) -> None:
        named = [(clean_name(name), kind) for name, kind in raw]
        self.acronyms = resolve_acronyms(named)
        self.forms: dict[tuple[str, str], Counter[str]] = {}
        for name, kind in named:
            self.forms.setdefault((kind, name_key(name)), Counter())[name] += 1
        self.rows: list[Row] = []

    def __call__(self, chunk: Chunk, raw: str, kind: str) -> str:
        """The entity's id; its row (with this chunk and surface form as an alias) is added."""
        name = clean_name(raw)
        key = name_key(name)
        canonical = self.forms[(kind, self.acronyms.get((kind, key), key))].most_common(1)[0][0]
        row = {"id": entity_id(canonical, kind), "chunk_id": chunk.id, "name": canonical, "type": kind, "alias": name}
        self.rows.append(row)
        return str(row["id"])


def clean_name(name: str) -> str:
    """A name as stored (display name, alias): its words joined by single spaces."""
    return " ".join(name.split())


def topic_rows(batch: Sequence[ChunkExtraction], model: str | None) -> Rows:
    """Topics (one per path prefix), SUBTOPIC_OF links, and each chunk's HAS_TOPIC with its importance."""
    topics: dict[str, Row] = {}
    links: dict[tuple[str, str], Row] = {}
    for chunk, result in results_of(batch, "taxonomy", Taxonomy):
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
    return [
        (st.WRITE_TOPICS, rows),
        (st.LINK_TOPICS, [r for r in rows if r["parent_id"]]),
        (st.CHUNK_TOPICS, list(links.values())),
    ]


def category_rows(batch: Sequence[ChunkExtraction], model: str | None) -> Rows:
    """Each chunk's IN_CATEGORY links (the labels were checked by the grammar and the schema's enum)."""
    rows = [
        {"chunk_id": chunk.id, "id": term_id("category", label), "name": label, "weight": 1.0}
        for chunk, result in results_of(batch, "categories", BaseModel)
        for label in dict.fromkeys(getattr(result, "labels", []))
    ]
    return [(st.WRITE_CATEGORIES, rows)]


def keyword_rows(batch: Sequence[ChunkExtraction], model: str | None) -> Rows:
    """Keywords and each chunk's HAS_KEYWORD, with the highest relevance the chunk gave the term."""
    rows: dict[tuple[str, str], Row] = {}
    for chunk, result in results_of(batch, "keywords", Keywords):
        for keyword in result.keywords:
            kid = term_id("keyword", keyword.term)
            row = rows.setdefault(
                (chunk.id, kid),
                {"chunk_id": chunk.id, "id": kid, "name": keyword.term.strip(), "weight": keyword.relevance},
            )
            row["weight"] = max(row["weight"], keyword.relevance)
    return [(st.WRITE_KEYWORDS, list(rows.values()))]


def summary_rows(batch: Sequence[ChunkExtraction], model: str | None) -> Rows:
    """Each chunk's summary, citing it."""
    models = {e.chunk.id: made_by(e, SUMMARY.name, model) for e in batch}
    rows = [
        {
            "id": content_id(chunk.id, "summary"),
            "chunk_id": chunk.id,
            "props": cite(chunk, models[chunk.id])
            | {"text": result.summary, "kind": "chunk", "version": SUMMARY.version},
        }
        for chunk, result in results_of(batch, SUMMARY.name, Summary)
    ]
    return [(st.WRITE_SUMMARIES, rows)]


def question_rows(batch: Sequence[ChunkExtraction], model: str | None) -> Rows:
    """Each QA pair as a Question, with its verdict where the validation pass gave one."""
    rows = []
    for extraction in batch:
        pairs = extraction.results.get(QA.name)
        if not isinstance(pairs, QAPairs):
            continue
        checks = extraction.results.get(VALIDATE.name)
        verdicts = checks.items if isinstance(checks, Validations) else [None] * len(pairs.pairs)
        chunk = extraction.chunk
        for pair, verdict in zip(pairs.pairs, verdicts, strict=True):
            props = cite(chunk, made_by(extraction, QA.name, model)) | pair.model_dump()
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
                    "judge_model": made_by(extraction, VALIDATE.name, model),
                }
            rows.append({"id": content_id(chunk.id, "qa", pair.question), "chunk_id": chunk.id, "props": props})
    return [(st.WRITE_QUESTIONS, rows)]

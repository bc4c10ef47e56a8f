"""A small graph with known text, written by the real GraphWriter, for the view and graph-export tests.

The extractions are made by hand because what is checked depends on them: a citation highlight needs a quote
that is in the chunk, a tree needs topics under topics, a RELATED edge needs a triple. (The tiny test models
write random text; a real ingest is in the browser tests.) Two documents share the entity "ATP", so a walk
from one reaches the other at the second hop. A hostile chunk holds what could break out of a <script>.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import BaseModel

from kg_etl.extract.base import ChunkExtraction
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import Fact, Facts, Triple
from kg_etl.extract.keywords import Keyword, Keywords
from kg_etl.extract.qa import QAPair, QAPairs
from kg_etl.extract.summary import Summary
from kg_etl.extract.taxonomy import Taxonomy, TopicNode, TopicPath
from kg_etl.extract.validate import Validation, Validations
from kg_etl.graph.connection import Graph
from kg_etl.graph.writer import DocStatus, GraphWriter
from kg_etl.models import Chunk, DocumentMeta, content_id

__all__ = ["EVIDENCE", "HOSTILE", "QUESTION", "KnownCorpus", "write_known_corpus"]

# An emoji (two UTF-16 code units) before the quote: JavaScript's offsets differ from Python's after it.
CELLS_0 = "Cells 🔋 run on ATP. ATP stores   energy in cells. Mitochondria make ATP from glucose."
CELLS_1 = "The Calvin cycle fixes carbon dioxide into sugars. It runs in the stroma of the chloroplast."
HOSTILE = "Minutes: </script><script>window.__pwned = 1</script><!-- <b>bold</b> & \u2028 ATP is on the agenda."
QUESTION = "What stores energy in cells?"
EVIDENCE = "ATP stores energy in cells."  # in CELLS_0 with three spaces: matched across white space
CATEGORIES = categories_extractor(["Science", "Government"]).schema


@dataclass(frozen=True)
class KnownCorpus:
    cells: DocumentMeta
    minutes: DocumentMeta
    chunks: dict[str, Chunk]


def _meta(name: str, title: str, n_pages: int) -> DocumentMeta:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return DocumentMeta(id=digest, path=f"/docs/{name}", name=name, n_pages=n_pages, title=title)


def _chunk(meta: DocumentMeta, index: int, text: str, page: int) -> Chunk:
    return Chunk(id=content_id(meta.id, index, text), doc_id=meta.id, index=index, text=text, page_start=page,
                 page_end=page, char_start=index * 200, char_end=index * 200 + len(text), n_tokens=20)  # fmt: skip


def _triple(subject: str, kind: str, predicate: str, obj: str, obj_kind: str) -> Triple:
    return Triple.model_validate({"subject": subject, "subject_type": kind, "predicate": predicate, "object": obj,
                                  "object_type": obj_kind})  # fmt: skip


def _topics(*paths: tuple[str, ...]) -> Taxonomy:
    return Taxonomy(paths=[TopicPath(nodes=[TopicNode(name=n, importance=3) for n in path]) for path in paths])


def _qa(question: str, answer: str, evidence: str) -> dict[str, BaseModel]:
    verdict = {"verdict": "valid", "score": 0.9, "judgement": "agrees", "model_answer": answer}
    check = Validation.model_validate(verdict | {"evidence_found": True, "evidence_score": 1.0, "answer_overlap": 1.0})
    pairs = QAPairs(pairs=[QAPair(question=question, answer=answer, evidence=evidence)])
    return {"qa": pairs, "validate": Validations(items=[check])}


def write_known_corpus(graph: Graph) -> KnownCorpus:
    """Two documents, three chunks, every kind of node and relationship of the model."""
    writer = GraphWriter(graph)
    cells = _meta("cells.pdf", "Energy in cells", 2)
    c0, c1 = _chunk(cells, 0, CELLS_0, 1), _chunk(cells, 1, CELLS_1, 2)
    atp = Fact(statement="ATP stores energy in cells.", triple=_triple("ATP", "concept", "stores", "energy", "concept"))
    mito = Fact(statement="Mitochondria make ATP.", triple=_triple("Mitochondria", "concept", "make", "ATP", "concept"))
    calvin = Fact(statement="The Calvin cycle makes sugars.",
                  triple=_triple("Calvin cycle", "concept", "fixes", "carbon dioxide", "concept"))  # fmt: skip
    first = ChunkExtraction(chunk=c0, results={
        "facts": Facts(facts=[atp, mito]),
        "taxonomy": _topics(("Biology", "Cells", "Energy")),
        "keywords": Keywords(keywords=[Keyword(term="ATP", relevance=0.9), Keyword(term="glucose", relevance=0.5)]),
        "categories": CATEGORIES(labels=["Science"]),
        "summary": Summary(summary="Cells store energy as ATP, made by mitochondria."),
        **_qa(QUESTION, "ATP", EVIDENCE),
    })  # fmt: skip
    second = ChunkExtraction(chunk=c1, results={
        "facts": Facts(facts=[calvin]),
        "taxonomy": _topics(("Biology", "Plants")),
        "keywords": Keywords(keywords=[Keyword(term="Calvin cycle", relevance=0.8)]),
        "categories": CATEGORIES(labels=["Science"]),
    })  # fmt: skip
    _write(writer, cells, [first, second])
    writer.write_document_summary(cells.id, "How cells and plants handle energy.")

    minutes = _meta("minutes.pdf", "Minutes", 1)
    m0 = _chunk(minutes, 0, HOSTILE, 1)
    agenda = Fact(statement="ATP is on the agenda.", triple=_triple("ATP", "concept", "is on", "agenda", "concept"))
    third = ChunkExtraction(chunk=m0, results={
        "facts": Facts(facts=[agenda]),
        "taxonomy": _topics(("Government", "Meetings")),
        "keywords": Keywords(keywords=[Keyword(term="</script>", relevance=0.4)]),
        "categories": CATEGORIES(labels=["Government"]),
        **_qa("What is on the agenda of the meeting?", "ATP", "ATP is on the agenda."),
    })  # fmt: skip
    _write(writer, minutes, [third])
    return KnownCorpus(cells=cells, minutes=minutes, chunks={"c0": c0, "c1": c1, "m0": m0})


def _write(writer: GraphWriter, meta: DocumentMeta, extractions: list[ChunkExtraction]) -> None:
    writer.upsert_document(meta, DocStatus.PROCESSING)
    writer.write_batch(extractions, None, "lfm2-test")
    writer.write_document_categories(meta.id)
    writer.upsert_document(meta, DocStatus.DONE)

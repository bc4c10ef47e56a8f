"""The ingest pipeline: read -> chunk -> extract -> write, batch by batch, resumable and idempotent.

Per document: a ``done`` document is skipped before the model is even loaded (re-ingesting an unchanged
folder costs one lookup per file); otherwise its chunks stream from the reader, chunks already in the graph
are skipped (resume after a crash), and every ``batch_size`` chunks are extracted and written in one
transaction. A document that cannot be read is recorded as ``failed`` with its reason and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from kg_etl.chunk import chunk_pages
from kg_etl.config import IngestSettings, kg_etl_home
from kg_etl.errors import ConfigError, ReadError
from kg_etl.extract.base import ChunkExtraction, ChunkExtractor, Extractor
from kg_etl.extract.cache import SqliteCache
from kg_etl.extract.facts import FACTS
from kg_etl.graph.connection import Graph
from kg_etl.graph.writer import DocStatus, GraphWriter
from kg_etl.llm.registry import resolve_model
from kg_etl.llm.runtime import LocalModel, Sampling
from kg_etl.models import Chunk, DocumentMeta, Page, PageStatus, content_id, sha256_file
from kg_etl.read import open_pdf

__all__ = [
    "EXTRACTORS",
    "DocumentReport",
    "Event",
    "IngestReport",
    "ModelSlot",
    "find_pdfs",
    "ingest",
]

EXTRACTORS: dict[str, Extractor] = {e.name: e for e in (FACTS,)}


class PageNote(BaseModel):
    """A page that gave no usable text, and why."""

    page: int
    status: PageStatus
    reason: str | None


class DocumentReport(BaseModel):
    """What happened to one file."""

    path: str
    doc_id: str | None = None
    status: str = Field(description="done, skipped (already done), or failed")
    reason: str | None = None
    pages: int = 0
    page_notes: list[PageNote] = Field(default_factory=list)
    chunks: int = 0
    chunks_written: int = 0
    chunks_failed: int = 0
    extractions: dict[str, int] = Field(default_factory=dict)
    llm_calls: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0


class IngestReport(BaseModel):
    """The whole run."""

    documents: list[DocumentReport] = Field(default_factory=list)
    model: str | None = None
    gpu_offload: bool = False
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(d.status != "failed" and d.chunks_failed == 0 for d in self.documents)


class Event(BaseModel):
    """Progress for whoever displays it: ``kind`` is document_start, chunk, document_end or notice."""

    kind: str
    path: str = ""
    message: str = ""
    total: int | None = None
    report: DocumentReport | None = None


EventSink = Callable[[Event], None]


def _ignore(_: Event) -> None:
    pass


def find_pdfs(inputs: Sequence[Path]) -> list[Path]:
    """The PDFs named or found (recursively, sorted) under ``inputs``.

    Raises:
        ConfigError: an input does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file()))
        elif item.is_file():
            found.append(item)
        else:
            raise ConfigError(f"{item}: no such file or folder")
    return found


class ModelSlot:
    """The run's one model, loaded on first use (a run with nothing new to extract never loads it)."""

    def __init__(self, settings: IngestSettings, on_event: EventSink = _ignore) -> None:
        self.settings = settings
        self.on_event = on_event
        self.model: LocalModel | None = None
        self.model_id = ""

    def get(self) -> LocalModel:
        if self.model is None:
            s = self.settings
            path = resolve_model(s.model, download=s.download)
            sampling = Sampling.deterministic() if s.deterministic else Sampling()
            self.model = LocalModel(path, n_ctx=s.n_ctx, n_gpu_layers=s.gpu_layers, require_gpu=s.require_gpu,
                                    sampling=sampling)
            self.model_id = f"{path.name}:{path.stat().st_size}:{_head_hash(path)}"
            where = "GPU (all layers offloaded)" if self.model.offloaded else "CPU"
            self.on_event(Event(kind="notice", message=f"model {path.name} loaded on the {where}"))
        return self.model

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


def _head_hash(path: Path) -> str:
    # Names and sizes can repeat across different weights (re-quantised files); the first MiB holds the
    # GGUF header and metadata and tells them apart without hashing gigabytes per run.
    with path.open("rb") as f:
        return content_id(f.read(1 << 20).hex())


def ingest(
    inputs: Sequence[Path],
    graph: Graph,
    settings: IngestSettings,
    *,
    on_event: EventSink = _ignore,
) -> IngestReport:
    """Ingest every PDF under ``inputs`` into ``graph``; failures are reported, never raised per file.

    Raises:
        ConfigError: an input does not exist or an extractor name is unknown.
        GraphError: the graph is unreachable (nothing half-written stays: batches are transactions).
        ModelError: the model cannot be found or loaded.
    """
    extractors = _extractors(settings.extractors)
    paths = find_pdfs(inputs)
    graph.apply_schema()
    started = time.perf_counter()
    report = IngestReport()
    slot = ModelSlot(settings, on_event)
    cache = SqliteCache(kg_etl_home() / "cache" / "extractions.sqlite")
    try:
        for path in paths:
            doc_report = _ingest_document(path, GraphWriter(graph), slot, extractors, cache, settings, on_event)
            report.documents.append(doc_report)
            on_event(Event(kind="document_end", path=str(path), report=doc_report))
    finally:
        _finish(report, slot)
        slot.close()
        cache.close()
    report.seconds = time.perf_counter() - started
    return report


def _finish(report: IngestReport, slot: ModelSlot) -> None:
    if slot.model is not None:
        stats = slot.model.stats
        report.model = slot.model.name
        report.gpu_offload = slot.model.offloaded
        report.llm_calls, report.prompt_tokens = stats.calls, stats.prompt_tokens
        report.completion_tokens = stats.completion_tokens


def _extractors(names: Sequence[str]) -> list[Extractor]:
    unknown = [n for n in names if n not in EXTRACTORS]
    if unknown:
        raise ConfigError(f"unknown extractor(s) {', '.join(unknown)}; choose from {', '.join(EXTRACTORS)}")
    return [EXTRACTORS[n] for n in names]


def _ingest_document(
    path: Path,
    writer: GraphWriter,
    slot: ModelSlot,
    extractors: list[Extractor],
    cache: SqliteCache,
    settings: IngestSettings,
    on_event: EventSink,
) -> DocumentReport:
    started = time.perf_counter()
    report = DocumentReport(path=str(path), status=DocStatus.PROCESSING)
    try:
        _process(path, writer, slot, extractors, cache, settings, on_event, report)
    except ReadError as e:
        report.status, report.reason = DocStatus.FAILED, e.reason
        _record_failure(writer, path, report)
        on_event(Event(kind="notice", path=str(path), message=str(e)))
    report.seconds = time.perf_counter() - started
    return report


def _process(
    path: Path,
    writer: GraphWriter,
    slot: ModelSlot,
    extractors: list[Extractor],
    cache: SqliteCache,
    settings: IngestSettings,
    on_event: EventSink,
    report: DocumentReport,
) -> None:
    password = settings.password.get_secret_value() if settings.password else None
    doc = open_pdf(path, password=password, timeout_s=settings.read_timeout)
    meta = doc.meta
    report.doc_id, report.pages = meta.id, meta.n_pages
    if writer.document_status(meta.id) == DocStatus.DONE:
        report.status = "skipped"
        return
    on_event(Event(kind="document_start", path=str(path), total=meta.n_pages))
    model = slot.get()
    writer.upsert_document(meta, DocStatus.PROCESSING)
    runner = ChunkExtractor(model, extractors, model_id=slot.model_id, retries=settings.retries, cache=cache)
    done = writer.done_chunk_ids(meta.id)
    pages = _noting_pages(doc.pages(), report, path, on_event)
    chunks = chunk_pages(pages, meta.id, max_tokens=settings.chunk_tokens, overlap_tokens=settings.overlap_tokens,
                         count_tokens=model.count_tokens)
    batch: list[ChunkExtraction] = []
    prev: str | None = None  # the chunk before the current batch, for NEXT_CHUNK across batches
    for chunk in chunks:
        report.chunks += 1
        if chunk.id in done:
            prev = chunk.id
            continue
        batch.append(_extract(runner, chunk, meta, report))
        on_event(Event(kind="chunk", path=str(path), message=f"chunk {chunk.index + 1}, page {chunk.page_end}"))
        if len(batch) >= settings.batch_size:
            prev = _flush(writer, batch, prev, slot.model_id, report)
    _flush(writer, batch, prev, slot.model_id, report)
    report.status = DocStatus.DONE
    writer.upsert_document(meta, DocStatus.DONE, n_chunks=report.chunks)


def _extract(runner: ChunkExtractor, chunk: Chunk, meta: DocumentMeta, report: DocumentReport) -> ChunkExtraction:
    extraction = runner.run(chunk, meta.title or meta.name)
    report.llm_calls += extraction.llm_calls
    report.prompt_tokens += extraction.prompt_tokens
    return extraction


def _flush(writer: GraphWriter, batch: list[ChunkExtraction], prev: str | None, model: str,
           report: DocumentReport) -> str | None:
    if not batch:
        return prev
    writer.write_batch(batch, prev, model)
    for extraction in batch:
        report.chunks_written += 1
        report.chunks_failed += bool(extraction.failures)
        for name, result in extraction.results.items():
            items: object = next(iter(result.model_dump().values()), [])
            report.extractions[name] = report.extractions.get(name, 0) + (len(items) if isinstance(items, list) else 1)
    last = batch[-1].chunk.id
    batch.clear()
    return last


def _noting_pages(pages: Iterator[Page], report: DocumentReport, path: Path, on_event: EventSink) -> Iterator[Page]:
    for page in pages:
        if page.status is not PageStatus.OK:
            report.page_notes.append(PageNote(page=page.number, status=page.status, reason=page.reason))
            on_event(Event(kind="notice", path=str(path),
                           message=f"{path.name} page {page.number}: {page.status.value} ({page.reason})"))
        yield page


def _record_failure(writer: GraphWriter, path: Path, report: DocumentReport) -> None:
    """Record an unreadable file as a failed Document, so it shows in the graph and a rerun retries it."""
    try:
        doc_id = sha256_file(path)
    except OSError:
        doc_id = content_id("unreadable", str(path.resolve()))
    meta = DocumentMeta(id=doc_id, path=str(path.resolve()), name=path.name, n_pages=0)
    report.doc_id = doc_id
    writer.upsert_document(meta, DocStatus.FAILED, report.reason)

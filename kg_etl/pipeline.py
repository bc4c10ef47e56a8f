"""The ingest pipeline: read -> chunk -> extract -> write, batch by batch, resumable and idempotent.

Per document: a ``done`` document is skipped before the model is even loaded (re-ingesting an unchanged
folder costs one lookup per file); otherwise its chunks stream from the reader, chunks already in the graph
are skipped (resume after a crash), and every ``batch_size`` chunks are extracted together and written in
one transaction. Document-level results (summary, categories) are built from what the graph holds, so a
resumed document gets the same ones. A document that cannot be read is recorded as ``failed`` with its
reason and the run goes on; a changed PDF (same path, new content) replaces its old version once done.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from kg_etl.chunk import approx_tokens, chunk_pages
from kg_etl.config import IngestSettings, kg_etl_home
from kg_etl.errors import ConfigError, GraphError, ReadError
from kg_etl.extract.base import ChunkExtraction, ExtractionFailure, Extractor
from kg_etl.extract.cache import SqliteCache
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import FACTS
from kg_etl.extract.keywords import KEYWORDS
from kg_etl.extract.qa import QA
from kg_etl.extract.run import BatchExtractor
from kg_etl.extract.summary import SUMMARY
from kg_etl.extract.taxonomy import TAXONOMY
from kg_etl.graph.connection import Graph
from kg_etl.graph.writer import DocStatus, GraphWriter
from kg_etl.llm.backend import LlamaBackend
from kg_etl.llm.parallel import ParallelDecoder
from kg_etl.llm.registry import resolve_model
from kg_etl.llm.runtime import LocalModel, Sampling, peak_rss_mb
from kg_etl.models import Chunk, DocumentMeta, Page, PageStatus, content_id, sha256_file
from kg_etl.owner import is_stale, this_process
from kg_etl.read import PdfDocument, open_pdf

__all__ = [
    "ALL_EXTRACTORS",
    "DocumentReport",
    "Event",
    "IngestReport",
    "ModelSlot",
    "find_pdfs",
    "ingest",
    "select_extractors",
]

# Every extractor kg-etl runs by default, in order; "validate" is the second pass over the QA pairs.
ALL_EXTRACTORS = ("facts", "taxonomy", "categories", "keywords", "summary", "qa", "validate")
_FIXED: dict[str, Extractor] = {e.name: e for e in (FACTS, TAXONOMY, KEYWORDS, SUMMARY, QA)}


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
    failures: list[ExtractionFailure] = Field(default_factory=list)
    llm_calls: int = 0
    prompt_tokens: int = 0
    replaced: list[str] = Field(default_factory=list, description="ids of older versions removed")
    seconds: float = 0.0


class IngestReport(BaseModel):
    """The whole run."""

    documents: list[DocumentReport] = Field(default_factory=list)
    interrupted: bool = False
    model: str | None = None
    gpu_offload: bool = False
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    peak_rss_mb: float | None = None

    @property
    def ok(self) -> bool:
        """True when every document is done (or was already) and no chunk has a failed extraction."""
        return not self.interrupted and all(
            d.status in (DocStatus.DONE, "skipped") and d.chunks_failed == 0 for d in self.documents
        )


class Event(BaseModel):
    """Progress for whoever displays it.

    ``kind``: run_start (total = files), document_start (total = pages), stage (message = what the model
    is doing), batch (done = pages read so far, tokens_per_s), document_end (report), notice (message).
    """

    kind: str
    path: str = ""
    message: str = ""
    total: int | None = None
    done: int | None = None
    tokens_per_s: float | None = None
    report: DocumentReport | None = None


EventSink = Callable[[Event], None]


def _ignore(_: Event) -> None:
    pass


def _never() -> bool:
    return False


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


def select_extractors(names: Sequence[str], categories: Sequence[str]) -> tuple[list[Extractor], bool]:
    """The chunk extractors to run, in order, and whether to validate QA pairs.

    Raises:
        ConfigError: an unknown name, or "validate" without "qa".
    """
    unknown = [n for n in names if n not in ALL_EXTRACTORS]
    if unknown:
        raise ConfigError(f"unknown extractor(s) {', '.join(unknown)}; choose from {','.join(ALL_EXTRACTORS)}")
    if "validate" in names and "qa" not in names:
        raise ConfigError("--extract validate needs qa too: it validates the question/answer pairs")
    chosen = [
        categories_extractor(categories) if n == "categories" else _FIXED[n]
        for n in ALL_EXTRACTORS
        if n in names and n != "validate"
    ]
    return chosen, "validate" in names


class ModelSlot:
    """The run's one model, loaded on first use (a run with nothing new to extract never loads it)."""

    def __init__(self, settings: IngestSettings, on_event: EventSink = _ignore) -> None:
        self.settings = settings
        self.on_event = on_event
        self.model: LocalModel | None = None
        self.engine: ParallelDecoder | None = None  # shares the model's weights; closed before it

    def get(self) -> LocalModel:
        if self.model is None:
            s = self.settings
            path = resolve_model(s.model, download=s.download)
            sampling = Sampling.deterministic() if s.deterministic else Sampling()
            self.model = LocalModel(
                path,
                n_ctx=s.n_ctx,
                n_gpu_layers=s.gpu_layers,
                require_gpu=s.require_gpu,
                n_threads=s.threads,
                sampling=sampling,
            )
            where = "GPU (all layers offloaded)" if self.model.offloaded else "CPU"
            self.on_event(Event(kind="notice", message=f"model {path.name} loaded on the {where}"))
        return self.model

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.model is not None:
            self.model.close()


def ingest(
    inputs: Sequence[Path],
    graph: Graph,
    settings: IngestSettings,
    *,
    on_event: EventSink = _ignore,
    should_stop: Callable[[], bool] = _never,
) -> IngestReport:
    """Ingest every PDF under ``inputs`` into ``graph``; failures are reported, never raised per file.

    ``should_stop`` is polled between batches (Ctrl-C): the run then ends after the batch in hand is
    committed, with the document left to resume.

    Raises:
        ConfigError: an input does not exist or an extractor name is unknown.
        GraphError: the graph is unreachable (nothing half-written stays: batches are transactions).
        ModelError: the model cannot be found or loaded.
    """
    extractors, validate = select_extractors(settings.extractors, settings.categories)
    paths = find_pdfs(inputs)
    graph.apply_schema()
    started = time.perf_counter()
    report = IngestReport()
    run = _Run(
        settings,
        GraphWriter(graph),
        ModelSlot(settings, on_event),
        extractors,
        validate,
        SqliteCache(kg_etl_home() / "cache" / "extractions.sqlite"),
        on_event,
        should_stop,
    )
    on_event(Event(kind="run_start", total=len(paths)))
    try:
        for path in paths:
            if should_stop():
                report.interrupted = True
                break
            doc_report = run.document(path)
            report.documents.append(doc_report)
            report.interrupted = doc_report.status == "interrupted"
            on_event(Event(kind="document_end", path=str(path), report=doc_report))
    finally:
        run.close(report)
    report.seconds = time.perf_counter() - started
    return report


class _Run:
    """State shared by the documents of one ingest: settings, writer, the model slot and the cache."""

    def __init__(
        self,
        settings: IngestSettings,
        writer: GraphWriter,
        slot: ModelSlot,
        extractors: list[Extractor],
        validate: bool,
        cache: SqliteCache,
        on_event: EventSink,
        should_stop: Callable[[], bool],
    ) -> None:
        self.settings, self.writer, self.slot = settings, writer, slot
        self.extractors, self.validate, self.cache, self.on_event = extractors, validate, cache, on_event
        self.should_stop = should_stop
        self.owner = this_process()
        self._runner: BatchExtractor | None = None

    def runner(self) -> BatchExtractor:
        if self._runner is None:
            model = self.slot.get()
            engine = None
            if self.settings.parallel > 1:
                engine = ParallelDecoder(model, self.settings.parallel)
                self.slot.engine = engine
            backend = LlamaBackend(model, engine)
            self._runner = BatchExtractor(
                backend, self.extractors, retries=self.settings.retries, cache=self.cache, validate=self.validate
            )
        return self._runner

    def close(self, report: IngestReport) -> None:
        model = self.slot.model
        if model is not None:
            report.model, report.gpu_offload = model.name, model.offloaded
            report.llm_calls, report.prompt_tokens = model.stats.calls, model.stats.prompt_tokens
            report.completion_tokens = model.stats.completion_tokens
        report.peak_rss_mb = peak_rss_mb()
        self.slot.close()
        self.cache.close()

    def document(self, path: Path) -> DocumentReport:
        started = time.perf_counter()
        report = DocumentReport(path=str(path), status=DocStatus.PROCESSING)
        try:
            self._process(path, report)
        except ReadError as e:
            report.status, report.reason = DocStatus.FAILED, e.reason
            self._record_failure(path, report)
            self.on_event(Event(kind="notice", path=str(path), message=f"skipped {e}"))
        report.seconds = time.perf_counter() - started
        return report

    def _process(self, path: Path, report: DocumentReport) -> None:
        s = self.settings
        password = s.password.get_secret_value() if s.password else None
        doc = open_pdf(path, password=password, passwords=s.passwords, timeout_s=s.read_timeout)
        meta = doc.meta
        report.doc_id, report.pages = meta.id, meta.n_pages
        status = self.writer.document_status(meta.id)
        if status == DocStatus.DONE or (status == DocStatus.FAILED and not s.retry_failed):
            report.status, report.reason = "skipped", None if status == DocStatus.DONE else "failed before"
            return
        if not self.writer.claim(meta, self.owner, is_stale):
            report.status, report.reason = "skipped", "being ingested by another kg-etl process"
            self.on_event(Event(kind="notice", path=str(path), message=f"{path.name}: {report.reason}"))
            return
        try:
            self._claimed(doc, report)
        finally:
            if report.status != DocStatus.DONE:
                self._release(meta.id)

    def _claimed(self, doc: PdfDocument, report: DocumentReport) -> None:
        meta = doc.meta
        self.on_event(Event(kind="document_start", path=meta.path, total=meta.n_pages))
        runner = self.runner()
        if not self._chunks(doc, runner, report):
            report.status = "interrupted"
            return
        self._document_results(meta, runner, report)
        for old in self.writer.other_versions(meta):
            self.writer.remove_document(old)
            report.replaced.append(old)
        report.status = DocStatus.DONE
        self.writer.upsert_document(meta, DocStatus.DONE, n_chunks=report.chunks, owner=None, finished_at=time.time())

    def _release(self, doc_id: str) -> None:
        # If the graph is gone, the claim goes stale with this process and a rerun takes it over.
        with contextlib.suppress(GraphError):
            self.writer.release(doc_id, self.owner)

    def _chunks(self, doc: PdfDocument, runner: BatchExtractor, report: DocumentReport) -> bool:
        """Extract and write every chunk not yet in the graph; False when stopped before the end."""
        model = self.slot.get()
        done = self.writer.done_chunk_ids(doc.meta.id)
        pages = self._noting_pages(doc.pages(), report, Path(doc.meta.path))
        chunks = chunk_pages(
            pages,
            doc.meta.id,
            max_tokens=self.settings.chunk_tokens,
            overlap_tokens=self.settings.overlap_tokens,
            count_tokens=model.count_tokens,
        )
        batch: list[Chunk] = []
        prev: str | None = None  # the chunk before the current batch, for NEXT_CHUNK across batches
        for chunk in chunks:
            report.chunks += 1
            if chunk.id in done:
                prev = chunk.id
                continue
            batch.append(chunk)
            if len(batch) >= self.settings.batch_size:
                prev = self._flush(batch, prev, runner, doc.meta, report)
                if self.should_stop():
                    return False
        self._flush(batch, prev, runner, doc.meta, report)
        return True

    def _flush(
        self, batch: list[Chunk], prev: str | None, runner: BatchExtractor, meta: DocumentMeta, report: DocumentReport
    ) -> str | None:
        if not batch:
            return prev
        pages = f"pages {batch[0].page_start}-{batch[-1].page_end}"
        self.on_event(Event(kind="stage", path=meta.path, message=f"extracting {len(batch)} chunks, {pages}"))
        extractions = runner.run(batch, meta.title or meta.name)
        self.writer.write_batch(extractions, prev, runner.backend.model_id, owner=self.owner)
        for extraction in extractions:
            self._count(extraction, report)
        stats = self.slot.get().stats
        self.on_event(
            Event(
                kind="batch",
                path=meta.path,
                done=batch[-1].page_end,
                tokens_per_s=stats.completion_tokens / stats.seconds if stats.seconds else None,
            )
        )
        last = batch[-1].id
        batch.clear()
        return last

    @staticmethod
    def _count(extraction: ChunkExtraction, report: DocumentReport) -> None:
        report.chunks_written += 1
        report.chunks_failed += bool(extraction.failures)
        report.failures.extend(extraction.failures)
        report.llm_calls += extraction.llm_calls
        report.prompt_tokens += extraction.prompt_tokens
        for name, result in extraction.results.items():
            items: object = next(iter(result.model_dump().values()), [])
            report.extractions[name] = report.extractions.get(name, 0) + (len(items) if isinstance(items, list) else 1)

    def _document_results(self, meta: DocumentMeta, runner: BatchExtractor, report: DocumentReport) -> None:
        """The document's categories (chunk votes) and summary (map-reduce over the chunk summaries)."""
        names = {e.name for e in self.extractors}
        if "categories" in names:
            self.writer.write_document_categories(meta.id)
        if "summary" not in names:
            return
        summaries = self.writer.chunk_summaries(meta.id)
        if not summaries:
            return
        result = runner.summarise_document(summaries, meta.title or meta.name, approx_tokens)
        if isinstance(result, ExtractionFailure):
            report.failures.append(result)
            report.chunks_failed += 1  # counted as a failure of the run: the document has no summary
            return
        self.writer.write_document_summary(meta.id, result.summary)
        report.extractions["document_summary"] = 1

    def _noting_pages(self, pages: Iterator[Page], report: DocumentReport, path: Path) -> Iterator[Page]:
        for page in pages:
            if page.status is not PageStatus.OK:
                report.page_notes.append(PageNote(page=page.number, status=page.status, reason=page.reason))
                self.on_event(
                    Event(
                        kind="notice",
                        path=str(path),
                        message=f"{path.name} page {page.number}: {page.status.value} ({page.reason})",
                    )
                )
            yield page

    def _record_failure(self, path: Path, report: DocumentReport) -> None:
        """Record an unreadable file as a failed Document, so it shows in the graph and a rerun retries it."""
        try:
            doc_id = sha256_file(path)
        except OSError:
            doc_id = content_id("unreadable", str(path.resolve()))
        meta = DocumentMeta(id=doc_id, path=str(path.resolve()), name=path.name, n_pages=0)
        report.doc_id = doc_id
        self.writer.upsert_document(meta, DocStatus.FAILED, report.reason)

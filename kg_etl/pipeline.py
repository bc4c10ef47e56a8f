"""The ingest pipeline: read -> chunk -> extract -> write, batch by batch, resumable and idempotent.

Per document: a ``done`` document is skipped before the model is even loaded (re-ingesting an unchanged
folder costs one lookup per file); otherwise its chunks stream from the reader, chunks already in the graph
are skipped (resume after a crash), and every ``batch_size`` chunks are extracted together and written in
one transaction. Document-level results (summary, categories) are built from what the graph holds, so a
resumed document gets the same ones. A document that cannot be read is recorded as ``failed`` with its
reason and the run goes on; a changed PDF (same path, new content) replaces its old version once done.

With more than one model (an extractor given a model of its own), each model but the last first does its
share over every pending document into the extraction cache ("warm-up" passes) and is closed; the last
model's pass is the ordinary one, which writes, and finds the other models' results in the cache. So each
model is loaded once and, unless the user keeps them all, only one is resident at a time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from kg_etl.chunk import approx_tokens
from kg_etl.config import EXTRACTOR_NAMES, IngestSettings, kg_etl_home
from kg_etl.defaults import CHUNK_TOKENS
from kg_etl.engine import Document, LocalEngine, RunEngine
from kg_etl.errors import ConfigError, GraphError, ModelError, ReadError, WorkerCrashedError
from kg_etl.extract.base import Backend, ChunkExtraction, ExtractionFailure, Extractor
from kg_etl.extract.cache import SqliteCache
from kg_etl.extract.run import REDUCE_BUDGET, BatchExtractor
from kg_etl.extract.schema import load_schema
from kg_etl.extract.summary import DOCUMENT_SUMMARY_TASK, SUMMARY, Summary
from kg_etl.extract.validate import VALIDATE, Validations
from kg_etl.graph.connection import Graph
from kg_etl.graph.writer import DocStatus, GraphWriter
from kg_etl.llm.grammar import max_tokens_for
from kg_etl.llm.pool import ModelPool, ModelUse, PooledBackend
from kg_etl.llm.prompt import RETRY_ECHO_CHARS, RETRY_ERROR_CHARS, SYSTEM
from kg_etl.llm.registry import resolve_model
from kg_etl.llm.runtime import Tokenizer, peak_rss_mb
from kg_etl.llm.templates import chat_template_for
from kg_etl.models import Chunk, DocumentMeta, Page, PageStatus, content_id, sha256_file, text_of
from kg_etl.owner import is_stale, this_process
from kg_etl.read import regular_file_problem
from kg_etl.registry import REGISTRY, ExtractOptions, row_builders, select_extractors

__all__ = [
    "ALL_EXTRACTORS",
    "DocumentReport",
    "Event",
    "IngestReport",
    "PageNote",
    "check_models",
    "check_settings",
    "extract_options",
    "find_pdfs",
    "ingest",
    "model_order",
    "run_extractors",
    "sequence_context",
]

ALL_EXTRACTORS = EXTRACTOR_NAMES


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

    @field_validator("path", mode="before")
    @classmethod
    def _unicode(cls, value: object) -> object:
        return text_of(value) if isinstance(value, str | Path) else value

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
    qa_pairs: int = 0
    qa_valid: int = Field(default=0, description="QA pairs the validation pass judged valid")
    replaced: list[str] = Field(default_factory=list, description="ids of older versions removed")
    seconds: float = 0.0


class IngestReport(BaseModel):
    """The whole run."""

    documents: list[DocumentReport] = Field(default_factory=list)
    interrupted: bool = False
    model: str | None = Field(default=None, description="the models loaded, by name, comma-separated")
    models: list[ModelUse] = Field(default_factory=list, description="each model used: loads, calls, tokens")
    max_resident_models: int = Field(default=0, description="most models loaded at the same time")
    gpu_offload: bool = False
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    peak_rss_mb: float | None = Field(default=None, description="this process at its peak (models run in workers)")
    worker_peak_rss_mb: float | None = Field(default=None, description="the largest model worker at its peak")
    error: str | None = Field(default=None, description="what ended the run early, if anything did")

    @property
    def ok(self) -> bool:
        """True when every document is done (or was already) and no chunk has a failed extraction."""
        return not self.interrupted and all(
            d.status in (DocStatus.DONE, "skipped") and d.chunks_failed == 0 for d in self.documents
        )


class Event(BaseModel):
    """Progress for whoever displays it.

    ``kind``: run_start (total = files), document_start (total = pages), stage (message = the batch in
    hand), progress (message = what the model is doing and how many replies are in; done = pages done,
    counting the batch's share of replies; tokens_per_s), batch (done = pages read so far, tokens_per_s),
    document_end (report), notice (message).
    """

    kind: str
    path: str = ""
    message: str = ""
    total: int | None = None
    done: float | None = None
    tokens_per_s: float | None = None
    report: DocumentReport | None = None


EventSink = Callable[[Event], None]


def _ignore(_: Event) -> None:
    pass


def _never() -> bool:
    return False


def find_pdfs(inputs: Sequence[Path]) -> list[Path]:
    """The PDFs named or found (recursively, sorted) under ``inputs``.

    Everything named ``*.pdf`` is returned, whatever it is: a link, a FIFO or a device is not skipped in
    silence but reported by the reader, one line each, as a failed document. Linked folders are not
    followed, so a link loop cannot make the walk endless.

    Raises:
        ConfigError: an input does not exist at all (not even as a dangling link).
    """
    found: list[Path] = []
    for item in inputs:
        if item.is_dir() and not item.is_symlink():
            found.extend(_walk_pdfs(item))
        elif os.path.lexists(item):
            found.append(item)
        else:
            raise ConfigError(f"{item}: no such file or folder")
    return found


def _walk_pdfs(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            if name.lower().endswith(".pdf"):
                found.append(Path(root) / name)
    return sorted(found)


def run_extractors(settings: IngestSettings) -> list[Extractor]:
    """The extractors the settings ask for, made with their options, in registry order.

    Raises:
        ConfigError: no name, an unknown name, an extractor without one it needs, or bad options.
    """
    return select_extractors(settings.extractor_names(), extract_options(settings))


def extract_options(settings: IngestSettings) -> ExtractOptions:
    """What shapes the run's extractors: the category labels, and the user's schema where one is given.

    Raises:
        ConfigError: the schema cannot be read or is not valid.
    """
    schema = load_schema(settings.user_schema) if settings.user_schema is not None else None
    return ExtractOptions(categories=settings.categories, schema=schema)


def check_settings(settings: IngestSettings) -> None:
    """What can be known wrong with the settings before anything starts.

    Raises:
        ConfigError: no or unknown extractors, or a context window too small for a chunk, its instructions,
            what a retry repeats of an invalid reply, and the longest reply the chosen schemas admit.
    """
    extractors = run_extractors(settings)
    reply = max(max_tokens_for(e.schema) for e in extractors)
    task = max((e.instructions("") for e in extractors if e.follow is None), key=len, default="")
    instructions = approx_tokens(SYSTEM + task + "x" * (RETRY_ECHO_CHARS + RETRY_ERROR_CHARS)) + _PROMPT_SLACK
    chunk = settings.chunk_tokens if settings.chunk_tokens is not None else CHUNK_TOKENS
    need = chunk + instructions + reply
    if settings.n_ctx < need:
        raise ConfigError(
            f"--n-ctx {settings.n_ctx} is too small: a {chunk}-token chunk, its instructions and the longest reply "
            f"({reply} tokens) need {need}; raise --n-ctx or lower --chunk-tokens"
        )


# Tokens a prompt has beyond the system prompt, the task and the chunk: the source line, the chat template.
_PROMPT_SLACK = 64


def check_models(settings: IngestSettings) -> None:
    """Every model of the run is on disk (downloaded here where allowed) and has a chat template to use.

    Read from the file's header (its tokenizer only): a model that cannot be prompted stops the run before
    the graph is touched or a document claimed.

    Raises:
        ModelNotFoundError: a model is missing and may not (or cannot) be downloaded.
        ModelError: a GGUF without a chat template, of an architecture kg-etl knows no template for.
        ConfigError: --chat-template names neither a built-in template nor a readable file.
    """
    if settings.llm_url is not None:
        _check_server(settings)
        return
    for ref in dict.fromkeys([settings.model, *settings.extractor_models.values()]):
        path = resolve_model(ref, download=settings.download)
        tokenizer = Tokenizer(path)
        try:
            chat_template_for(tokenizer.metadata, settings.chat_template, path.name)
        finally:
            tokenizer.close()


def _check_server(settings: IngestSettings) -> None:
    """The model server answers and serves the model named (``--llm``, ``--llm-model``).

    Raises:
        ModelError: it cannot be reached, refuses the key, or does not list the model named.
        ConfigError: the server extra is not installed.
    """
    from kg_etl.llm.server import served_models  # LangChain's OpenAI client only when asked for

    assert settings.llm_url is not None
    served = served_models(settings)
    if settings.llm_model is not None and served and settings.llm_model not in served:
        raise ModelError(
            f"{settings.llm_url} does not serve {settings.llm_model!r}; it serves {', '.join(served[:5])} (--llm-model)"
        )


def sequence_context(extractors: Sequence[Extractor], chunk_tokens: int, count_tokens: Callable[[str], int]) -> int:
    """The most context one request of this run can need, counted with the model's tokenizer.

    A chunk request: the chunk, the system prompt and the longest instructions, what a retry repeats of an
    invalid reply and its error, and the longest reply the chosen schemas admit. A document-summary
    request: a reduce group of chunk summaries and the summary's reply. Each sequence of the batched
    decoder gets this much, not the whole --n-ctx: KV cache memory grows with it.
    """
    reply = max(max_tokens_for(e.schema) for e in extractors)
    task = max((e.instructions("") for e in extractors if e.follow is None), key=len, default="")
    retry = "x" * (RETRY_ECHO_CHARS + RETRY_ERROR_CHARS)
    chunk = chunk_tokens + count_tokens(SYSTEM + task + retry) + _PROMPT_SLACK + reply
    if not any(e.name == SUMMARY.name for e in extractors):
        return chunk
    group = "x" * (REDUCE_BUDGET * 4)  # reduce groups are cut by approx_tokens, ~4 characters a token
    reduce = count_tokens(SYSTEM + DOCUMENT_SUMMARY_TASK + group) + _PROMPT_SLACK + max_tokens_for(SUMMARY.schema)
    return max(chunk, reduce)


def model_order(settings: IngestSettings, extractors: Sequence[Extractor]) -> list[str]:
    """The run's distinct models in the order their work runs: by first use, but after what they need.

    An extractor that works on others' results (validation on the QA pairs) can only run once those exist:
    its model moves after theirs. Every other extractor reads only its chunk.
    """
    names = [e.name for e in extractors]
    order = list(dict.fromkeys(settings.model_for(name) for name in names))
    for name in names:
        mine = settings.model_for(name)
        needed = [settings.model_for(need) for need in REGISTRY[name].needs if need in names]
        if any(order.index(other) > order.index(mine) for other in needed if other != mine):
            order.remove(mine)
            order.append(mine)
    return order


def ingest(
    inputs: Sequence[Path],
    graph: Graph,
    settings: IngestSettings,
    *,
    on_event: EventSink = _ignore,
    should_stop: Callable[[], bool] = _never,
    report: IngestReport | None = None,
    engine: RunEngine | None = None,
) -> IngestReport:
    """Ingest every PDF under ``inputs`` into ``graph``; failures are reported, never raised per file.

    ``should_stop`` is polled between batches (Ctrl-C): the run then ends after the batch in hand is
    committed, with the document left to resume. ``report`` is filled in as the run goes, so a caller that
    passes one has it on every way out, an exception included. ``engine`` says where the models run and the
    PDFs are read (default: here, one document after the other; ``kg_etl.distributed``: on a Ray cluster).

    Raises:
        ConfigError: an input does not exist or an extractor name is unknown.
        GraphError: the graph is unreachable (nothing half-written stays: batches are transactions).
        ModelError: the model cannot be found or loaded; ``WorkerCrashedError`` when its worker died.
    """
    check_settings(settings)
    check_models(settings)
    extractors = run_extractors(settings)
    paths = find_pdfs(inputs)
    graph.apply_schema()
    started = time.perf_counter()
    report = report if report is not None else IngestReport()
    engine = engine if engine is not None else LocalEngine()
    run = _Run(
        settings,
        GraphWriter(graph, row_builders((e.name for e in extractors), extract_options(settings))),
        engine.models(settings, lambda message: on_event(Event(kind="notice", message=message))),
        extractors,
        SqliteCache(kg_etl_home() / "cache" / "extractions.sqlite"),
        on_event,
        should_stop,
        engine,
    )
    on_event(Event(kind="run_start", total=len(paths)))
    try:
        done = run.warm_up(paths) and engine.each_document(run, paths, lambda lane, path: lane.step(path, report))
        report.interrupted = not done
    finally:
        run.close(report)
        report.seconds = time.perf_counter() - started
    return report


class _Run:
    """State shared by the documents of one ingest: settings, writer, the models, the extractor and the cache."""

    def __init__(
        self,
        settings: IngestSettings,
        writer: GraphWriter,
        pool: ModelPool,
        extractors: list[Extractor],
        cache: SqliteCache,
        on_event: EventSink,
        should_stop: Callable[[], bool],
        engine: RunEngine,
    ) -> None:
        self.settings, self.writer, self.pool, self.engine = settings, writer, pool, engine
        self.extractors, self.cache, self.on_event = extractors, cache, on_event
        self.should_stop = should_stop
        self.owner = this_process()
        self.order = model_order(settings, extractors)
        self.document_steps = {step for e in extractors if (step := REGISTRY[e.name].document)}
        chunk_tokens = settings.chunk_tokens if settings.chunk_tokens is not None else CHUNK_TOKENS
        pool.sequence_context = lambda: sequence_context(extractors, chunk_tokens, self.count_tokens)
        # One backend per model, shared by its extractors: the extractor groups a round's jobs by backend.
        refs = dict.fromkeys([settings.model, *settings.extractor_models.values()])
        self.backends: dict[str, Backend] = {ref: PooledBackend(pool, ref) for ref in refs}
        self.runner = BatchExtractor(
            self.backends[settings.model],
            extractors,
            retries=settings.retries,
            cache=cache,
            backends={e.name: self.backends[settings.model_for(e.name)] for e in extractors},
        )
        self.warmed: dict[str, tuple[int, int]] = {}  # doc id -> LLM calls and prompt tokens of warm-up passes
        self.pages_shown = 0.0  # how far the progress display's pages bar is, in the current document
        self.covered_before: list[str] = []  # what a done document being reopened already covers

    def fork(self, writer: GraphWriter, on_event: EventSink, should_stop: Callable[[], bool]) -> _Run:
        """Another lane of this run, for an engine that works on several documents at once.

        It shares the settings, the models and the warm-up records; it has a cache connection and extraction
        state of its own (an SQLite connection serves one thread), and the writer and event sink it is given,
        which the engine makes safe to share. ``close_fork`` ends it.
        """
        cache = SqliteCache(self.cache.path)
        lane = _Run(self.settings, writer, self.pool, self.extractors, cache, on_event, should_stop,
                    self.engine)  # fmt: skip
        lane.warmed = self.warmed
        # Failures are remembered for the run, not cached: shared, so no lane asks a model again for what
        # another lane's pass already gave up on (on one machine, the one extractor remembers them).
        lane.runner._failed = self.runner._failed
        return lane

    def close_fork(self) -> None:
        self.cache.close()

    def step(self, path: Path, report: IngestReport) -> bool:
        """One document of the writing pass, recorded in ``report``; False when it was interrupted."""
        doc_report = DocumentReport(path=str(path), status=DocStatus.PROCESSING)
        report.documents.append(doc_report)  # before the work: a crash then still shows where it was
        self.document(path, doc_report)
        self.on_event(Event(kind="document_end", path=str(path), report=doc_report))
        return doc_report.status != "interrupted"

    def close(self, report: IngestReport) -> None:
        report.models = [use for use in self.pool.usage.values() if use.loads]
        report.model = ", ".join(use.name for use in report.models) or None
        report.gpu_offload = any(use.offloaded for use in report.models)
        report.max_resident_models = self.pool.max_resident
        self.pool.close()
        stats = self.pool.stats()
        report.llm_calls, report.prompt_tokens = stats.calls, stats.prompt_tokens
        report.completion_tokens = stats.completion_tokens
        report.peak_rss_mb = peak_rss_mb()
        report.worker_peak_rss_mb = max((u.worker_peak_rss_mb or 0.0 for u in report.models), default=0.0) or None
        self.cache.close()

    def count_tokens(self, text: str) -> int:
        # Chunks are always cut with the run's main model's tokenizer: the same chunks whichever model runs.
        return self.pool.tokenizer(self.settings.model).count_tokens(text)

    def document(self, path: Path, report: DocumentReport) -> None:
        """Ingest one file into ``report``; a read failure is recorded, anything else ends the run."""
        started = time.perf_counter()
        try:
            self._process(path, report)
        except ReadError as e:
            report.status, report.reason = DocStatus.FAILED, e.reason
            self._record_failure(path, report)
            self.on_event(Event(kind="notice", path=str(path), message=f"skipped {e}"))
        except BaseException as e:
            report.status, report.reason = "interrupted", str(e) or type(e).__name__
            raise
        finally:
            report.seconds = time.perf_counter() - started

    def _open(self, path: Path) -> Document:
        return self.engine.open(path, self.settings)

    @functools.cached_property
    def coverage(self) -> list[str]:
        """What this run extracts, as name@version@model for each extractor (the validation pass included).

        A document is done for this run only if its recorded coverage includes all of it: a later run that
        asks for more extractors (or another model, or a new extractor version) does the missing work.
        """
        return sorted(f"{e.name}@{e.version}@{self.runner.backend_for(e).model_id}" for e in self.extractors)

    def _settled(self, status: str | None, coverage: Sequence[str]) -> bool:
        """Whether a document in this state is left alone: done with all this run asks for, or failed with
        retries of failures off."""
        done = status == DocStatus.DONE and set(self.coverage) <= set(coverage)
        return done or (status == DocStatus.FAILED and not self.settings.retry_failed)

    def _process(self, path: Path, report: DocumentReport) -> None:
        doc = self._open(path)
        meta = doc.meta
        report.doc_id, report.pages = meta.id, meta.n_pages
        status, coverage = self.writer.document_state(meta.id)
        if self._settled(status, coverage):
            report.status, report.reason = "skipped", None if status == DocStatus.DONE else "failed before"
            return
        self.covered_before = coverage if status == DocStatus.DONE else []
        if not self.writer.claim(meta, self.owner, is_stale, reopen=status == DocStatus.DONE):
            report.status, report.reason = "skipped", "being ingested by another kg-etl process"
            self.on_event(Event(kind="notice", path=str(path), message=f"{path.name}: {report.reason}"))
            return
        try:
            self._claimed(doc, report)
        finally:
            if report.status != DocStatus.DONE:
                self._release(meta.id)

    def _claimed(self, doc: Document, report: DocumentReport) -> None:
        meta = doc.meta
        self.pages_shown = 0.0
        self.on_event(Event(kind="document_start", path=meta.path, total=meta.n_pages))
        runner = self.runner
        calls, tokens = self.warmed.pop(meta.id, (0, 0))
        report.llm_calls, report.prompt_tokens = calls, tokens
        if not self._chunks(doc, runner, report):
            report.status = "interrupted"
            return
        if report.chunks == 0:
            raise ReadError(meta.path, _no_text_reason(meta, report))
        self._document_results(meta, runner, report)
        for old in self.writer.other_versions(meta):
            self.writer.remove_document(old)
            report.replaced.append(old)
        report.status = DocStatus.DONE
        coverage = sorted(set(self.coverage) | set(self.covered_before))
        self.writer.upsert_document(
            meta, DocStatus.DONE, n_chunks=report.chunks, owner=None, finished_at=time.time(), coverage=coverage
        )

    def _release(self, doc_id: str) -> None:
        # If the graph is gone, the claim goes stale with this process and a rerun takes it over.
        with contextlib.suppress(GraphError):
            self.writer.release(doc_id, self.owner)

    def _chunks(self, doc: Document, runner: BatchExtractor, report: DocumentReport) -> bool:
        """Extract and write every chunk not yet in the graph; False when stopped before the end."""
        done = self.writer.done_chunk_ids(doc.meta.id, self.coverage)
        pages = self._noting_pages(doc.pages(), report, Path(doc.meta.path))
        chunks = self._chunk(doc, pages)
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
        self.on_event(Event(kind="stage", path=meta.path, message=_doing(batch, meta)))
        with self._working(batch, meta):
            extractions = runner.run(batch, meta.title or "")
        self.writer.write_batch(extractions, prev, owner=self.owner, coverage=self.coverage)
        for extraction in extractions:
            self._count(extraction, report)
        self.on_event(Event(kind="batch", path=meta.path, done=batch[-1].page_end, tokens_per_s=self._speed()))
        last = batch[-1].id
        batch.clear()
        return last

    def _speed(self) -> float | None:
        stats = self.pool.stats()
        return stats.completion_tokens / stats.seconds if stats.seconds else None

    @contextlib.contextmanager
    def _working(self, batch: Sequence[Chunk], meta: DocumentMeta) -> Iterator[None]:
        """Extraction on a batch: progress told reply by reply, and a worker crash told with the batch."""
        first = batch[0].page_start - 1 if batch else meta.n_pages
        span = batch[-1].page_end - first if batch else 0

        def progress(stage: str, done: int, total: int) -> None:
            # The chunk extractors' share of the batch moves the pages bar; later passes only say what they do.
            # Batches share pages where a chunk crosses one, so the bar never moves back.
            pages = None
            if total and stage not in _LATER_PASSES:
                pages = self.pages_shown = max(self.pages_shown, first + span * done / total)
            message = f"{stage}: {done}/{total} replies"
            self.on_event(
                Event(kind="progress", path=meta.path, message=message, done=pages, tokens_per_s=self._speed())
            )

        self.runner.on_progress = progress
        try:
            with _crash_context(batch, meta):
                yield
        finally:
            self.runner.on_progress = None

    @staticmethod
    def _count(extraction: ChunkExtraction, report: DocumentReport) -> None:
        report.chunks_written += 1
        report.chunks_failed += bool(extraction.failures)
        report.failures.extend(extraction.failures)
        report.llm_calls += extraction.llm_calls
        report.prompt_tokens += extraction.prompt_tokens
        validations = extraction.results.get(VALIDATE.name)
        if isinstance(validations, Validations):
            report.qa_pairs += len(validations.items)
            report.qa_valid += sum(v is not None and v.verdict == "valid" for v in validations.items)
        for name, result in extraction.results.items():
            items: object = next(iter(result.model_dump().values()), [])
            report.extractions[name] = report.extractions.get(name, 0) + (len(items) if isinstance(items, list) else 1)

    def _document_results(self, meta: DocumentMeta, runner: BatchExtractor, report: DocumentReport) -> None:
        """The document's categories (chunk votes) and summary (map-reduce over the chunk summaries)."""
        if "vote" in self.document_steps:
            self.writer.write_document_categories(meta.id)
        if "reduce" not in self.document_steps:
            return
        summaries = list(self.writer.chunk_summaries(meta.id).values())
        if not summaries:
            return
        with self._working([], meta):
            result = runner.summarise_document(summaries, meta.title or "", approx_tokens)
        if isinstance(result, ExtractionFailure):
            report.failures.append(result)
            report.chunks_failed += 1  # counted as a failure of the run: the document has no summary
            return
        self.writer.write_document_summary(meta.id, result.summary)
        report.extractions["document_summary"] = 1

    def _chunk(self, doc: Document, pages: Iterator[Page]) -> Iterator[Chunk]:
        return self.engine.chunks(doc, pages, self.settings, self.count_tokens)

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
            if regular_file_problem(path) is not None:  # never hash a FIFO or a device: it would not end
                raise OSError(path)
            doc_id = sha256_file(path)
        except OSError:
            doc_id = content_id("unreadable", text_of(os.path.abspath(path)))
        meta = DocumentMeta(id=doc_id, path=os.path.abspath(path), name=path.name, n_pages=0)
        report.doc_id = doc_id
        self.writer.upsert_document(meta, DocStatus.FAILED, report.reason)

    # -- warm-up passes: one model at a time over every pending document, results into the cache ----------

    def warm_up(self, paths: Sequence[Path]) -> bool:
        """Each model but the last does its share of every pending document, then is closed.

        Returns False when stopped (Ctrl-C) first: what was extracted stays in the cache for the rerun.
        """
        if self.settings.keep_models_loaded:
            return True
        for n, ref in enumerate(self.order[:-1], start=1):
            mine = [e.name for e in self.extractors if self.settings.model_for(e.name) == ref]
            message = f"pass {n}/{len(self.order)}: {Path(ref).stem} runs {', '.join(mine)} over every document"
            self.on_event(Event(kind="notice", message=message))
            done = self.engine.each_document(self, paths, functools.partial(_Run._warm_document, ref=ref))
            self.pool.release(ref)
            if not done:
                return False
        return True

    def _warm_document(self, path: Path, ref: str) -> bool:
        """One model's share of one document; unreadable or finished documents are left to the writing pass."""
        try:
            doc = self._open(path)
            if self._settled(*self.writer.document_state(doc.meta.id)):
                return True
            return self._warm_chunks(doc, self.backends[ref])
        except ReadError:
            return True  # the writing pass reads it again and reports why it failed

    def _warm_chunks(self, doc: Document, backend: Backend) -> bool:
        meta = doc.meta
        self.pages_shown = 0.0
        self.on_event(Event(kind="document_start", path=meta.path, total=meta.n_pages))
        done = self.writer.done_chunk_ids(meta.id, self.coverage)
        summaries = self.writer.chunk_summaries(meta.id)  # the document summary is built from all of them
        batch: list[Chunk] = []
        for chunk in self._chunk(doc, doc.pages()):
            if chunk.id not in done:
                batch.append(chunk)
            if len(batch) >= self.settings.batch_size:
                summaries |= self._warm_batch(batch, meta, backend)
                if self.should_stop():
                    return False
        if batch:
            summaries |= self._warm_batch(batch, meta, backend)
        if "reduce" in self.document_steps and self.runner.backend_for(SUMMARY) is backend:
            ordered = [summaries[i] for i in sorted(summaries)]
            with self._working([], meta):
                self.runner.summarise_document(ordered, meta.title or "", approx_tokens)
        return True

    def _warm_batch(self, batch: list[Chunk], meta: DocumentMeta, backend: Backend) -> dict[int, str]:
        """Runs one model's jobs for a batch; returns the chunk summaries now known, by chunk index."""
        self.on_event(Event(kind="stage", path=meta.path, message=_doing(batch, meta)))
        with self._working(batch, meta):
            outs = self.runner.run(batch, meta.title or "", only=backend)
        calls, tokens = self.warmed.get(meta.id, (0, 0))
        calls += sum(out.llm_calls for out in outs)
        self.warmed[meta.id] = (calls, tokens + sum(out.prompt_tokens for out in outs))
        self.on_event(Event(kind="batch", path=meta.path, done=batch[-1].page_end))
        batch.clear()
        return {o.chunk.index: r.summary for o in outs if isinstance(r := o.results.get("summary"), Summary)}


_LATER_PASSES = (VALIDATE.shown_as, "document summary")


def _no_text_reason(meta: DocumentMeta, report: DocumentReport) -> str:
    """Why a document gave no chunk at all, from what its pages said, and what to do about it."""
    kinds: dict[str, int] = {}
    for note in report.page_notes:
        kinds[note.status.value] = kinds.get(note.status.value, 0) + 1
    seen = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no page with text"
    hint = "if it is a scan, run OCR on it first (e.g. ocrmypdf)" if "no_text" in kinds else "check the file"
    return f"no text in any of its {meta.n_pages} pages ({seen}); {hint}"


def _doing(batch: Sequence[Chunk], meta: DocumentMeta) -> str:
    """What a batch's extraction is about, for progress and for the one line a crash gets."""
    if not batch:
        return f"summarising {meta.name}"
    chunks = f"chunk {batch[0].index + 1}" if len(batch) == 1 else f"chunks {batch[0].index + 1}-{batch[-1].index + 1}"
    return f"extracting {meta.name} {chunks}, pages {batch[0].page_start}-{batch[-1].page_end}"


@contextlib.contextmanager
def _crash_context(batch: Sequence[Chunk], meta: DocumentMeta) -> Iterator[None]:
    """A model worker's crash, told with the document and chunks it was working on."""
    try:
        yield
    except WorkerCrashedError as e:
        raise e.during(_doing(batch, meta)) from e

"""Where an ingest's work runs: the models, the reading of PDFs, and how documents are taken in turn.

The ingest (``kg_etl.pipeline``) decides *what* is done: claims, batches, extraction rounds, the cache,
the writes, the document results. A ``RunEngine`` decides *where*: ``LocalEngine`` runs the models in worker
processes on this machine, reads PDFs here and takes documents one after the other; the Ray engine
(``kg_etl.distributed``) runs the models as actors on a cluster, reads PDFs in Ray tasks and works on several
documents at once. Both drive the same pipeline code, so both build the same graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from kg_etl.chunk import chunk_pages
from kg_etl.config import IngestSettings
from kg_etl.graph.writer import GraphWriter
from kg_etl.llm.pool import ModelPool
from kg_etl.models import Chunk, DocumentMeta, Page
from kg_etl.read import PdfDocument, open_pdf

if TYPE_CHECKING:
    from kg_etl.pipeline import Event

__all__ = ["Document", "Lane", "LocalEngine", "RunEngine", "open_document", "split_document"]


class Document(Protocol):
    """An opened PDF: its identity and metadata now, its pages when asked (``read.PdfDocument``, or one read
    on a cluster)."""

    @property
    def meta(self) -> DocumentMeta: ...

    def pages(self) -> Iterator[Page]: ...


class Lane(Protocol):
    """The part of a run that works on one document at a time (``pipeline``'s run, or a fork of it)."""

    writer: GraphWriter

    def should_stop(self) -> bool: ...

    def on_event(self, event: Event) -> None: ...

    def fork(self: L, writer: GraphWriter, on_event: Callable[[Event], None], should_stop: Callable[[], bool]) -> L:
        """Another lane for a document worked on at the same time, with the given shared writer and sink."""
        ...

    def close_fork(self) -> None: ...


L = TypeVar("L", bound=Lane)


class RunEngine(Protocol):
    """Where a run's models run, where its PDFs are read and chunked, and how its documents are taken in turn."""

    def models(self, settings: IngestSettings, notify: Callable[[str], None]) -> ModelPool:
        """The run's models: ``backend(ref)`` runs a model's jobs wherever the engine keeps it."""
        ...

    def open(self, path: Path, settings: IngestSettings) -> Document:
        """The opened PDF: its ``meta`` now (no page read yet), its pages from ``pages()``.

        Raises:
            ReadError: the file cannot be read (the run records it as failed and goes on).
        """
        ...

    def chunks(
        self, doc: Document, pages: Iterator[Page], settings: IngestSettings, count_tokens: Callable[[str], int]
    ) -> Iterator[Chunk]:
        """The document's chunks, cut from ``pages`` (which the caller watches for pages without text)."""
        ...

    def each_document(self, lane: L, paths: Sequence[Path], work: Callable[[L, Path], bool]) -> bool:
        """``work(lane, path)`` for every path, until one returns False or ``lane.should_stop()``.

        Returns False when stopped early. An engine that works on several documents at once gives each
        its own lane (a fork of ``lane``); one that works on one at a time uses ``lane`` itself.
        """
        ...


class LocalEngine:
    """One machine: models in worker processes here (or on the user's model server, ``--llm``), PDFs read here,
    documents one after the other."""

    def models(self, settings: IngestSettings, notify: Callable[[str], None]) -> ModelPool:
        if settings.llm_url is not None:
            from kg_etl.llm.server import ServerPool  # LangChain's OpenAI client only when asked for

            return ServerPool(settings, notify)
        return ModelPool(settings, notify)

    def open(self, path: Path, settings: IngestSettings) -> PdfDocument:
        return open_document(path, settings)

    def chunks(
        self, doc: Document, pages: Iterator[Page], settings: IngestSettings, count_tokens: Callable[[str], int]
    ) -> Iterator[Chunk]:
        return split_document(doc.meta.id, pages, settings, count_tokens)

    def each_document(self, lane: L, paths: Sequence[Path], work: Callable[[L, Path], bool]) -> bool:
        return all(not lane.should_stop() and work(lane, path) for path in paths)


def open_document(path: Path, settings: IngestSettings) -> PdfDocument:
    """A PDF opened with the run's passwords and time limit (see ``read.open_pdf``)."""
    password = settings.password.get_secret_value() if settings.password else None
    return open_pdf(path, password=password, passwords=settings.passwords, timeout_s=settings.read_timeout)


def split_document(
    doc_id: str, pages: Iterator[Page], settings: IngestSettings, count_tokens: Callable[[str], int]
) -> Iterator[Chunk]:
    """Pages to chunks with the run's chunk options: the same cut wherever it runs."""
    return chunk_pages(
        pages,
        doc_id,
        max_tokens=settings.chunk_tokens,
        overlap_tokens=settings.overlap_tokens,
        count_tokens=count_tokens,
    )

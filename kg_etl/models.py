"""Pydantic contracts that the stages exchange: read -> chunk -> extract -> graph -> export."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "PAGE_SEPARATOR",
    "TEXT_STATUSES",
    "Chunk",
    "DocumentMeta",
    "Page",
    "PageStatus",
    "content_id",
    "document_text",
    "sha256_file",
    "text_of",
]

# Between the texts of two pages in the document text. A blank line reads as a paragraph break, so the
# chunker prefers to end chunks at page ends, and it cannot be confused with text (pages are stripped).
PAGE_SEPARATOR = "\n\n"


def content_id(*parts: str | int) -> str:
    """Stable id from content: the first 32 hex digits of sha256 over the parts, NUL-separated."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def text_of(value: str | Path) -> str:
    """A path (or any text from the OS) as valid Unicode: bytes that are not UTF-8 are written ``\\xff``.

    POSIX file names are bytes, and Python keeps undecodable ones as lone surrogates, which the graph
    driver, JSON and the terminal all refuse. The file itself is still opened by its real name.
    """
    text = str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large files never sit in memory whole."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PageStatus(StrEnum):
    """What the reader made of one page; only OK pages feed extraction by default."""

    OK = "ok"
    NO_TEXT = "no_text"  # no text layer (scanned): the seam where an OCR step would plug in
    GARBLED = "garbled"  # text layer is mojibake (fonts without ToUnicode)
    ERROR = "error"  # pypdf raised on this page; the rest of the document is kept


# The pages whose text is part of the document text; the others have text "" and add nothing to it.
TEXT_STATUSES = frozenset({PageStatus.OK, PageStatus.GARBLED})


class Page(_Frozen):
    """One page of normalised text and where it sits in the document text."""

    number: int = Field(ge=1, description="1-based page number as printed by PDF viewers")
    text: str = Field(description="normalised text of the page ('' unless status is OK or GARBLED)")
    status: PageStatus = PageStatus.OK
    reason: str | None = Field(default=None, description="why the page is not OK")
    char_start: int = Field(ge=0, description="offset of this page's text in the document text")


def document_text(pages: Iterable[Page]) -> str:
    """The document text: texts of the TEXT_STATUSES pages, in order, joined by PAGE_SEPARATOR.

    Page offsets, chunk offsets and citations all point into this string.
    """
    return PAGE_SEPARATOR.join(p.text for p in pages if p.status in TEXT_STATUSES)


class DocumentMeta(_Frozen):
    """A PDF's identity and metadata; ``id`` is the sha256 of its bytes."""

    id: str
    path: str
    name: str
    n_pages: int = Field(ge=0)
    title: str | None = None
    author: str | None = None
    created: str | None = None
    modified: str | None = None

    @field_validator("path", "name", "title", "author", mode="before")
    @classmethod
    def _unicode(cls, value: object) -> object:
        return text_of(value) if isinstance(value, str | Path) else value


class Chunk(_Frozen):
    """A span of the document text with exact provenance.

    ``doc_text[char_start:char_end] == text`` where ``doc_text`` is the normalised document text.
    """

    id: str = Field(description="content hash of document id, index and text")
    doc_id: str
    index: int = Field(ge=0)
    text: str
    page_start: int = Field(ge=1)
    page_end: int = Field(ge=1)
    char_start: int = Field(ge=0)
    char_end: int = Field(ge=0)
    n_tokens: int = Field(ge=0)
    overlap_chars: int = Field(
        default=0, ge=0, description="leading chars also in the previous chunk (char_start..its char_end)"
    )

    @property
    def text_hash(self) -> str:
        """Hash of the text alone: the extraction cache key, shared by identical chunks anywhere."""
        return content_id(self.text)

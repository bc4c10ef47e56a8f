"""Pages -> chunks: token-budgeted, cut at natural boundaries, streamed, with exact provenance. Pure: no I/O.

Guarantees, for the document text ``doc = models.document_text(pages)``:
    - ``doc[c.char_start:c.char_end] == c.text``; ``c.page_start``/``c.page_end`` are the pages of its first
      and last character; the text neither starts nor ends with whitespace.
    - ``c.n_tokens == count_tokens(c.text) <= max_tokens``.
    - Every non-space character of every included page lies in some chunk: chunks start in order, each
      before the previous one ends (``overlap_chars`` says by how much) or after only whitespace.
    - A chunk never spans a page that is left out: text on both sides of a missing page is not contiguous.
    - Memory holds about one chunk plus one page, however long the document.

Which pages: OK pages, plus GARBLED ones if asked (their text is mojibake, so not by default). NO_TEXT and
ERROR pages have no text.

Where a chunk ends: the last paragraph break that keeps the chunk at least half full, else the last sentence
end that does, else the last space, else (one "word" longer than the budget) wherever the budget runs out.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from kg_etl.defaults import CHUNK_TOKENS, OVERLAP_TOKENS
from kg_etl.errors import ConfigError
from kg_etl.models import PAGE_SEPARATOR, TEXT_STATUSES, Chunk, Page, PageStatus, content_id

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_OVERLAP_TOKENS",
    "TokenCounter",
    "approx_tokens",
    "chunk_pages",
]

# 512 tokens: the LFM2 models (350M-1.2B) read best in short inputs, and 512 tokens plus the extraction
# instructions, the JSON schema and the longest reply fit a 4-8k context that keeps the KV cache small. A
# dense page (~600-900 tokens) makes one or two chunks, so page citations stay narrow. Peers use 100 tokens
# (too little context for a fact), 512 (docling) or 1200 (too much for a small model to read closely).
DEFAULT_MAX_TOKENS = CHUNK_TOKENS
# 64 tokens (~one or two sentences): a fact cut at a chunk end is whole in the next chunk, at ~12% extra work.
DEFAULT_OVERLAP_TOKENS = OVERLAP_TOKENS

TokenCounter = Callable[[str], int]

_MIN_FILL = 0.5  # a paragraph or sentence end is taken only if the chunk stays at least this full
# A sentence ends after . ! ? or … before a space (closing quotes and brackets stay with it), or after a
# CJK full stop, which needs no space.
_SENTENCE_END = re.compile(r"[.!?…][)\]\"'”’»]*(?=\s)|[。！？][)\]\"'”’»」』]*")
_SPACE_THEN_WORD = re.compile(r"\s+(?=\S)")


def approx_tokens(text: str) -> int:
    """Token count estimate for when no model tokenizer is loaded: (characters + 1.5 x extra UTF-8 bytes) / 4.

    BPE vocabularies of ~32-65k entries (LFM2's is 65k) average about 4 characters per token on English
    and other Latin-script prose; CJK costs about one token per character (3 UTF-8 bytes: (1 + 3) / 4) and
    Cyrillic or Greek about one per 1.6 characters (2 bytes: (1 + 1.5) / 4). It is O(n) in C, so the
    chunker can call it freely; numbers and symbol-heavy text count low, which a model tokenizer fixes.
    """
    if text.isascii():
        return (len(text) + 3) // 4
    extra = len(text.encode("utf-8", "surrogatepass")) - len(text)
    return (len(text) + extra + extra // 2 + 3) // 4


def chunk_pages(
    pages: Iterable[Page],
    doc_id: str,
    *,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    overlap_tokens: int | None = DEFAULT_OVERLAP_TOKENS,
    count_tokens: TokenCounter | None = None,
    include_garbled: bool = False,
) -> Iterator[Chunk]:
    """Cut the pages' text into chunks as the pages stream in (see the module docstring for guarantees).

    Args:
        pages: in order, with offsets as ``read.PdfDocument.pages`` gives them.
        max_tokens, overlap_tokens: the budget per chunk and the overlap between neighbours; None takes
            the default. Overlap may be at most half the budget, so every chunk moves forward.
        count_tokens: the loaded model's token counter; None uses ``approx_tokens``.
        include_garbled: chunk GARBLED pages too.

    Raises:
        ConfigError: the budget or overlap is out of range.
        ValueError: the pages' offsets do not match their texts.
    """
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    overlap_tokens = DEFAULT_OVERLAP_TOKENS if overlap_tokens is None else overlap_tokens
    _check_budget(max_tokens, overlap_tokens)
    include = {PageStatus.OK, PageStatus.GARBLED} if include_garbled else {PageStatus.OK}
    window = _Window(doc_id, max_tokens, overlap_tokens, count_tokens or approx_tokens)
    expected = 0  # where the next text page must start in the document text
    for page in pages:
        if page.status in TEXT_STATUSES:
            if page.char_start != expected:
                raise ValueError(f"page {page.number} starts at {page.char_start}, expected {expected}")
            expected = page.char_start + len(page.text) + len(PAGE_SEPARATOR)
        if page.status in include:
            window.add(page)
            yield from window.chunks(final=False)
        else:
            yield from window.finish()
    yield from window.finish()


def _check_budget(max_tokens: int, overlap_tokens: int) -> None:
    if max_tokens < 1:
        raise ConfigError(f"chunk size {max_tokens} tokens is too small; use at least 1 (default {DEFAULT_MAX_TOKENS})")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ConfigError(
            f"chunk overlap {overlap_tokens} tokens must be between 0 and half the chunk size ({max_tokens // 2})"
        )


class _Window:
    """The text not yet fully chunked: from the next chunk's start to the end of the last page added.

    ``buf`` starts at document offset ``start``; ``pos`` is the next chunk's start within ``buf``.
    """

    def __init__(self, doc_id: str, max_tokens: int, overlap_tokens: int, count: TokenCounter) -> None:
        self.doc_id = doc_id
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.count = count
        self.index = 0
        self._reset()

    def _reset(self) -> None:
        self.buf = ""
        self.start = 0
        self.pos = 0
        self.pages: deque[tuple[int, int, int]] = deque()  # (doc start, doc end, number) of pages in buf
        self.prev_end = -1  # document offset where the previous chunk of this run ends

    def add(self, page: Page) -> None:
        if self.pages:
            self.buf += PAGE_SEPARATOR + page.text
        else:
            self.buf, self.start, self.pos = page.text, page.char_start, 0
        self.pages.append((page.char_start, page.char_start + len(page.text), page.number))

    def finish(self) -> Iterator[Chunk]:
        """The rest of the run; then start afresh (chunk indexes go on)."""
        yield from self.chunks(final=True)
        self._reset()

    def chunks(self, *, final: bool) -> Iterator[Chunk]:
        """Cut every chunk the text so far decides; with ``final``, the rest too."""
        while True:
            self.pos = _skip_space(self.buf, self.pos)
            if self.pos >= len(self.buf):
                return
            fit = self._fit()
            if fit == len(self.buf):  # the rest fits: it is a chunk only once no more text can follow
                end = _rstrip(self.buf, self.pos, fit)
                if final and self.start + end > self.prev_end:
                    yield self._emit(end)
                return
            cut = self._cut(fit)
            if self.start + cut <= self.prev_end:  # the overlap leaves no room for new text: drop it
                self.pos = self.prev_end - self.start
                continue
            yield self._emit(cut)
            self._advance(cut)

    def _fits(self, end: int) -> bool:
        return self.count(self.buf[self.pos : end]) <= self.max_tokens

    def _fit(self) -> int:
        """The farthest end such that buf[pos:end] fits the budget (len(buf) if all of it does).

        Exponential then binary search: a handful of counts on chunk-sized strings, even in a huge page.
        """
        n = len(self.buf)
        lo, step = self.pos, 4 * self.max_tokens
        while True:
            probe = min(lo + step, n)
            if not self._fits(probe):
                hi = probe
                break
            if probe == n:
                return n
            lo, step = probe, step * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._fits(mid) else (lo, mid)
        if lo == self.pos:
            raise ConfigError(f"chunk size {self.max_tokens} tokens cannot hold a single character; raise it")
        return lo

    def _cut(self, fit: int) -> int:
        """Where the chunk from pos ends, at most ``fit``: the best boundary, trailing spaces dropped."""
        buf, pos = self.buf, self.pos
        floor = max(pos + 1, self.prev_end - self.start + 1)  # the chunk must reach past the previous one
        full = max(floor, pos + math.ceil((fit - pos) * _MIN_FILL))
        candidates = (
            buf.rfind(PAGE_SEPARATOR, full, fit + len(PAGE_SEPARATOR)),
            _last_sentence_end(buf, full, fit),
            max(buf.rfind(" ", floor, fit + 1), buf.rfind("\n", floor, fit + 1)),
        )
        stripped = (_rstrip(buf, pos, c) for c in candidates if c >= 0)
        cut = next((c for c in stripped if c >= floor), _rstrip(buf, pos, fit))
        while self.count(buf[pos:cut]) > self.max_tokens:  # only for counters where a prefix can cost more
            cut = _rstrip(buf, pos, cut - 1)
        return cut

    def _advance(self, cut: int) -> None:
        """Start the next chunk ~overlap_tokens before ``cut``, at a sentence or word start; drop used text."""
        self.pos = self._overlap_start(cut) if self.overlap_tokens else cut
        self.buf = self.buf[self.pos :]
        self.start += self.pos
        self.pos = 0
        while self.pages and self.pages[0][1] <= self.start and len(self.pages) > 1:
            self.pages.popleft()

    def _overlap_start(self, cut: int) -> int:
        lo, hi = self.pos, cut  # buf[hi:cut] fits the overlap budget; buf[lo:cut] is taken not to
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.count(self.buf[mid:cut]) <= self.overlap_tokens else (mid, hi)
        half = hi + (cut - hi) // 2
        m = _SENTENCE_END.search(self.buf, max(self.pos, hi - 1), half)
        start = _skip_space(self.buf, m.end()) if m else -1
        if not hi <= start < cut:
            m = _SPACE_THEN_WORD.search(self.buf, hi - 1, cut)
            start = m.end() if m else cut
        return start if start < cut else cut

    def _emit(self, cut: int) -> Chunk:
        text = self.buf[self.pos : cut]
        char_start, char_end = self.start + self.pos, self.start + cut
        chunk = Chunk(
            id=content_id(self.doc_id, self.index, text),
            doc_id=self.doc_id,
            index=self.index,
            text=text,
            page_start=self._page_of(char_start),
            page_end=self._page_of(char_end - 1),
            char_start=char_start,
            char_end=char_end,
            n_tokens=self.count(text),
            overlap_chars=max(0, self.prev_end - char_start),
        )
        self.index += 1
        self.prev_end = char_end
        return chunk

    def _page_of(self, offset: int) -> int:
        for start, end, number in self.pages:
            if start <= offset < end:
                return number
        raise AssertionError(f"offset {offset} is in no page")  # chunks start and end on non-space text


def _skip_space(buf: str, i: int) -> int:
    n = len(buf)
    while i < n and buf[i].isspace():
        i += 1
    return i


def _rstrip(buf: str, lo: int, end: int) -> int:
    """``end`` moved back over whitespace, not below ``lo + 1`` (buf[lo] is never a space)."""
    while end > lo + 1 and buf[end - 1].isspace():
        end -= 1
    return end


def _last_sentence_end(buf: str, lo: int, hi: int) -> int:
    """The last sentence end in [lo, hi], or -1."""
    last = -1
    for m in _SENTENCE_END.finditer(buf, max(0, lo - 8), hi + 1):
        if lo <= m.end() <= hi:
            last = m.end()
    return last

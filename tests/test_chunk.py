"""The chunker's invariants, property-tested, and its choices of where to cut."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kg_etl.chunk import DEFAULT_MAX_TOKENS, approx_tokens, chunk_pages
from kg_etl.errors import ConfigError
from kg_etl.models import PAGE_SEPARATOR, TEXT_STATUSES, Chunk, Page, PageStatus, content_id, document_text


def layout(specs: Sequence[tuple[str, PageStatus]]) -> list[Page]:
    """Pages with the offsets the reader gives them."""
    pages: list[Page] = []
    end = 0
    for number, (text, status) in enumerate(specs, start=1):
        if status in TEXT_STATUSES:
            start = end + len(PAGE_SEPARATOR) if number > 1 and any(p.status in TEXT_STATUSES for p in pages) else 0
            end = start + len(text)
        else:
            start, text = end, ""
        pages.append(Page(number=number, text=text, status=status, char_start=start))
    return pages


def words(text: str) -> int:
    """A counter unlike the default one: one token per whitespace-separated word."""
    return len(text.split())


_WORD = st.sampled_from(["a", "to", "the", "cell", "energy", "Zoë", "東京", "x" * 30, "end.", "Why?", "(ok)."])
_SPACE = st.sampled_from([" ", " ", " ", "\n", "\n\n", ". "])
_TEXT = st.lists(st.tuples(_WORD, _SPACE), max_size=60).map(lambda parts: "".join(w + s for w, s in parts).strip())
_STATUS = st.sampled_from([PageStatus.OK] * 6 + [PageStatus.GARBLED, PageStatus.NO_TEXT, PageStatus.ERROR])
_PAGES = st.lists(st.tuples(_TEXT, _STATUS), max_size=8).map(layout)


@st.composite
def _budgets(draw: st.DrawFn) -> tuple[int, int]:
    max_tokens = draw(st.integers(min_value=8, max_value=120))
    return max_tokens, draw(st.integers(min_value=0, max_value=max_tokens // 2))


@settings(max_examples=300, deadline=None)
@given(pages=_PAGES, budget=_budgets(), by_words=st.booleans(), include_garbled=st.booleans())
def test_chunk_invariants(pages: list[Page], budget: tuple[int, int], by_words: bool, include_garbled: bool) -> None:
    max_tokens, overlap_tokens = budget
    count = words if by_words else approx_tokens
    chunks = list(
        chunk_pages(
            iter(pages), "doc", max_tokens=max_tokens, overlap_tokens=overlap_tokens,
            count_tokens=count if by_words else None, include_garbled=include_garbled,
        )
    )  # fmt: skip
    doc = document_text(pages)
    included = {PageStatus.OK, PageStatus.GARBLED} if include_garbled else {PageStatus.OK}
    by_number = {p.number: p for p in pages}

    def page_of(offset: int) -> Page:
        return next(
            p for p in pages if p.status in TEXT_STATUSES and p.char_start <= offset < p.char_start + len(p.text)
        )

    covered = [False] * len(doc)
    prev: Chunk | None = None
    for i, c in enumerate(chunks):
        # exact provenance and stable ids
        assert doc[c.char_start : c.char_end] == c.text
        assert c.text and c.text == c.text.strip()
        assert (c.index, c.id, c.doc_id) == (i, content_id("doc", i, c.text), "doc")
        assert c.page_start == page_of(c.char_start).number and c.page_end == page_of(c.char_end - 1).number
        assert all(by_number[n].status in included for n in range(c.page_start, c.page_end + 1))
        # bounded size
        assert c.n_tokens == count(c.text) <= max_tokens
        # explicit, bounded overlap, always moving forward
        if prev is not None:
            assert prev.char_start < c.char_start and prev.char_end < c.char_end
            assert c.overlap_chars == max(0, prev.char_end - c.char_start)
            if c.overlap_chars:
                assert count(doc[c.char_start : prev.char_end]) <= overlap_tokens
        else:
            assert c.overlap_chars == 0
        covered[c.char_start : c.char_end] = [True] * len(c.text)
        prev = c
    # full coverage of included pages, nothing from the others
    for page in pages:
        span = range(page.char_start, page.char_start + len(page.text))
        if page.status in included:
            assert all(covered[j] or doc[j].isspace() for j in span)
        else:
            assert not any(covered[j] for j in span)


def test_streams_chunks_before_reading_all_pages() -> None:
    pulled = 0
    sentence = "Cells turn light into chemical energy in a long chain of steps. "

    def pages() -> Iterator[Page]:
        nonlocal pulled
        start = 0
        for number in range(1, 2_001):
            pulled += 1
            text = (sentence * 20).strip()
            yield Page(number=number, text=text, char_start=start)
            start += len(text) + len(PAGE_SEPARATOR)

    chunks = chunk_pages(pages(), "doc", max_tokens=100, overlap_tokens=10)
    first = next(chunks)
    assert pulled <= 2
    assert first.page_start == 1
    *_, last = chunks
    assert pulled == 2_000 and last.page_end == 2_000


def test_cuts_at_sentence_ends_and_overlaps_from_a_sentence_start() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = list(chunk_pages(layout([(text, PageStatus.OK)]), "d", max_tokens=40, overlap_tokens=10))
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.startswith("Sentence") and c.text.endswith("here.")
    assert all(c.overlap_chars > 0 for c in chunks[1:])


def test_prefers_a_paragraph_break_when_the_chunk_stays_half_full() -> None:
    para = "word " * 60
    text = f"{para.strip()}.\n\n{para.strip()} and more {para.strip()}"
    first = next(chunk_pages(layout([(text, PageStatus.OK)]), "d", max_tokens=100, overlap_tokens=0))
    assert first.text == para.strip() + "."


def test_a_word_longer_than_the_budget_is_split_hard() -> None:
    text = "short " + "x" * 1000 + " tail"
    chunks = list(chunk_pages(layout([(text, PageStatus.OK)]), "d", max_tokens=50, overlap_tokens=0))
    assert chunks[0].text == "short"
    assert all(c.n_tokens <= 50 for c in chunks)
    assert "".join(c.text for c in chunks[1:-1]) == "x" * 1000
    assert chunks[-1].text == "tail"


def test_chunks_span_pages_but_not_a_missing_page() -> None:
    pages = layout(
        [("Alpha one.", PageStatus.OK), ("Beta two.", PageStatus.OK), ("", PageStatus.ERROR), ("Gamma.", PageStatus.OK)]
    )
    chunks = list(chunk_pages(pages, "d"))
    assert [(c.text, c.page_start, c.page_end) for c in chunks] == [
        ("Alpha one.\n\nBeta two.", 1, 2),
        ("Gamma.", 4, 4),
    ]


def test_garbled_pages_are_left_out_by_default() -> None:
    pages = layout([("Clean text.", PageStatus.OK), ("ၛ\u0dfe٘ğ၂ᇕ", PageStatus.GARBLED)])
    assert [c.text for c in chunk_pages(pages, "d")] == ["Clean text."]
    assert [c.text for c in chunk_pages(pages, "d", include_garbled=True)] == ["Clean text.\n\nၛ\u0dfe٘ğ၂ᇕ"]


def test_none_takes_the_defaults() -> None:
    text = "word " * 5000
    chunks = list(chunk_pages(layout([(text.strip(), PageStatus.OK)]), "d", max_tokens=None, overlap_tokens=None))
    assert DEFAULT_MAX_TOKENS - 2 <= max(c.n_tokens for c in chunks) <= DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(0, 0), (100, 51), (100, -1)])
def test_bad_budgets_are_config_errors(max_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ConfigError):
        list(chunk_pages([], "d", max_tokens=max_tokens, overlap_tokens=overlap_tokens))


def test_pages_with_wrong_offsets_are_rejected() -> None:
    pages = [Page(number=1, text="a", char_start=0), Page(number=2, text="b", char_start=5)]
    with pytest.raises(ValueError, match="page 2 starts at 5, expected 3"):
        list(chunk_pages(pages, "d"))


def test_approx_tokens() -> None:
    assert approx_tokens("") == 0
    assert approx_tokens("abcd" * 10) == 10
    assert approx_tokens("東京都" * 4) == 12  # about one token per CJK character
    assert approx_tokens("Привет") == 4

"""Every PDF of ../shared/corpus gives chunks or the expected clear error, within the time limit.

One test per file, each reading its file once (the whole corpus takes ~25 s of pypdf time).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from kg_etl.chunk import chunk_pages
from kg_etl.errors import PasswordError, ReadError
from kg_etl.models import PageStatus, document_text
from kg_etl.read import open_pdf

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpus"
if not CORPUS.is_dir():
    pytest.skip(f"no corpus at {CORPUS} (it lives beside the checkout, in shared/corpus)", allow_module_level=True)

# Well above the slowest file's read time (usaid, 179 pages: ~7 s on one idle core), well below "hung".
TIMEOUT_S = 45.0
PASSWORDS = {"NASTY_encrypted_known_password.pdf": "openpassword", "NASTY_encrypted_aes256_r6.pdf": "password"}

# file -> (error class, words the reason must contain)
ERRORS: dict[str, tuple[type[ReadError], str]] = {
    "NASTY_cyclic_page_tree.pdf": (ReadError, "cyclic page references"),
    "NASTY_encrypted_unknown_password.pdf": (PasswordError, "unknown password; pass --password"),
    "NASTY_not_a_pdf_15_bytes.pdf": (ReadError, "not a PDF: a PDF header but no objects"),
    "NASTY_unreadable_page_tree.pdf": (ReadError, "Invalid object in /Pages"),
    "NASTY_zero_pages.pdf": (ReadError, "no pages"),
}
# file -> {page number: status} for the pages that are not OK (pages not listed must be OK)
ODD_PAGES: dict[str, dict[int, PageStatus]] = {
    "angola_malaria_survey_pt.pdf": {3: PageStatus.ERROR},
    "us_hr1904_healthy_forests_act.pdf": {11: PageStatus.ERROR},
    "ethereum_yellowpaper_zh.pdf": dict.fromkeys(range(1, 12), PageStatus.GARBLED),
    "NASTY_scanned_jbig2_image_only.pdf": {1: PageStatus.NO_TEXT},
}
# Blank or picture-only pages that some files have besides; checked to be NO_TEXT and nothing else.
BLANK_PAGES_ALLOWED = {"angola_malaria_survey_pt.pdf", "usaid_russia_democracy_assessment.pdf"}


def _manifest() -> dict[str, dict[str, str]]:
    path = CORPUS / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with path.open(encoding="utf-8", newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


MANIFEST = _manifest()
FILES = sorted(p.name for p in CORPUS.glob("*.pdf"))


@pytest.mark.parametrize("name", FILES)
def test_file_gives_chunks_or_the_expected_error(name: str) -> None:
    path = CORPUS / name
    started = time.perf_counter()
    try:
        doc = open_pdf(path, passwords=PASSWORDS, timeout_s=TIMEOUT_S)
        pages = list(doc.pages())
    except ReadError as e:
        kind, words = ERRORS.get(name, (type(e), "<no error expected>"))
        assert type(e) is kind and words in e.reason, f"{name}: {e}"
        assert str(e).startswith(str(path)) and "\n" not in str(e)
        return
    finally:
        assert time.perf_counter() - started < TIMEOUT_S
    assert name not in ERRORS, f"{name} should have failed with {ERRORS[name]}"
    chunks = list(chunk_pages(pages, doc.meta.id))

    row = MANIFEST.get(name)
    if row is not None:
        assert doc.meta.id == row["sha256"]
        assert doc.meta.n_pages == int(row["pages"])
    odd = {p.number: p.status for p in pages if p.status is not PageStatus.OK}
    expected = ODD_PAGES.get(name, {})
    if name in BLANK_PAGES_ALLOWED:
        odd = {n: s for n, s in odd.items() if n in expected or s is not PageStatus.NO_TEXT}
    assert odd == expected
    assert [(i.page, i.status) for i in doc.issues] == [(p.number, p.status) for p in pages if p.reason]
    if all(p.status is not PageStatus.OK for p in pages):
        assert chunks == []
        return
    assert chunks, f"{name}: no chunks from readable pages"
    text = document_text(pages)
    for c in chunks:
        assert text[c.char_start : c.char_end] == c.text


def test_page_errors_name_their_page_and_keep_the_rest() -> None:
    doc = open_pdf(CORPUS / "us_hr1904_healthy_forests_act.pdf", timeout_s=TIMEOUT_S)
    pages = list(doc.pages())
    (issue,) = doc.issues
    assert issue.page == 11 and issue.status is PageStatus.ERROR and "PdfReadError" in issue.reason
    assert sum(p.status is PageStatus.OK for p in pages) == 28


def test_nbsp_file_is_normalised() -> None:
    doc = open_pdf(CORPUS / "usaid_russia_democracy_assessment.pdf", timeout_s=TIMEOUT_S)
    for page in doc.pages():
        assert "\xa0" not in page.text and "  " not in page.text
        if page.number == 6:
            assert "The ARD team began its work in the United States in late May 2004" in page.text
            break


def test_known_passwords_are_needed() -> None:
    for name in PASSWORDS:
        with pytest.raises(PasswordError):
            open_pdf(CORPUS / name)


def test_empty_user_password_opens_without_asking() -> None:
    doc = open_pdf(CORPUS / "us_copyright_office_dmca_summary.pdf")
    assert doc.meta.title == "The Digital Millennium Copyright Act of 1998"

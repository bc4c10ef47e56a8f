"""The reader on PDFs written by tests/pdfs.py, whose text is known exactly."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kg_etl.errors import ConfigError, PasswordError, ReadError
from kg_etl.models import PAGE_SEPARATOR, Page, PageStatus, document_text
from kg_etl.read import open_pdf, password_for, read_password_map
from kg_etl.samples import make_pdf
from kg_etl.text import GARBLE_THRESHOLD, garble_score, normalise, normalise_with_map

# -- normalisation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("the \ufb01rst \ufb02oor, e\ufb03cient", "the first floor, efficient"),
        ("words\xa0with\u2009odd\u202fspaces", "words with odd spaces"),
        ("The\xa0 ARD\xa0 team", "The ARD team"),
        ("an exam-\nple here", "an example here"),
        ("an exam- \n ple here", "an example here"),
        ("Anglo-\nSaxon", "Anglo-\nSaxon"),  # a capital after the hyphen: a real hyphen
        ("year 2004-\n2005", "year 2004-\n2005"),  # digits are not word parts to join
        ("soft\xadhyphen and hyph\xad\nenated", "softhyphen and hyphenated"),
        ("bell\x07 and\x00 nul\x1b", "bell and nul"),
        ("n\x001 and a\x11b", "n 1 and a b"),  # unmapped symbol-font glyphs keep words apart
        ("a\r\nb\rc", "a\nb\nc"),
        ("one\ntwo", "one\ntwo"),
        ("para one\n\n\n\npara two", "para one\n\npara two"),
        ("line end   \n   next", "line end\nnext"),
        ("  \n  leading and trailing \n\n ", "leading and trailing"),
        ("tab\there", "tab here"),
        ("post\u2010travel", "post-travel"),
        ("x\u200by\ufeff", "xy"),
        ("E = mc² and ℝ", "E = mc² and ℝ"),  # no NFKC: maths stays as printed
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


_RAW_TEXT = st.text(alphabet=st.sampled_from(list("abcXY1 -.\n\r\t\xa0\xad\x00\u2009\ufb01\ufb03")), max_size=60)


@given(_RAW_TEXT)
def test_normalise_with_map_agrees_and_maps_back(raw: str) -> None:
    text, offsets = normalise_with_map(raw)
    assert text == normalise(raw)
    assert offsets.to_raw(len(text)) == len(raw)
    mapped = [offsets.to_raw(i) for i in range(len(text))]
    assert mapped == sorted(mapped)
    for i, j in enumerate(mapped):
        if text[i] in "abcXY1":  # letters from a ligature point at the ligature
            assert raw[j] == text[i] or raw[j] in "\ufb01\ufb03"
        else:
            assert 0 <= j < len(raw)
    assert normalise(text) == text  # idempotent


def test_offset_map_is_compact() -> None:
    raw = "x" * 1000 + "\ufb01" + "y" * 1000
    text, offsets = normalise_with_map(raw)
    assert text == "x" * 1000 + "fi" + "y" * 1000
    assert offsets.anchors == [(0, 0), (1001, 1000)]  # "i" and all after it sit one to the left
    assert offsets.to_raw(1500) == 1499


# -- garbled text -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Die Menge der natürlichen Zahlen ist abzählbar; für jede Überdeckung gilt ‖x − y‖ ≤ ε.",
        "Inquérito de Indicadores de Malária em Angola: população, saúde e educação.",
        "English: Hello World\nArabic: مرحبا بالعالم\nRussian: Привет, мир\nJapanese: こんにちは世界\nThai: สวัสดีชาวโลก",
        "The state σt+1 ≡ Υ(σt, T) where µ′s[0] ≡ Ia and Greek αβγ mixed with plain words.",
        "韩国语 한국어 텍스트와 日本語のテキスト、カタカナ。",
        "",
    ],
)
def test_real_text_is_not_garbled(text: str) -> None:
    assert garble_score(text) < GARBLE_THRESHOLD / 2


@pytest.mark.parametrize(
    "text",
    [
        # pypdf on ethereum_yellowpaper_zh.pdf (CJK fonts without ToUnicode)
        "ၛ\u0dfe٘ğ၂ᇕνಆಀᇏྏ֥߄๙ႨࢌၞᅬЧ\nEIP-150 ϱЧ (5036e7b - 2018-01-14)\nჰ໓ቔᆀ: DR. GAVIN WOOD",
        "ൌႨྟ, Ⴍః൞бหлbૄ၂۱ᆃ۱֥ཛଢ\u05fbॖၛु ቔ൞၂۱ࠎႿಀᇏྏ֥߄ֆൌ২\u0c4fႚႵ࠹ෘሧჷ֥ႋႨb",
        "\x07 ൞ၛ\u0dfe٘ሑ\u0dffሇݦߐඔbᄝၛ\u0dfe٘ᇏ, \x07 ބ σ бၘႵ",
        "Ã©tÃ© franÃ§ais mal dÃ©codÃ©",  # UTF-8 read as Latin-1
        "\ufffd\ufffd\ufffd \ue001\ue002",
    ],
)
def test_mojibake_is_garbled(text: str) -> None:
    assert garble_score(text) >= GARBLE_THRESHOLD


# -- reading generated PDFs ---------------------------------------------------------------------------------------


def test_pages_have_the_exact_text_offsets_and_metadata(tmp_path: Path) -> None:
    pdf = make_pdf(
        tmp_path / "doc.pdf",
        [["First page, line one.", "Line two."], ["Second page."], ["Third", "page."]],
        title="Tést title",
        author="Ann Author",
    )
    doc = open_pdf(pdf)
    assert doc.meta.id == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert (doc.meta.n_pages, doc.meta.name) == (3, "doc.pdf")
    assert (doc.meta.title, doc.meta.author) == ("Tést title", "Ann Author")
    assert doc.meta.created == "2024-01-31T12:00:00+00:00"
    pages = list(doc.pages())
    assert [p.text for p in pages] == ["First page, line one.\nLine two.", "Second page.", "Third\npage."]
    assert [p.status for p in pages] == [PageStatus.OK] * 3
    text = document_text(pages)
    assert text == PAGE_SEPARATOR.join(p.text for p in pages)
    for page in pages:
        assert text[page.char_start : page.char_start + len(page.text)] == page.text
    assert doc.issues == []


def test_ligatures_odd_spaces_and_hyphenation_are_normalised(tmp_path: Path) -> None:
    lines = ["The \ufb01rst \ufb02oor of\xa0the e\ufb03cient sta\ufb00", "exam-", "ple and non\xad", "breaking"]
    (page,) = open_pdf(make_pdf(tmp_path / "n.pdf", [lines])).pages()
    assert page.text == "The first floor of the efficient staff\nexample and nonbreaking"


def test_image_only_page_is_no_text_and_the_rest_is_kept(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "scan.pdf", [["Before the scan."], [], ["After the scan."]], image_pages={2})
    doc = open_pdf(pdf)
    pages = list(doc.pages())
    assert [p.status for p in pages] == [PageStatus.OK, PageStatus.NO_TEXT, PageStatus.OK]
    assert pages[1].text == "" and "no text layer" in (pages[1].reason or "")
    assert pages[1].char_start == len("Before the scan.")
    assert document_text(pages) == "Before the scan.\n\nAfter the scan."
    assert [(i.page, i.status) for i in doc.issues] == [(2, PageStatus.NO_TEXT)]


def test_ocr_seam_fills_pages_without_text(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "scan.pdf", [["Typed page."], []], image_pages={2})
    calls: list[tuple[Path, int]] = []

    def ocr(path: Path, page_number: int) -> str:
        calls.append((path, page_number))
        return "Recognised  text\xa0here."

    pages = list(open_pdf(pdf, ocr=ocr).pages())
    assert calls == [(pdf, 2)]
    assert (pages[1].status, pages[1].text) == (PageStatus.OK, "Recognised text here.")


def test_a_page_that_raises_is_recorded_and_the_others_kept(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "bad.pdf", [["Page one."], ["Page two."], ["Page three."]], broken_pages={2})
    doc = open_pdf(pdf)
    pages = list(doc.pages())
    assert [p.status for p in pages] == [PageStatus.OK, PageStatus.ERROR, PageStatus.OK]
    assert pages[1].reason is not None and "PdfStreamError" in pages[1].reason and "\n" not in pages[1].reason
    assert document_text(pages) == "Page one.\n\nPage three."
    assert [i.page for i in doc.issues] == [2]


# -- encryption ---------------------------------------------------------------------------------------------------


@pytest.fixture
def secret_pdf(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "secret.pdf", [["Classified text."]], password="s3cret")


def test_aes256_pdf_opens_with_its_password(secret_pdf: Path) -> None:
    (page,) = open_pdf(secret_pdf, password="s3cret").pages()
    assert page.text == "Classified text."


def test_unknown_password_is_a_clear_password_error(secret_pdf: Path) -> None:
    with pytest.raises(PasswordError) as caught:
        open_pdf(secret_pdf)
    assert caught.value.path == str(secret_pdf)
    assert "unknown password" in caught.value.reason and "--password" in caught.value.reason
    with pytest.raises(PasswordError, match="given password does not open it"):
        open_pdf(secret_pdf, password="wrong")


def test_password_map_from_toml_with_globs(secret_pdf: Path, tmp_path: Path) -> None:
    config = tmp_path / "passwords.toml"
    config.write_text('"other.pdf" = "nope"\n"secr*.pdf" = "s3cret"\n', encoding="utf-8")
    passwords = read_password_map(config)
    assert password_for(secret_pdf, passwords) == "s3cret"
    assert password_for(tmp_path / "other.pdf", passwords) == "nope"
    assert password_for(tmp_path / "x.pdf", passwords) is None
    (page,) = open_pdf(secret_pdf, password="wrong", passwords=passwords).pages()
    assert page.text == "Classified text."


def test_bad_password_map_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "passwords.toml"
    config.write_text('"a.pdf" = 3\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="quote the value"):
        read_password_map(config)
    config.write_text("not toml at all", encoding="utf-8")
    with pytest.raises(ConfigError, match="password map"):
        read_password_map(config)


# -- broken files -------------------------------------------------------------------------------------------------


def _good_bytes(tmp_path: Path) -> bytes:
    return make_pdf(tmp_path / "good.pdf", [["Some text."]]).read_bytes()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp, good: b"", "empty file"),
        (lambda tmp, good: b"Hello, I am a text file.\n", "not a PDF"),
        (lambda tmp, good: good[: len(good) // 2], "truncated"),
        (lambda tmp, good: good.replace(b"startxref", b"startxxxx"), "damaged"),
        (lambda tmp, good: make_pdf(tmp / "zero.pdf", []).read_bytes(), "no pages"),
    ],
    ids=["empty", "not-a-pdf", "truncated", "corrupt-xref", "zero-pages"],
)
def test_broken_files_raise_a_one_line_read_error(tmp_path: Path, make: object, reason: str) -> None:
    pdf = tmp_path / "broken.pdf"
    pdf.write_bytes(make(tmp_path, _good_bytes(tmp_path)))  # type: ignore[operator]
    with pytest.raises(ReadError) as caught:
        doc = open_pdf(pdf)
        list(doc.pages())
    assert reason in caught.value.reason
    assert str(caught.value).startswith(str(pdf)) and "\n" not in str(caught.value)
    assert not isinstance(caught.value, PasswordError)


def test_missing_file_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="cannot open the file"):
        open_pdf(tmp_path / "absent.pdf")


# -- the time limit -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small page, then one page that pypdf needs about 1 s for."""
    lines = [f"Line {i} of a long page with many text objects." for i in range(8000)]
    return make_pdf(tmp_path_factory.mktemp("slow") / "slow.pdf", [["Quick page."], lines])


def test_a_slow_page_is_cut_off_by_the_alarm(slow_pdf: Path) -> None:
    doc = open_pdf(slow_pdf, timeout_s=0.1)
    pages = doc.pages()
    assert next(pages).text == "Quick page."
    started = time.perf_counter()
    with pytest.raises(ReadError, match=r"took longer than 0.1 s to read; raise --read-timeout"):
        next(pages)
    assert time.perf_counter() - started < 0.6  # interrupted, not waited out
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_without_the_alarm_the_limit_is_checked_between_pages(slow_pdf: Path) -> None:
    outcome: list[BaseException | list[Page]] = []

    def in_a_thread() -> None:
        try:
            outcome.append(list(open_pdf(slow_pdf, timeout_s=0.1).pages()))
        except ReadError as e:
            outcome.append(e)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert isinstance(outcome[0], ReadError) and "took longer than" in outcome[0].reason


def test_time_spent_by_the_consumer_does_not_count(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "three.pdf", [["One."], ["Two."], ["Three."]])
    texts = []
    for page in open_pdf(pdf, timeout_s=0.3).pages():
        texts.append(page.text)
        time.sleep(0.15)
    assert texts == ["One.", "Two.", "Three."]


def test_opening_counts_against_the_limit(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "one.pdf", [["One."]])
    with pytest.raises(ReadError, match="took longer than"):
        open_pdf(pdf, timeout_s=1e-9)

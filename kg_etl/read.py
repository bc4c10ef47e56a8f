"""PDF -> pages: open a PDF with pypdf and stream its pages as normalised text, one status per page.

The document text
    The normalised texts of the OK and GARBLED pages, in page order, joined by ``PAGE_SEPARATOR`` ("\\n\\n")
    (``models.document_text``). Every ``Page`` carries ``char_start``, its offset in that text; a page
    without text (NO_TEXT, ERROR) has ``text == ""`` and ``char_start`` at the end of the text so far.
    Chunk offsets and citations point into this text (it is what gets stored); ``normalise_with_map``
    maps a page's offsets back to pypdf's raw text where someone needs them.

What can go wrong, and what happens
    - The whole file (missing, not a PDF, truncated, damaged xref or page tree, no pages, unknown
      password, over the time limit): ``open_pdf`` or ``PdfDocument.pages`` raises ``ReadError`` (or
      ``PasswordError``) with a one-line reason that says what to do.
    - One page (pypdf raises on it, it has no text layer, its text is mojibake): the page comes out with
      status ERROR, NO_TEXT or GARBLED and a reason; the other pages are kept.

The time limit
    pypdf is pure Python, so a thread cannot be stopped. In the main thread of a Unix process the reader
    arms SIGALRM (``setitimer``) around each call into pypdf with what is left of the budget, so even one
    slow page is cut off; the handler raises a ``BaseException`` that pypdf's ``except Exception`` blocks
    cannot swallow. Elsewhere (other threads, Windows, an outer timer already armed) it checks the budget
    between pages. Only time spent inside pypdf counts, not the time the consumer spends between pages
    (e.g. running a model on the chunks). On timeout the document fails whole: a partial document would
    be a silently truncated one, so whoever consumed ``pages()`` must discard what it got.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
import signal
import threading
import time
import tomllib
import unicodedata
from array import array
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

from pydantic import BaseModel, ConfigDict
from pypdf import PageObject, PdfReader
from pypdf.errors import DependencyError
from pypdf.generic import ArrayObject, IndirectObject

from kg_etl.errors import ConfigError, PasswordError, ReadError
from kg_etl.models import PAGE_SEPARATOR, TEXT_STATUSES, DocumentMeta, Page, PageStatus, sha256_file

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GARBLE_THRESHOLD",
    "OcrEngine",
    "OffsetMap",
    "PageIssue",
    "PdfDocument",
    "garble_score",
    "normalise",
    "normalise_with_map",
    "open_pdf",
    "password_for",
    "read_password_map",
]

# Generous: the slowest corpus file reads at ~25 pages/s on one core; a 350-page book needs ~15 s.
DEFAULT_TIMEOUT_S = 60.0

# Calibrated on ../shared/corpus (see garble_score): clean pages score at most 0.055 (German maths notes
# and the Ethereum paper: Greek letters inside words, Symbol-font brace pieces), the mojibake pages of
# ethereum_yellowpaper_zh.pdf score 0.24-0.43. 0.12 sits about 2x from both.
GARBLE_THRESHOLD = 0.12

_T = TypeVar("_T")


# -- normalisation ------------------------------------------------------------------------------------------------

_ODD_SPACES = "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
# Character fixes only, not NFKC: NFKC would also rewrite maths (superscripts, ℝ, fractions) that the
# extractors should see as printed.
_CHAR_FIXES: dict[int, str] = {
    **{ord(c): " " for c in _ODD_SPACES + "\t\v\f"},
    # Control characters: in PDFs these are glyph codes of symbol fonts without a Unicode map (TeX's minus is
    # \x00), so a space keeps "n\x001" as two words, "n 1", where deleting would make "n1".
    **{cp: " " for cp in [*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0)]},
    **{cp: "" for cp in range(0xF8E5, 0xF8FF)},  # Adobe Symbol-font pieces of big braces and brackets
    0x200B: "",  # zero-width space (ZWJ/ZWNJ are kept: they matter in Indic and Persian scripts)
    0x2060: "",  # word joiner
    0xFEFF: "",  # byte-order mark
    0x2010: "-",  # hyphen and non-breaking hyphen: one hyphen for matching names
    0x2011: "-",
    0x2028: "\n",
    0x2029: "\n\n",
    0xFB00: "ff",
    0xFB01: "fi",
    0xFB02: "fl",
    0xFB03: "ffi",
    0xFB04: "ffl",
    0xFB05: "st",
    0xFB06: "st",
}
_FIXABLE = re.compile("[" + "".join(re.escape(chr(cp)) for cp in _CHAR_FIXES) + "]")

# A hyphen that ends a line inside a word: "exam-\nple". It goes only before a lowercase letter
# ("Anglo-\nSaxon" keeps it, and so does "2004-\n2005").
_LINE_HYPHEN = re.compile(r"(?<=[^\W\d_])- *\n *(?=([^\W\d_]))")


def _join_hyphen(m: re.Match[str]) -> str:
    return "" if m.group(1).islower() else m.group(0)


# The steps, in order. normalise() runs them with fast built-ins; normalise_with_map() runs the same
# patterns and replacements while tracking where every output character came from.
_Repl = str | Callable[[re.Match[str]], str]
_STEPS: tuple[tuple[re.Pattern[str], _Repl], ...] = (
    (re.compile(r"\r\n?"), "\n"),
    (_FIXABLE, lambda m: _CHAR_FIXES[ord(m.group(0))]),
    # A soft hyphen marks where a word may break: invisible, and at a line end the word goes on.
    (re.compile("\u00ad(?: *\n *)?"), ""),
    (_LINE_HYPHEN, _join_hyphen),
    (re.compile(r" {2,}"), " "),
    (re.compile(r" *\n *"), "\n"),
    (re.compile(r"\n{3,}"), "\n\n"),  # blank lines: one paragraph break
    (re.compile(r"\A[ \n]+|[ \n]+\Z"), ""),  # normalise() uses str.strip, the same and faster
)


def normalise(text: str) -> str:
    """Normalise pypdf's text of one page: the text that is stored, chunked and cited.

    Ligatures are expanded, odd spaces and control characters become spaces, words hyphenated at a line
    end are joined, runs of spaces collapse, line breaks stay and blank lines become one paragraph break.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_CHAR_FIXES)
    for pattern, repl in _STEPS[2:-1]:
        text = pattern.sub(repl, text)
    return text.strip(" \n")


class OffsetMap:
    """Maps offsets in a normalised text back to the raw text it came from.

    Compact: one anchor per place where the shift between the two texts changes.
    """

    def __init__(self, anchors: list[tuple[int, int]], n_text: int, n_raw: int) -> None:
        self._norm = [a for a, _ in anchors]
        self._raw = [b for _, b in anchors]
        self.n_text = n_text
        self.n_raw = n_raw

    @property
    def anchors(self) -> list[tuple[int, int]]:
        """(normalised offset, raw offset) pairs; between anchors both advance together."""
        return list(zip(self._norm, self._raw, strict=True))

    def to_raw(self, offset: int) -> int:
        """Raw offset of the normalised character at ``offset`` (``n_text`` maps to ``n_raw``)."""
        if not 0 <= offset <= self.n_text:
            raise IndexError(f"offset {offset} outside 0..{self.n_text}")
        if offset == self.n_text:
            return self.n_raw
        i = bisect.bisect_right(self._norm, offset) - 1
        return self._raw[i] + offset - self._norm[i]


def normalise_with_map(text: str) -> tuple[str, OffsetMap]:
    """``normalise(text)`` and the map from its offsets back to offsets in ``text``.

    Slower than ``normalise``; meant for the few places that need raw pypdf offsets.
    """
    n_raw = len(text)
    origin = array("q", range(n_raw))
    for pattern, repl in _STEPS:
        text, origin = _sub_tracked(pattern, repl, text, origin)
    anchors: list[tuple[int, int]] = []
    for i, raw in enumerate(origin):
        if not anchors or raw - i != anchors[-1][1] - anchors[-1][0]:
            anchors.append((i, raw))
    return text, OffsetMap(anchors, len(text), n_raw)


def _sub_tracked(pattern: re.Pattern[str], repl: _Repl, text: str, origin: array[int]) -> tuple[str, array[int]]:
    """``pattern.sub(repl, text)`` that also carries each character's raw origin along."""
    parts: list[str] = []
    new = array("q")
    last = 0
    for m in pattern.finditer(text):
        start, end = m.span()
        parts.append(text[last:start])
        new.extend(origin[last:start])
        out = repl if isinstance(repl, str) else repl(m)
        parts.append(out)
        # A replacement's characters all point at the start of what they replace.
        new.extend([origin[start]] * len(out))  # no step matches the empty string, so start < len
        last = end
    parts.append(text[last:])
    new.extend(origin[last:])
    return "".join(parts), new


# -- garbled text -------------------------------------------------------------------------------------------------

# Script of a code point, by block start. Close enough for counting script changes inside words; "" marks
# blocks of symbols, marks and maths, which belong to no script and never count as a change.
_SCRIPT_BLOCKS: tuple[tuple[int, str], ...] = (
    (0x0000, "Latin"), (0x02B0, ""), (0x0370, "Greek"), (0x0400, "Cyrillic"), (0x0530, "Armenian"),
    (0x0590, "Hebrew"), (0x0600, "Arabic"), (0x0700, "Syriac"), (0x0750, "Arabic"), (0x0780, "Thaana"),
    (0x07C0, "NKo"), (0x0800, "Samaritan"), (0x0840, "Mandaic"), (0x0860, "Syriac"), (0x0870, "Arabic"),
    (0x0900, "Devanagari"), (0x0980, "Bengali"), (0x0A00, "Gurmukhi"), (0x0A80, "Gujarati"),
    (0x0B00, "Oriya"), (0x0B80, "Tamil"), (0x0C00, "Telugu"), (0x0C80, "Kannada"), (0x0D00, "Malayalam"),
    (0x0D80, "Sinhala"), (0x0E00, "Thai"), (0x0E80, "Lao"), (0x0F00, "Tibetan"), (0x1000, "Myanmar"),
    (0x10A0, "Georgian"), (0x1100, "Jamo"), (0x1200, "Ethiopic"), (0x13A0, "Cherokee"),
    (0x1400, "Canadian"), (0x1680, "Ogham"), (0x16A0, "Runic"), (0x1700, "Philippine"), (0x1780, "Khmer"),
    (0x1800, "Mongolian"), (0x18B0, "Canadian"), (0x1900, "Limbu"), (0x1950, "TaiLe"),
    (0x1980, "NewTaiLue"), (0x19E0, "Khmer"), (0x1A00, "Buginese"), (0x1AB0, ""), (0x1B00, "Balinese"),
    (0x1B80, "Sundanese"), (0x1BC0, "Batak"), (0x1C00, "Lepcha"), (0x1C50, "OlChiki"),
    (0x1C80, "Cyrillic"), (0x1C90, "Georgian"), (0x1CC0, "Sundanese"), (0x1CD0, ""), (0x1D00, "Latin"),
    (0x1DC0, ""), (0x1E00, "Latin"), (0x1F00, "Greek"), (0x2000, ""), (0x2C00, "Glagolitic"),
    (0x2C60, "Latin"), (0x2C80, "Coptic"), (0x2D00, "Georgian"), (0x2D30, "Tifinagh"),
    (0x2D80, "Ethiopic"), (0x2DE0, "Cyrillic"), (0x2E00, ""),
    # Han, kana, Hangul syllables and fullwidth forms mix inside Japanese and Korean words: one "script".
    (0x2E80, "CJK"), (0xA000, "Yi"), (0xA4D0, "Lisu"), (0xA500, "Vai"), (0xA640, "Cyrillic"),
    (0xA6A0, "Bamum"), (0xA700, "Latin"), (0xA800, "Other"), (0xAC00, "CJK"), (0xD7B0, "Jamo"),
    (0xD800, ""), (0xF900, "CJK"), (0xFB00, "Latin"), (0xFB13, "Armenian"), (0xFB1D, "Hebrew"),
    (0xFB50, "Arabic"), (0xFE00, ""), (0xFE70, "Arabic"), (0xFF00, "CJK"), (0xFFF0, ""), (0x10000, "Other"),
    (0x1D400, ""), (0x1E800, "Other"), (0x1F000, ""), (0x20000, "CJK"), (0x40000, ""),
)  # fmt: skip
_BLOCK_STARTS = [start for start, _ in _SCRIPT_BLOCKS]
_BLOCK_SCRIPTS = [script for _, script in _SCRIPT_BLOCKS]
# Control characters, private-use glyphs, U+FFFD, and UTF-8 read as Latin-1 ("Ã©").
_SUSPECT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufffd]|[\u00c2\u00c3][\u0080-\u00bf]")


def garble_score(text: str) -> float:
    """How much of ``text`` looks like mojibake, from 0 (clean) up; ``GARBLE_THRESHOLD`` flags a page.

    A font without a usable ToUnicode map makes pypdf emit its glyph codes as whatever characters they
    happen to be: letters of many unrelated scripts inside one word (ၛ෾٘ğ၂ᇕνಆ), control characters and
    unassigned code points. Real text changes script at word boundaries, not inside words. The score is
    (script changes inside words + suspect characters) / non-space characters. Only words with a non-ASCII
    character are examined, so English pages cost little more than a split.
    """
    words = text.split()
    n_chars = sum(map(len, words))
    if not n_chars:
        return 0.0
    suspects = len(_SUSPECT.findall(text))
    changes = 0
    for word in words:
        if not word.isascii():  # O(1) in CPython
            word_changes, word_suspects = _script_changes(word)
            changes += word_changes
            suspects += word_suspects
    return (changes + suspects) / n_chars


def _script_changes(word: str) -> tuple[int, int]:
    """Script changes between consecutive letters of ``word``, and its unassigned code points."""
    changes = unassigned = 0
    prev = ""
    for c in word:
        if c.isalpha():
            script = "Latin" if c < "\x80" else _BLOCK_SCRIPTS[bisect.bisect_right(_BLOCK_STARTS, ord(c)) - 1]
            if script:
                changes += bool(prev) and script != prev
                prev = script
        elif c >= "\x80" and unicodedata.category(c) == "Cn":
            unassigned += 1
    return changes, unassigned


# -- passwords ----------------------------------------------------------------------------------------------------


def read_password_map(path: Path) -> dict[str, str]:
    """Read a TOML file of ``"file name or glob" = "password"`` lines.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a value is not a string.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"password map {path}: {e}; fix or remove the file") from e
    bad = [key for key, value in data.items() if not isinstance(value, str)]
    if bad:
        raise ConfigError(f'password map {path}: {bad[0]!r} is not "name or glob" = "password"; quote the value')
    return {str(key): str(value) for key, value in data.items()}


def password_for(path: Path, passwords: Mapping[str, str]) -> str | None:
    """The password that ``passwords`` gives ``path``: exact file name first, then the first matching glob."""
    if path.name in passwords:
        return passwords[path.name]
    for pattern, password in passwords.items():
        if fnmatch.fnmatchcase(path.name, pattern) or fnmatch.fnmatchcase(path.as_posix(), pattern):
            return password
    return None


# -- the time limit -----------------------------------------------------------------------------------------------


_ALARM_REPEAT_S = 0.05  # after the deadline, the alarm repeats this often until it lands in pypdf
_ALARM_PATIENCE = 20  # alarms that may land elsewhere before one is raised wherever it lands


class _Timeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that pypdf's ``except Exception`` lets it through."""


class _Budget:
    """Seconds of pypdf time left for one file."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.seconds = seconds
        self.left = seconds
        self._declined = 0

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        """Raise the timeout, but only inside pypdf's code while that is possible.

        An exception raised in a finalizer, a weakref callback or a GC hook is swallowed there ("Exception
        ignored in ..."); pypdf defines none, so its frames are safe. The alarm repeats, so declining one
        costs 50 ms; after a second of declining, it is raised wherever it lands.
        """
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        if module.startswith("pypdf") or self._declined >= _ALARM_PATIENCE:
            raise _Timeout
        self._declined += 1

    def call(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` within what is left, or raise ReadError."""
        try:
            return self._call(work)
        except _Timeout:
            raise self._error() from None

    def _call(self, work: Callable[[], _T]) -> _T:
        if self.left <= 0:
            raise _Timeout
        alarm = _can_alarm()
        if alarm:
            previous = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.left, _ALARM_REPEAT_S)
        started = time.perf_counter()
        try:
            result = work()
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            self.left -= time.perf_counter() - started
        if self.left <= 0:  # without an alarm, a slow call is only noticed once it returns
            raise _Timeout
        return result

    def _error(self) -> ReadError:
        return ReadError(str(self.path), f"took longer than {self.seconds:g} s to read; raise --read-timeout")


def _can_alarm() -> bool:
    """Whether SIGALRM can interrupt pypdf here without disturbing anyone else's timer."""
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )


# -- the document -------------------------------------------------------------------------------------------------


class PageIssue(BaseModel):
    """A page that is not OK, for the run's report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    page: int
    status: PageStatus
    reason: str


class OcrEngine(Protocol):
    """The seam for OCR: given a file and a 1-based page number, return that page's text."""

    def __call__(self, path: Path, page_number: int) -> str: ...


_NO_TEXT = "no text layer (scanned or image-only page); OCR is not enabled"
_HAS_WORD = re.compile(r"\w")


class PdfDocument:
    """An opened PDF: ``meta`` now, its pages streamed by ``pages()``; ``issues`` lists the pages not OK."""

    def __init__(
        self, path: Path, reader: PdfReader, meta: DocumentMeta, timeout_s: float, ocr: OcrEngine | None
    ) -> None:
        self.path = path
        self.meta = meta
        self.issues: list[PageIssue] = []
        self._reader = reader
        self._timeout_s = timeout_s
        self._ocr = ocr

    def pages(self) -> Iterator[Page]:
        """Stream the pages in order, each with its status and its offset in the document text.

        Raises:
            ReadError: reading took longer than the time limit; discard what was already yielded.
        """
        budget = _Budget(self.path, self._timeout_s)
        self.issues = []
        end, any_text = 0, False  # length of the document text so far; whether it has a page yet
        for number in range(1, self.meta.n_pages + 1):
            text, status, reason = self._page(number, budget)
            if status in TEXT_STATUSES:
                start = end + len(PAGE_SEPARATOR) if any_text else 0
                end, any_text = start + len(text), True
            else:
                start = end
            if reason:
                self.issues.append(PageIssue(page=number, status=status, reason=reason))
            yield Page(number=number, text=text, status=status, reason=reason, char_start=start)

    def _page(self, number: int, budget: _Budget) -> tuple[str, PageStatus, str | None]:
        try:
            raw = budget.call(lambda: self._extract(number))
        except ReadError:
            raise
        except Exception as e:  # any failure inside pypdf stays with its page
            return "", PageStatus.ERROR, _one_line(e)
        text, status, reason = _classify(raw)
        if status is PageStatus.NO_TEXT and self._ocr is not None:
            try:
                return _classify(self._ocr(self.path, number))
            except Exception as e:  # an OCR failure stays with its page too
                return "", PageStatus.ERROR, f"OCR failed: {_one_line(e)}"
        return text, status, reason

    def _extract(self, number: int) -> str:
        page = self._reader.pages[number - 1]
        text = page.extract_text()
        self._forget_contents(page)
        return text

    def _forget_contents(self, page: PageObject) -> None:
        """Drop the page's parsed content streams from pypdf's object cache.

        pypdf keeps every object it has parsed; without this, memory grows with every page read
        (~50 KB/page on the corpus). Fonts and other shared resources stay cached.
        """
        contents = page.get("/Contents")
        refs: list[IndirectObject] = []
        if isinstance(contents, IndirectObject):
            refs.append(contents)
            contents = contents.get_object()
        if isinstance(contents, ArrayObject):
            refs += [ref for ref in contents if isinstance(ref, IndirectObject)]
        for ref in refs:
            self._reader.resolved_objects.pop((ref.generation, ref.idnum), None)


def _classify(raw: str) -> tuple[str, PageStatus, str | None]:
    text = normalise(raw)
    if not _HAS_WORD.search(text):
        return "", PageStatus.NO_TEXT, _NO_TEXT
    score = garble_score(raw)
    if score >= GARBLE_THRESHOLD:
        reason = f"garbled text (score {score:.2f} >= {GARBLE_THRESHOLD}; a font lacks a usable ToUnicode map)"
        return text, PageStatus.GARBLED, reason
    return text, PageStatus.OK, None


def _one_line(error: BaseException, limit: int = 200) -> str:
    message = " ".join(str(error).split()) or "no message"
    return f"{type(error).__name__}: {message}"[:limit]


# -- opening ------------------------------------------------------------------------------------------------------


def open_pdf(
    path: Path,
    *,
    password: str | None = None,
    passwords: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ocr: OcrEngine | None = None,
) -> PdfDocument:
    """Open a PDF: check it, hash it, decrypt it, read its metadata; pages come later from ``pages()``.

    Args:
        password: tried first on an encrypted file; then the ``passwords`` map's entry, then "".
        passwords: file name or glob -> password (see ``read_password_map``).
        timeout_s: seconds of pypdf time allowed for opening, and again for reading all pages.
        ocr: called for pages without a text layer; None leaves them NO_TEXT.

    Raises:
        PasswordError: encrypted and no candidate password opens it.
        ReadError: anything else that makes the file unreadable, with the reason and what to do.
    """
    path = Path(path)
    doc_id = _check_file(path)
    budget = _Budget(path, timeout_s)
    reader = budget.call(lambda: _reader(path))
    if reader.is_encrypted:
        candidates = [password, password_for(path, passwords or {}), ""]
        budget.call(lambda: _decrypt(reader, path, candidates))
    n_pages = budget.call(lambda: _count_pages(reader, path))
    meta = DocumentMeta(id=doc_id, path=str(path.resolve()), name=path.name, n_pages=n_pages, **_metadata(reader))
    return PdfDocument(path, reader, meta, timeout_s, ocr)


def _check_file(path: Path) -> str:
    """The file's sha256, after checking that it looks like a PDF at all."""
    try:
        with path.open("rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise ReadError(str(path), f"cannot open the file ({e.strerror or e}); check the path") from e
    if not head:
        raise ReadError(str(path), "empty file (0 bytes); download it again")
    if b"%PDF-" not in head:
        raise ReadError(str(path), "not a PDF (no %PDF- header); check the file type")
    return sha256_file(path)


def _reader(path: Path) -> PdfReader:
    try:
        return PdfReader(path, strict=False)
    except Exception as e:  # pypdf raises many kinds on damaged files; all mean "unreadable"
        raise ReadError(str(path), _damage(path, e)) from e


def _damage(path: Path, error: Exception) -> str:
    """Why pypdf could not open the file, as a reason that says what to do."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(1 << 20)  # in any PDF, the first object follows the header closely
        f.seek(max(0, size - 1024))
        tail = f.read()
    if not re.search(rb"\d\s+obj\b", head):
        return f"not a PDF: a PDF header but no objects in its {size} bytes; check the file"
    if b"%%EOF" not in tail:
        return f"truncated or damaged PDF (no %%EOF at the end; {_one_line(error)}); download it again"
    return f"damaged PDF ({_one_line(error)}); download it again or repair it (e.g. qpdf)"


def _decrypt(reader: PdfReader, path: Path, candidates: list[str | None]) -> None:
    tried: list[str] = []
    for candidate in candidates:
        if candidate is None or candidate in tried:
            continue
        tried.append(candidate)
        try:
            if reader.decrypt(candidate):
                return
        except DependencyError as e:
            raise ReadError(str(path), "AES-encrypted and the cryptography package is missing; "
                            "install pypdf[crypto]") from e  # fmt: skip
        except Exception as e:  # a broken encryption dictionary
            raise ReadError(str(path), f"damaged encryption data ({_one_line(e)}); download it again") from e
    given = "the given password does not open it" if len(tried) > 1 else "encrypted with an unknown password"
    raise PasswordError(str(path), f"{given}; pass --password or add it to the password map")


def _count_pages(reader: PdfReader, path: Path) -> int:
    try:
        n_pages = len(reader.pages)
    except Exception as e:  # cyclic or invalid page trees surface here
        raise ReadError(str(path), f"damaged page tree ({_one_line(e)}); download it again or repair it") from e
    if n_pages == 0:
        raise ReadError(str(path), "the PDF has no pages (empty page tree); nothing to read")
    return n_pages


def _metadata(reader: PdfReader) -> dict[str, str | None]:
    """Title, author and dates; a damaged info dictionary only loses these, never the document."""
    try:
        info = reader.metadata
    except Exception:
        return {}
    if info is None:
        return {}
    return {
        "title": _info_text(lambda: info.title),
        "author": _info_text(lambda: info.author),
        "created": _info_date(lambda: info.creation_date, lambda: info.get("/CreationDate")),
        "modified": _info_date(lambda: info.modification_date, lambda: info.get("/ModDate")),
    }


def _info_text(get: Callable[[], object]) -> str | None:
    try:
        value = get()
    except Exception:  # an unreadable entry is a missing one
        return None
    text = " ".join(normalise(str(value)).split()) if value is not None else ""
    return text or None


def _info_date(parsed: Callable[[], datetime | None], raw: Callable[[], object]) -> str | None:
    """ISO 8601 where pypdf can parse the PDF date, else the date as written."""
    try:
        value = parsed()
    except Exception:  # pypdf cannot parse the date
        value = None
    return value.isoformat() if value is not None else _info_text(raw)

"""PDF -> pages: open a PDF with pypdf and stream its pages as normalised text, one status per page.

The document text
    The normalised texts of the OK and GARBLED pages, in page order, joined by ``PAGE_SEPARATOR`` ("\\n\\n")
    (``models.document_text``). Every ``Page`` carries ``char_start``, its offset in that text; a page
    without text (NO_TEXT, ERROR) has ``text == ""`` and ``char_start`` at the end of the text so far.
    Chunk offsets and citations point into this text (it is what gets stored); ``normalise_with_map``
    (``kg_etl.text``) maps a page's offsets back to pypdf's raw text where someone needs them.

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

import errno
import fnmatch
import os
import re
import signal
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

from pydantic import BaseModel, ConfigDict
from pypdf import PageObject, PdfReader
from pypdf.errors import DependencyError
from pypdf.generic import ArrayObject, IndirectObject

from kg_etl.defaults import READ_TIMEOUT_S
from kg_etl.errors import ConfigError, PasswordError, ReadError
from kg_etl.models import PAGE_SEPARATOR, TEXT_STATUSES, DocumentMeta, Page, PageStatus, sha256_file
from kg_etl.text import GARBLE_THRESHOLD, garble_score, normalise

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "OcrEngine",
    "PageIssue",
    "PdfDocument",
    "open_pdf",
    "password_for",
    "read_password_map",
    "regular_file_problem",
]

# Generous: the slowest corpus file reads at ~25 pages/s on one core; a 350-page book needs ~15 s.
DEFAULT_TIMEOUT_S = READ_TIMEOUT_S  # one default for the library and the command line

_T = TypeVar("_T")


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
        fields = _form_text(page)
        self._forget_contents(page)
        return f"{text}\n{fields}" if fields else text

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


_MAX_FIELDS = 2000  # per page: a form is text a user expects read, a million widgets is an attack
_MAX_FIELD_CHARS = 4000


def _form_text(page: PageObject) -> str:
    """The values filled into the page's form fields, as "name: value" lines (a form's text is its data)."""
    annotations = page.get("/Annots")
    if annotations is None:
        return ""
    lines = []
    for ref in list(annotations.get_object())[:_MAX_FIELDS]:
        field = ref.get_object()
        if not isinstance(field, dict) or field.get("/Subtype") != "/Widget":
            continue
        value, name = _inherited(field, "/V"), _inherited(field, "/T")
        if isinstance(value, str) and value.strip():  # text and choice fields; a checkbox's /V is a name
            label = f"{name}: " if isinstance(name, str) and name.strip() else ""
            lines.append(f"{label}{value}"[:_MAX_FIELD_CHARS])
    return "\n".join(lines)


def _inherited(field: dict[str, object], key: str, depth: int = 8) -> object:
    """A field attribute, from the widget or, as PDF forms allow, from its /Parent chain (bounded)."""
    node: object = field
    for _ in range(depth):
        if not isinstance(node, dict):
            return None
        if key in node:
            value = node[key]
            return value.get_object() if isinstance(value, IndirectObject) else value
        parent = node.get("/Parent")
        node = parent.get_object() if isinstance(parent, IndirectObject) else parent
    return None


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


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read (a link loop, a dangling link, a FIFO, a device...), or None.

    Checked before anything opens it: reading a FIFO blocks forever, and ``/dev/zero`` never ends.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop; remove the link"
        if os.path.islink(path):
            return f"a symbolic link to {os.readlink(path)!r}, which does not exist; fix or remove the link"
        return f"cannot open the file ({e.strerror or e}); check the path"
    if stat.S_ISREG(mode):
        return None
    kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"{kind}, not a PDF file; remove it or move it out of the folder"


_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def _check_file(path: Path) -> str:
    """The file's sha256, after checking that it is a regular file and looks like a PDF at all."""
    problem = regular_file_problem(path)
    if problem is not None:
        raise ReadError(str(path), problem)
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

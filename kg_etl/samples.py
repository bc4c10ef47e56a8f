"""Small PDFs with known text for the tests, written byte by byte (no PDF library beyond pypdf).

Text is Helvetica (a standard font every reader knows) in WinAnsiEncoding, one text object per line, so
pypdf gives back one line per line. Codes 1-5 are remapped (``/Differences``) to the ligature glyphs
ff, fi, fl, ffi, ffl, so a test can put U+FB01 into a PDF exactly as LaTeX does and expect "fi" back.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence
from io import BytesIO
from pathlib import Path

from pypdf import PdfReader, PdfWriter

__all__ = ["LIGATURES", "make_pdf"]

LIGATURES = {"\ufb00": 1, "\ufb01": 2, "\ufb02": 3, "\ufb03": 4, "\ufb04": 5}
_GLYPHS = "/ff /fi /fl /ffi /ffl"
_LINE_HEIGHT = 14
_TOP = 770


def make_pdf(
    path: Path,
    pages: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    author: str | None = None,
    password: str | None = None,
    image_pages: Collection[int] = (),
    broken_pages: Collection[int] = (),
    form_fields: Mapping[int, Sequence[tuple[str, str]]] | None = None,
) -> Path:
    """Write a PDF with one page per entry of ``pages``, each a list of text lines; return ``path``.

    Args:
        image_pages: 1-based pages that also draw an image (a page with no lines is image-only: a "scan").
        broken_pages: 1-based pages with an invalid hex string in their content (pypdf raises on them).
        password: encrypt with AES-256 (user password; the owner password is different).
        form_fields: 1-based page -> (field name, filled-in value) pairs, as text fields of an AcroForm.
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled once the page tree exists
    tree = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding << /Type /Encoding "
               b"/BaseEncoding /WinAnsiEncoding /Differences [1 " + _GLYPHS.encode() + b"] >> >>")  # fmt: skip
    image = add(_stream(b"<< /Type /XObject /Subtype /Image /Width 8 /Height 8 /ColorSpace /DeviceGray "
                        b"/BitsPerComponent 8", bytes(range(0, 256, 4))))  # fmt: skip
    kids, fields = [], []
    for number, lines in enumerate(pages, start=1):
        content = _content(lines, with_image=number in image_pages)
        if number in broken_pages:  # an invalid hex string, as on the bad page of angola_malaria_survey_pt.pdf
            content += b"\nBT /F1 11 Tf 72 60 Td <4?41> Tj ET"
        contents = add(_stream(b"<< /Filter /FlateDecode", zlib.compress(content)))
        widgets = [
            add(b"<< /Type /Annot /Subtype /Widget /FT /Tx /T " + _pdf_string(name) + b" /V " + _pdf_string(value)
                + b" /Rect [72 %d 300 %d] >>" % (100 + 20 * i, 116 + 20 * i))
            for i, (name, value) in enumerate((form_fields or {}).get(number, ()))
        ]  # fmt: skip
        fields += widgets
        annots = f" /Annots [{' '.join(f'{w} 0 R' for w in widgets)}]" if widgets else ""
        kids.append(add(
            f"<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 612 792] /Contents {contents} 0 R{annots} "
            f"/Resources << /Font << /F1 {font} 0 R >> /XObject << /Im1 {image} 0 R >> >> >>".encode()
        ))  # fmt: skip
    form = f" /AcroForm << /Fields [{' '.join(f'{f} 0 R' for f in fields)}] >>" if fields else ""
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {tree} 0 R{form} >>".encode()
    refs = " ".join(f"{kid} 0 R" for kid in kids)
    objects[tree - 1] = f"<< /Type /Pages /Kids [{refs}] /Count {len(kids)} >>".encode()
    info = add(_info(title, author))
    data = _assemble(objects, root=catalog, info=info)
    if password is not None:
        data = _encrypt(data, password)
    path.write_bytes(data)
    return path


def _content(lines: Sequence[str], *, with_image: bool) -> bytes:
    ops = [b"q 200 0 0 200 72 300 cm /Im1 Do Q"] if with_image else []
    for i, line in enumerate(lines):
        y = _TOP - i * _LINE_HEIGHT
        ops.append(b"BT /F1 11 Tf 72 %d Td <%s> Tj ET" % (y, _encode(line).hex().encode()))
    return b"\n".join(ops)


def _encode(line: str) -> bytes:
    """WinAnsi bytes for ``line``, ligatures as their remapped codes."""
    return b"".join(bytes([LIGATURES[c]]) if c in LIGATURES else c.encode("cp1252") for c in line)


def _stream(head: bytes, data: bytes) -> bytes:
    return head + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def _pdf_string(text: str) -> bytes:
    """A PDF text string: UTF-16BE with a byte-order mark, so any title survives."""
    return b"<" + ("\ufeff" + text).encode("utf-16-be").hex().encode() + b">"


def _info(title: str | None, author: str | None) -> bytes:
    entries = [b"/Producer (kg-etl tests)", b"/CreationDate (D:20240131120000Z)"]
    if title is not None:
        entries.append(b"/Title " + _pdf_string(title))
    if author is not None:
        entries.append(b"/Author " + _pdf_string(author))
    return b"<< " + b" ".join(entries) + b" >>"


def _assemble(objects: list[bytes], *, root: int, info: int) -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n" % (len(objects) + 1, root, info)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _encrypt(data: bytes, password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(BytesIO(data)))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = BytesIO()
    writer.write(out)
    return out.getvalue()

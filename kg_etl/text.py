"""Text clean-up shared by the reader: normalisation (with an offset map back to the raw text) and a score
for garbled text (mojibake from fonts without a usable ToUnicode map).

Normalisation makes pypdf's text fit for chunking and for quoting back: ligatures expanded, odd spaces and
control characters made spaces, words hyphenated at a line end joined, runs of spaces collapsed (no NFKC:
it would rewrite maths). ``normalise_with_map`` also says where each character it returns came from.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from array import array
from collections.abc import Callable

__all__ = ["GARBLE_THRESHOLD", "OffsetMap", "garble_score", "normalise", "normalise_with_map"]

# Calibrated on ../shared/corpus (see garble_score): clean pages score at most 0.055 (German maths notes
# and the Ethereum paper: Greek letters inside words, Symbol-font brace pieces), the mojibake pages of
# ethereum_yellowpaper_zh.pdf score 0.24-0.43. 0.12 sits about 2x from both.
GARBLE_THRESHOLD = 0.12

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

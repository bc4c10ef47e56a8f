"""Where a node of the view is found in its chunks: the chunks it cites, and the spans of their text to highlight.

Facts and questions come from one chunk (``FROM_CHUNK``), summaries sum one up (``SUMMARIZES``), entities are
mentioned in chunks (``MENTIONED_IN``, with the surface forms used there), and topics, keywords and
categories are what chunks are about (``HAS_TOPIC``, ``HAS_KEYWORD``, ``IN_CATEGORY``). What is highlighted:
a question's evidence quote (else its answer), a fact's statement (else its subject and object), an entity's
forms in that chunk, a topic's or keyword's name. Small models quote loosely, so case and runs of white
space do not matter, and a quote is never highlighted inside a longer word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["MAX_SPANS", "cited_chunks", "find_spans", "utf16_offsets"]

MAX_SPANS = 20  # per citation: a keyword such as "cell" can occur on every line
Row = dict[str, Any]

# (relationship type, direction from the node) of the links that cite a chunk, per label.
_CITES: dict[str, tuple[str, str]] = {
    "Fact": ("FROM_CHUNK", "outgoing"),
    "Question": ("FROM_CHUNK", "outgoing"),
    "Summary": ("SUMMARIZES", "outgoing"),
    "Entity": ("MENTIONED_IN", "outgoing"),
    "SchemaNode": ("MENTIONED_IN", "outgoing"),  # a node of the user's schema (--schema)
    "Topic": ("HAS_TOPIC", "incoming"),
    "Keyword": ("HAS_KEYWORD", "incoming"),
    "Category": ("IN_CATEGORY", "incoming"),
}


def cited_chunks(kind: str, row: Row) -> list[tuple[str, list[str]]]:
    """The chunks a node cites, in the order the graph gave them, each with the forms used there (entities)."""
    link = _CITES.get(kind)
    if link is None:
        return []
    rel_type, direction = link
    found: dict[str, list[str]] = {}
    for rel in row.get(direction) or []:
        if rel["type"] == rel_type and rel["label"] == "Chunk":
            aliases = (rel.get("props") or {}).get("aliases") or []
            found.setdefault(rel["id"], []).extend(str(a) for a in aliases)
    return list(found.items())


def _groups(kind: str, props: Row, forms: Sequence[str]) -> list[list[str]]:
    """What to look for, best first: the first group found in the chunk is highlighted, all of that group."""
    if kind == "Question":
        return [[props.get("evidence") or ""], [props.get("answer") or ""]]
    if kind == "Fact":
        return [[props.get("text") or ""], [props.get("subject") or "", props.get("object") or ""]]
    if kind == "Entity":
        return [[*forms, props.get("name") or "", *(props.get("aliases") or [])]]
    if kind in ("Topic", "Keyword", "SchemaNode"):
        return [[props.get("name") or ""]]
    return []


def find_spans(text: str, kind: str, props: Row, forms: Sequence[str] = ()) -> list[tuple[int, int]]:
    """Where a node shows in a chunk's text: [start, end) offsets (Python's), in order, not overlapping."""
    for group in _groups(kind, props, forms):
        spans = [m.span() for needle in group if str(needle).strip() for m in _pattern(str(needle)).finditer(text)]
        if spans:
            return _merged(spans)[:MAX_SPANS]
    return []


def utf16_offsets(text: str, spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Python offsets (code points) as JavaScript's (UTF-16 code units): they differ after any character
    outside the Basic Multilingual Plane (emoji, some mathematical letters)."""
    if text.isascii():
        return list(spans)

    def units(i: int) -> int:
        return i + sum(1 for ch in text[:i] if ord(ch) > 0xFFFF)

    return [(units(a), units(b)) for a, b in spans]


def _pattern(needle: str) -> re.Pattern[str]:
    words = needle.split()
    body = r"\s+".join(re.escape(w) for w in words)
    head = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
    tail = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
    return re.compile(head + body + tail, re.IGNORECASE)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged

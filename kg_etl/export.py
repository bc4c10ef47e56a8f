"""Graph -> JSONL: records read back from the graph in pages of ids, so memory stays flat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

from pydantic import BaseModel

from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph

__all__ = ["FactRecord", "export_facts", "iter_facts"]

PAGE_SIZE = 1000


class FactRecord(BaseModel):
    """One exported fact with its citation."""

    id: str
    text: str
    subject: str | None
    predicate: str | None
    object: str | None
    chunk_id: str
    page_start: int
    page_end: int
    doc_id: str
    doc_path: str
    doc_title: str | None


def iter_facts(graph: Graph, page_size: int = PAGE_SIZE) -> Iterator[FactRecord]:
    """Every fact in id order, fetched ``page_size`` at a time (keyset paging: stable and O(page))."""
    after = ""
    while True:
        rows: list[dict[str, Any]] = graph.read_rows(st.EXPORT_FACTS, after=after, limit=page_size)
        for row in rows:
            yield FactRecord(**row)
        if len(rows) < page_size:
            return
        after = str(rows[-1]["id"])


def export_facts(graph: Graph, out: TextIO) -> int:
    """Write one JSON object per fact to ``out``; returns how many."""
    count = 0
    for record in iter_facts(graph):
        out.write(json.dumps(record.model_dump(), ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count

"""What `kg-etl view` shows: a neighbourhood of the graph as nodes, edges and citations (pydantic models).

The page reads exactly this, as JSON: ``GraphView.model_dump(mode="json")``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from kg_etl import defaults as d
from kg_etl.errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_LIMIT", "ChunkText", "Citation", "GraphView", "Selection", "ViewEdge", "ViewNode"]

MAX_DEPTH = 5
MAX_LIMIT = 10_000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Selection(_Frozen):
    """Which neighbourhood to show: start nodes (one selector, or every document), hops, and a node limit."""

    document: str | None = Field(default=None, description="a document's id, path or file name")
    entity: str | None = Field(default=None, description="an entity's id, name or alias (any case)")
    topic: str | None = Field(default=None, description="a topic's id, path ('Science > Biology') or name")
    depth: int = Field(default=d.VIEW_DEPTH, ge=0, le=MAX_DEPTH)
    limit: int = Field(default=d.VIEW_LIMIT, ge=1, le=MAX_LIMIT)

    @model_validator(mode="after")
    def _one_selector(self) -> Selection:
        chosen = [name for name in ("document", "entity", "topic") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ConfigError(f"choose one of --document, --entity and --topic, not {' and '.join(chosen)}")
        return self

    def describe(self) -> str:
        """The selection in words, for the page's title."""
        hops = f"{self.depth} hop{'s' if self.depth != 1 else ''}"
        for name in ("document", "entity", "topic"):
            value = getattr(self, name)
            if value is not None:
                return f"{name} {value}, {hops}"
        return f"every document, {hops}"


class ViewNode(_Frozen):
    """A node of the graph: ``key`` is unique in the page (``Label:id``), ``name`` what it is called."""

    key: str
    kind: str = Field(description="its label: Document, Chunk, Fact, Entity, Topic, ...")
    id: str
    name: str
    props: dict[str, JsonValue] = Field(description="its properties (a chunk's text is in GraphView.texts)")


class ViewEdge(_Frozen):
    """A relationship between two nodes of the page, by their keys."""

    source: str
    target: str
    type: str
    props: dict[str, JsonValue]


class Citation(_Frozen):
    """A chunk that a node comes from or is found in, and the spans of it that show the node."""

    chunk: str = Field(description="the chunk's id, a key of GraphView.texts")
    spans: list[tuple[int, int]] = Field(description="[start, end) offsets in UTF-16 code units, as JavaScript counts")


class ChunkText(_Frozen):
    """A chunk's text and where it is: its document and pages."""

    doc_id: str | None
    doc_name: str | None
    index: int | None
    page_start: int | None
    page_end: int | None
    text: str


class GraphView(_Frozen):
    """One page: the chosen nodes, the relationships among them, and each node's citations."""

    title: str
    selection: Selection
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    citations: dict[str, list[Citation]] = Field(description="node key -> the first chunks it cites")
    more_citations: dict[str, int] = Field(description="node key -> how many more chunks it cites than listed")
    texts: dict[str, ChunkText] = Field(description="chunk id -> its text, for chunk nodes and citations")
    truncated: bool = Field(description="the limit stopped the walk: more nodes are within reach")
    format: Literal["kg-etl-view/1"] = "kg-etl-view/1"

"""Choose what `kg-etl view` shows: a neighbourhood of the graph, read through parameterised statements.

The walk starts at the documents named by ``--document``, the entities of ``--entity``, the topics of ``--topic``
(several when a name fits several), or else at every document, and follows any relationship for ``--depth``
hops. A chunk is shown inside its document, so a hop passes through it: one hop from a document reaches what
its chunks hold (facts, questions, summaries, entities, topics, keywords, categories); one hop from an entity
reaches its facts, the entities it is related to, the documents that mention it and what else their chunks
hold there. ``NEXT_CHUNK`` is not walked: it would run along a whole document in one hop.

What a node brings along is shown as context and not walked from: a chunk its document, a topic its broader
topics up to the root, so that the taxonomy shows as a tree. Each hop adds its nodes by kind (documents,
entities, topics, facts, questions, categories, keywords, summaries, chunks), each with the chunk it was
found through, until ``--limit`` nodes; ``GraphView.truncated`` then says that more was within reach.
Every relationship between two chosen nodes is shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kg_etl.errors import ConfigError, KgEtlError
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph
from kg_etl.models import text_of
from kg_etl.view.cite import cited_chunks, find_spans, utf16_offsets
from kg_etl.view.model import ChunkText, Citation, GraphView, Selection, ViewEdge, ViewNode

__all__ = ["KIND_ORDER", "MAX_CITATIONS", "node_name", "select_view"]

KIND_ORDER = (
    "Document", "Entity", "SchemaNode", "Topic", "Fact", "Question", "Category", "Keyword", "Summary", "Chunk",
)  # fmt: skip
MAX_CITATIONS = 5  # chunks listed per node; an entity or a category may be in hundreds
BATCH = 500  # ids per lookup statement
Key = tuple[str, str]  # (label, id)
Row = dict[str, Any]

_LIST_HINTS = {
    "document": "`kg-etl query --file documents` lists them",
    "entity": 'list them with: kg-etl query "MATCH (e:Entity) RETURN e.name, e.type ORDER BY e.name"',
    "topic": 'list them with: kg-etl query "MATCH (t:Topic) RETURN t.path ORDER BY t.path"',
}


def select_view(graph: Graph, selection: Selection) -> GraphView:
    """The neighbourhood ``selection`` asks for, with every relationship among its nodes and their citations.

    Raises:
        KgEtlError: the graph holds no documents.
        ConfigError: the document, entity or topic named is not in the graph.
        GraphError: the graph fails.
    """
    if not graph.read_rows(st.VIEW_DOCUMENTS, limit=1):
        raise KgEtlError("the graph holds no documents yet: `kg-etl ingest pdfs/` fills it, then view it")
    walk = _Walk(graph, selection.limit)
    level = walk.add(_start(graph, selection), {})
    for _ in range(selection.depth):
        if not level or walk.truncated:
            break
        level = walk.hop(level)
    walk.fetch(list(walk.included))
    return _view(graph, selection, walk)


def _start(graph: Graph, selection: Selection) -> list[Key]:
    """The start nodes, or a ConfigError that names what was not found and how to list what there is."""
    finders = {"document": st.FIND_DOCUMENTS, "entity": st.FIND_ENTITIES, "topic": st.FIND_TOPICS}
    for name, statement in finders.items():
        ref = getattr(selection, name)
        if ref is None:
            continue
        found = [(name.capitalize(), str(row["id"])) for row in graph.read_rows(statement, ref=ref)]
        if not found:
            raise ConfigError(f"--{name} {text_of(ref)}: no such {name} in the graph; {_LIST_HINTS[name]}")
        return found
    return [("Document", str(row["id"])) for row in graph.read_rows(st.VIEW_DOCUMENTS, limit=selection.limit)]


@dataclass
class _Walk:
    """The nodes chosen so far (in the order they were chosen) and the rows read for them."""

    graph: Graph
    limit: int
    included: dict[Key, None] = field(default_factory=dict)
    walked: set[Key] = field(default_factory=set)
    rows: dict[Key, Row] = field(default_factory=dict)
    doc_of: dict[str, str] = field(default_factory=dict)  # chunk id -> document id
    truncated: bool = False

    def fetch(self, keys: Iterable[Key]) -> None:
        """Read the properties and relationships of the nodes not read yet, a batch of ids per label at a time."""
        by_label: dict[str, list[str]] = {}
        for label, node_id in dict.fromkeys(keys):
            if (label, node_id) not in self.rows and label in st.VIEW_NODES:
                by_label.setdefault(label, []).append(node_id)
        for label, ids in by_label.items():
            for start in range(0, len(ids), BATCH):
                for row in self.graph.read_rows(st.VIEW_NODES[label], ids=ids[start : start + BATCH]):
                    self.rows[(label, str(row["id"]))] = row
                    if label == "Chunk" and row["props"].get("doc_id"):
                        self.doc_of[str(row["id"])] = str(row["props"]["doc_id"])

    def hop(self, level: list[Key]) -> list[Key]:
        """One hop from ``level``, through chunks; returns the nodes added, to walk from next."""
        self.fetch(level)
        via: dict[Key, Key | None] = {}
        chunks: list[Key] = []
        for key in level:
            for neighbour in self._neighbours(key):
                via.setdefault(neighbour, None)
                if neighbour[0] == "Chunk":
                    chunks.append(neighbour)
        self.fetch(chunks)
        for chunk in dict.fromkeys(chunks):
            for neighbour in self._neighbours(chunk):
                via.setdefault(neighbour, chunk)
        candidates = sorted((k for k in via if k not in self.walked), key=lambda k: _rank(k[0]))
        return [k for k in self.add(candidates, via) if k[0] != "Chunk"]  # chunks were passed through already

    def add(self, candidates: list[Key], via: dict[Key, Key | None]) -> list[Key]:
        """Choose candidates in order, each with what it brings along, while they fit the limit."""
        ancestors = self._ancestors([node_id for label, node_id in candidates if label == "Topic"])
        added: list[Key] = []
        for key in candidates:
            group = [k for k in (via.get(key), key) if k is not None]
            group += [("Document", self.doc_of[c[1]]) for c in group if c[0] == "Chunk" and c[1] in self.doc_of]
            group += [("Topic", a) for a in ancestors.get(key[1], [])] if key[0] == "Topic" else []
            new = [k for k in dict.fromkeys(group) if k not in self.included]
            if len(self.included) + len(new) > self.limit:
                self.truncated = True
                break
            self.included.update(dict.fromkeys(new))
            self.walked.add(key)
            added.append(key)
        return added

    def _neighbours(self, key: Key) -> Iterator[Key]:
        row = self.rows.get(key)
        if row is None:
            return
        # In a fixed order (the server's is its storage order), so that the limit always keeps the same nodes.
        rels = sorted((r for r in [*row["outgoing"], *row["incoming"]] if r["id"] is not None),
                      key=lambda r: (str(r["label"]), str(r["id"]), str(r["type"])))  # fmt: skip
        for rel in rels:
            if rel["type"] == "NEXT_CHUNK":
                continue
            if rel["label"] == "Chunk" and rel.get("doc_id"):
                self.doc_of[str(rel["id"])] = str(rel["doc_id"])
            yield (str(rel["label"]), str(rel["id"]))

    def _ancestors(self, topic_ids: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for start in range(0, len(topic_ids), BATCH):
            for row in self.graph.read_rows(st.TOPIC_ANCESTORS, ids=topic_ids[start : start + BATCH]):
                found[str(row["id"])] = sorted(str(a) for a in row["ancestors"])
        return found


def _rank(label: str) -> int:
    return KIND_ORDER.index(label) if label in KIND_ORDER else len(KIND_ORDER)


# -- the view: nodes, edges, citations -------------------------------------------------------------------------


def _view(graph: Graph, selection: Selection, walk: _Walk) -> GraphView:
    keys = [k for k in walk.included if k in walk.rows]
    chosen = set(keys)
    nodes = [_node(label, node_id, walk.rows[(label, node_id)]["props"]) for label, node_id in keys]
    edges = [
        ViewEdge(source=_key(key), target=_key(target), type=str(rel["type"]), props=_json(rel.get("props") or {}))
        for key in keys
        for rel in walk.rows[key]["outgoing"]
        if (target := (str(rel["label"]), str(rel["id"]))) in chosen
    ]
    texts = {node_id: _chunk_text(walk, node_id) for label, node_id in keys if label == "Chunk"}
    citations, more = _citations(walk, keys, chosen)
    missing = sorted({c.chunk for cited in citations.values() for c in cited} - texts.keys())
    texts |= _read_texts(graph, missing)
    found = {key: [_spans(c, texts[c.chunk]) for c in cited if c.chunk in texts] for key, cited in citations.items()}
    return GraphView(
        title=f"kg-etl view: {text_of(selection.describe())}",
        selection=selection,
        nodes=nodes,
        edges=edges,
        citations={key: cited for key, cited in found.items() if cited},
        more_citations=more,
        texts=texts,
        truncated=walk.truncated,
    )


def _key(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


def _node(label: str, node_id: str, props: Row) -> ViewNode:
    shown = {k: v for k, v in props.items() if not (label == "Chunk" and k == "text")}  # the text is in texts
    return ViewNode(key=_key((label, node_id)), kind=label, id=node_id, name=node_name(label, node_id, props),
                    props=_json(shown))  # fmt: skip


def node_name(label: str, node_id: str, props: Row) -> str:
    """What a node is called on the page: a document's title, a chunk's place, a question, a fact's statement."""
    if label == "Document":
        name = props.get("title") or props.get("name") or props.get("path")
    elif label == "Chunk":
        name = f"chunk {props.get('index')}, {_pages(props.get('page_start'), props.get('page_end'))}"
    elif label == "Question":
        name = props.get("question")
    elif label in ("Fact", "Summary"):
        name = props.get("text")
    else:
        name = props.get("name") or props.get("path")
    return text_of(str(name)) if name else node_id


def _pages(start: Any, end: Any) -> str:
    return f"p. {start}" if start == end or end is None else f"pp. {start}-{end}"


def _chunk_text(walk: _Walk, chunk_id: str) -> ChunkText:
    props = walk.rows[("Chunk", chunk_id)]["props"]
    doc_id = walk.doc_of.get(chunk_id)
    doc = walk.rows.get(("Document", doc_id or ""), {}).get("props", {})
    return ChunkText(doc_id=doc_id, doc_name=doc.get("name"), index=props.get("index"),
                     page_start=props.get("page_start"), page_end=props.get("page_end"),
                     text=str(props.get("text") or ""))  # fmt: skip


def _read_texts(graph: Graph, chunk_ids: list[str]) -> dict[str, ChunkText]:
    texts: dict[str, ChunkText] = {}
    for start in range(0, len(chunk_ids), BATCH):
        for row in graph.read_rows(st.CHUNK_TEXTS, ids=chunk_ids[start : start + BATCH]):
            texts[str(row["id"])] = ChunkText(**{k: row[k] for k in ChunkText.model_fields if k != "text"},
                                              text=str(row["text"] or ""))  # fmt: skip
    return texts


# A citation before its spans are found: the chunk, and the forms of an entity used there.
@dataclass(frozen=True)
class _Cited:
    chunk: str
    forms: tuple[str, ...]
    kind: str
    props: Row


def _citations(walk: _Walk, keys: list[Key], chosen: set[Key]) -> tuple[dict[str, list[_Cited]], dict[str, int]]:
    """The first chunks each node cites (chunks on the page first), and how many more it cites."""
    citations: dict[str, list[_Cited]] = {}
    more: dict[str, int] = {}
    for label, node_id in keys:
        row = walk.rows[(label, node_id)]
        cited = sorted(cited_chunks(label, row), key=lambda c: (("Chunk", c[0]) not in chosen, c[0]))
        if not cited:
            continue
        key = _key((label, node_id))
        citations[key] = [_Cited(chunk, tuple(forms), label, row["props"]) for chunk, forms in cited[:MAX_CITATIONS]]
        if len(cited) > MAX_CITATIONS:
            more[key] = len(cited) - MAX_CITATIONS
    return citations, more


def _spans(cited: _Cited, text: ChunkText) -> Citation:
    spans = find_spans(text.text, cited.kind, cited.props, cited.forms)
    return Citation(chunk=cited.chunk, spans=utf16_offsets(text.text, spans))


def _json(value: Any) -> Any:
    """A property value as JSON: numbers that JSON cannot hold, and the driver's own types, become text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return str(value)

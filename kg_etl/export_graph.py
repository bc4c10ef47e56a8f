"""The whole graph as a file other tools read: GraphML (Gephi, yEd, Cytoscape), Cypher (a Neo4j import), and
Cytoscape.js JSON (``json-graph``: Cytoscape imports it, cytoscape.js and networkx read it).

Nodes are read a page of ids at a time per label (keyset paging, as ``kg_etl.export`` reads chunks), each with
its outgoing relationships, so memory stays flat however large the graph is: what must come later in the file
(GraphML's key declarations come first; relationships come after all nodes) waits in a temporary file.

The Cypher export is the one place where kg-etl formats values into Cypher text, for a file that must run
with no parameters: every string is a single-quoted literal with ``\\``, ``'`` and every control or line
separator character escaped, every label, type and key a backticked name with its backticks doubled
(``cypher_literal``, ``cypher_name``).
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TextIO
from xml.sax.saxutils import escape, quoteattr

from pydantic import BaseModel, Field

from kg_etl import __version__
from kg_etl.errors import ConfigError
from kg_etl.export import write_atomically
from kg_etl.graph import statements as st
from kg_etl.graph.connection import CYPHER_DIR, Graph, split_cypher
from kg_etl.view.select import node_name

__all__ = [
    "GRAPH_FORMATS",
    "GraphExportReport",
    "GraphNode",
    "cypher_literal",
    "cypher_name",
    "export_graph",
    "export_graph_to",
    "iter_graph",
]

GraphFormat = Literal["graphml", "cypher", "json-graph"]
GRAPH_FORMATS: tuple[GraphFormat, ...] = ("graphml", "cypher", "json-graph")
PAGE_NODES = 500
CYPHER_BATCH = 100  # rows per UNWIND statement: a statement per node would make an import crawl
Row = dict[str, Any]


# A user schema's declared names (``extract.schema`` checked them when the schema was loaded); read back from
# the graph they are data, so they are checked again before a file names them.
_USER_LABEL = re.compile(r"^[A-Z][A-Za-z0-9]{0,39}$")
_USER_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")


class GraphNode(BaseModel):
    """One node as read for an export: its label, properties and outgoing relationships."""

    label: str
    id: str
    props: Row

    @property
    def labels(self) -> tuple[str, ...]:
        """Its labels: the model's one, and a user schema node's declared type beside SchemaNode."""
        kind = self.props.get("type")
        if self.label == "SchemaNode" and isinstance(kind, str) and _USER_LABEL.match(kind) and kind not in st.LABELS:
            return (self.label, kind)
        return (self.label,)

    outgoing: list[Row] = Field(description="type, label and id of the other end, props")

    @property
    def key(self) -> str:
        """Unique in the file: ``Label:id``, as the view names nodes."""
        return f"{self.label}:{self.id}"


class GraphExportReport(BaseModel):
    """What a graph export wrote: nodes per label and relationships per type."""

    format: GraphFormat
    labels: dict[str, int] = Field(default_factory=dict)
    relationships: dict[str, int] = Field(default_factory=dict)

    @property
    def nodes(self) -> int:
        return sum(self.labels.values())

    @property
    def edges(self) -> int:
        return sum(self.relationships.values())


def iter_graph(graph: Graph, page_size: int = PAGE_NODES) -> Iterator[GraphNode]:
    """Every node of the model's labels, label by label in id order, with its outgoing relationships."""
    for label in st.LABELS:
        after = ""
        while True:
            rows = graph.read_rows(st.GRAPH_PAGE[label], after=after, limit=page_size)
            for row in rows:
                outgoing = [
                    r for r in row["outgoing"] if r["label"] in st.LABELS and r["id"] is not None and _known_type(r)
                ]
                yield GraphNode(label=label, id=str(row["id"]), props=row["props"], outgoing=outgoing)
            if len(rows) < page_size:
                break
            after = str(rows[-1]["id"])


def _known_type(rel: Row) -> bool:
    """A relationship of the model, or one of a user schema's between its nodes (its name checked)."""
    kind = str(rel["type"])
    return kind in st.RELATIONSHIP_TYPES or (rel["label"] == "SchemaNode" and bool(_USER_TYPE.match(kind)))


def export_graph(graph: Graph, out: TextIO, fmt: str) -> GraphExportReport:
    """Write the whole graph to ``out`` in ``fmt`` (graphml, cypher or json-graph).

    Raises:
        ConfigError: an unknown format.
        GraphError: the graph fails.
    """
    writers: dict[str, Callable[[Graph, TextIO, GraphExportReport], None]] = {
        "graphml": _graphml,
        "cypher": _cypher,
        "json-graph": _json_graph,
    }
    if fmt not in writers:
        raise ConfigError(f"{fmt}: unknown graph format; choose one of {', '.join(GRAPH_FORMATS)}")
    report = GraphExportReport(format=fmt)  # type: ignore[arg-type]  # checked just above
    writers[fmt](graph, out, report)
    return report


def export_graph_to(graph: Graph, target: str, fmt: str, *, stdout: TextIO | None = None) -> GraphExportReport:
    """``export_graph`` into a file (``"-"``: ``stdout``), written whole or not at all, never through a link.

    Raises:
        ConfigError: an unknown format; the target is not a regular file, its folder is missing, or writing failed.
    """
    if target == "-":
        out = stdout or sys.stdout
        try:
            report = export_graph(graph, out, fmt)
            out.flush()
        except OSError as e:
            raise ConfigError(f"standard output: cannot write the export ({e.strerror or e})") from e
        return report
    return write_atomically(Path(target), lambda f: export_graph(graph, f, fmt), hint=" (use - for stdout)")


def _count(report: GraphExportReport, node: GraphNode) -> None:
    report.labels[node.label] = report.labels.get(node.label, 0) + 1
    for rel in node.outgoing:
        report.relationships[rel["type"]] = report.relationships.get(rel["type"], 0) + 1


def _spool() -> TextIO:
    return tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")


def _copy(spool: TextIO, out: TextIO) -> None:
    spool.seek(0)
    for line in spool:
        out.write(line)


# -- GraphML -------------------------------------------------------------------------------------------------
# Neo4j's own GraphML export (APOC) is followed where tools look for it: a node's labels in "labels"
# (":Document"), a relationship's type in "label". Gephi labels nodes by their "label" key: the node's name.

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml(text: str) -> str:
    """Text XML 1.0 can hold: characters it cannot hold even escaped (most controls) become U+FFFD."""
    return _XML_INVALID.sub("\ufffd", text)


def _graphml_value(value: Any) -> tuple[str, str]:
    """A value's GraphML type and text; lists and maps have no GraphML type and are written as JSON."""
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, int):
        return "long", str(value)
    if isinstance(value, float):
        return "double", repr(value) if math.isfinite(value) else ("NaN" if math.isnan(value) else _inf(value))
    if isinstance(value, list | tuple | dict):
        return "string", json.dumps(value, ensure_ascii=False, default=str)
    return "string", str(value)


def _inf(value: float) -> str:
    return "INF" if value > 0 else "-INF"


def _wider(known: str | None, new: str) -> str:
    """The type that holds values of both: long and double make double; anything else mixed makes string."""
    if known is None or known == new:
        return new
    return "double" if {known, new} == {"long", "double"} else "string"


def _graphml_data(domain: str, values: Row, keys: dict[tuple[str, str], str]) -> str:
    parts = []
    for name, value in values.items():
        if value is None:
            continue
        kind, text = _graphml_value(value)
        keys[(domain, name)] = _wider(keys.get((domain, name)), kind)
        parts.append(f"<data key={quoteattr(_xml(f'{domain[0]}_{name}'))}>{escape(_xml(text))}</data>")
    return "".join(parts)


def _graphml(graph: Graph, out: TextIO, report: GraphExportReport) -> None:
    keys: dict[tuple[str, str], str] = {}
    with _spool() as nodes, _spool() as edges:
        for node in iter_graph(graph):
            _count(report, node)
            values = {"labels": "".join(f":{label}" for label in node.labels), "label": _export_name(node)} | node.props
            nodes.write(f"<node id={quoteattr(_xml(node.key))}>{_graphml_data('node', values, keys)}</node>\n")
            for rel in node.outgoing:
                target = f"{rel['label']}:{rel['id']}"
                data = _graphml_data("edge", {"label": rel["type"]} | (rel.get("props") or {}), keys)
                edges.write(
                    f"<edge source={quoteattr(_xml(node.key))} target={quoteattr(_xml(target))}>{data}</edge>\n"
                )
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write('<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
                  'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                  'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
                  'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n')  # fmt: skip
        out.write(f"<!-- kg-etl {escape(__version__)}: the whole graph -->\n")
        for (domain, name), kind in sorted(keys.items()):
            key_id = quoteattr(_xml(f"{domain[0]}_{name}"))
            out.write(f'<key id={key_id} for="{domain}" attr.name={quoteattr(_xml(name))} attr.type="{kind}"/>\n')
        out.write('<graph id="kg-etl" edgedefault="directed">\n')
        _copy(nodes, out)
        _copy(edges, out)
        out.write("</graph>\n</graphml>\n")


def _export_name(node: GraphNode) -> str:
    """The name tools show for a node: its own ``name`` property where it has one, else what the view shows."""
    name = node.props.get("name")
    return str(name) if name else node_name(node.label, node.id, node.props)


# -- Cypher --------------------------------------------------------------------------------------------------

_CYPHER_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_CYPHER_SPECIAL = re.compile("[\\\\'\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _CYPHER_ESCAPES:
        return _CYPHER_ESCAPES[ch]
    if 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate is no character: Cypher text must be valid Unicode
        return "\\uFFFD"
    return f"\\u{ord(ch):04X}"


def cypher_name(name: str) -> str:
    """A label, relationship type or property key as a backticked Cypher name."""
    return "`" + name.replace("`", "``") + "`"


def cypher_literal(value: Any) -> str:
    """A property value as a Cypher literal: strings single-quoted with every special character escaped.

    Raises:
        ConfigError: a value no Cypher literal can hold (bytes, a map inside a list...).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value).replace("e+", "e")  # Cypher's exponent takes a minus sign, not a plus
        return f"toFloat('{'NaN' if math.isnan(value) else 'Infinity' if value > 0 else '-Infinity'}')"
    if isinstance(value, str):
        return "'" + _CYPHER_SPECIAL.sub(_escape_char, value) + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(cypher_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return _cypher_map(value)
    return cypher_literal(str(value))  # the driver's temporal and spatial types, by their text


def _cypher_map(values: Row) -> str:
    return (
        "{" + ", ".join(f"{cypher_name(str(k))}: {cypher_literal(v)}" for k, v in values.items() if v is not None) + "}"
    )


def _cypher(graph: Graph, out: TextIO, report: GraphExportReport) -> None:
    out.write(f"// kg-etl {__version__}: the whole graph, for an empty Neo4j 5 database (cypher-shell -f FILE).\n")
    out.write("// The constraints first: they make every id unique, and index the ids that relationships match on.\n")
    for statement in split_cypher((CYPHER_DIR / "schema.cypher").read_text(encoding="utf-8")):
        out.write(statement + ";\n")
    pending: dict[tuple[str, ...], list[str]] = {}
    groups: dict[tuple[str, str, str], list[str]] = {}
    with _spool() as rels:
        for node in iter_graph(graph):
            _count(report, node)
            pending.setdefault(node.labels, []).append(_cypher_map(node.props | {"id": node.id}))
            if len(pending[node.labels]) >= CYPHER_BATCH:
                out.write(_create_nodes(node.labels, pending.pop(node.labels)))
            for rel in node.outgoing:
                group = (node.label, str(rel["type"]), str(rel["label"]))
                props = _cypher_map(rel.get("props") or {})
                row = f"[{cypher_literal(node.id)}, {cypher_literal(rel['id'])}, {props}]"
                groups.setdefault(group, []).append(row)
                if len(groups[group]) >= CYPHER_BATCH:
                    rels.write(_create_relationships(*group, groups.pop(group)))
        for labels, rows in pending.items():
            out.write(_create_nodes(labels, rows))
        for group, rows in groups.items():
            rels.write(_create_relationships(*group, rows))
        _copy(rels, out)


def _create_nodes(labels: tuple[str, ...], rows: list[str]) -> str:
    names = ":".join(cypher_name(label) for label in labels)
    return f"UNWIND [{', '.join(rows)}] AS row\nCREATE (n:{names})\nSET n = row;\n"


def _create_relationships(start: str, rel_type: str, end: str, rows: list[str]) -> str:
    # Each row is [start id, end id, properties]: a list, not a map, whose keys the checker would take for
    # property keys of the graph.
    return (f"UNWIND [{', '.join(rows)}] AS row\nMATCH (a:{cypher_name(start)} {{id: row[0]}})\n"
            f"MATCH (b:{cypher_name(end)} {{id: row[1]}})\nCREATE (a)-[r:{cypher_name(rel_type)}]->(b)\n"
            "SET r = row[2];\n")  # fmt: skip


# -- Cytoscape.js JSON ---------------------------------------------------------------------------------------
# https://js.cytoscape.org/#notation/elements-json: {"elements": {"nodes": [{"data": {...}}], "edges": [...]}}.
# Cytoscape (desktop) imports it as a network (File > Import > Network from File, .cyjs or .json), with
# "name" as the node label and "interaction" as the edge type; networkx reads it with cytoscape_graph().


def _json_graph(graph: Graph, out: TextIO, report: GraphExportReport) -> None:
    out.write('{"format_version": "1.0", "generated_by": ' + json.dumps(f"kg-etl {__version__}") + ', '
              '"target_cytoscapejs_version": "~3.35", "data": {"name": "kg-etl graph", "shared_name": "kg-etl graph"}, '
              '"elements": {"nodes": [')  # fmt: skip
    first = True
    with _spool() as edges:
        for node in iter_graph(graph):
            _count(report, node)
            data = {k: v for k, v in node.props.items() if k not in ("id", "name") and v is not None}
            data |= {"id": node.key, "kg_id": node.id, "label": node.label, "name": _export_name(node)}
            out.write(("" if first else ",") + "\n" + _json({"data": data}))
            first = False
            for rel in node.outgoing:
                props = {k: v for k, v in (rel.get("props") or {}).items() if v is not None}
                target = f"{rel['label']}:{rel['id']}"
                edge = props | {"source": node.key, "target": target, "interaction": rel["type"], "label": rel["type"]}
                edges.write(_json({"data": edge}) + "\n")
        out.write('\n], "edges": [')
        edges.seek(0)
        for i, line in enumerate(edges):
            out.write(("" if i == 0 else ",") + "\n" + line.rstrip("\n"))
        out.write("\n]}}\n")


def _json(value: Any) -> str:
    """One JSON value; numbers JSON cannot hold (NaN, infinities) as text, so that every reader accepts it."""
    text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=True)
    if "NaN" in text or "Infinity" in text:
        text = json.dumps(_finite(value), ensure_ascii=False, default=str)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value

"""Graph -> JSONL: QA datasets to train and evaluate on, and the other extractions, each with its citation.

Records stream from the graph a page of chunks at a time (keyset paging, see ``statements``), in one total
order: document path, document id, chunk index, chunk id, then the record's own key. The same graph gives the
same file, byte for byte, and memory stays flat however large the graph is.

QA export removes near-duplicate questions by default (``NearDuplicates``): the graph is read once, the lines go
to an unnamed temporary file while the groups form, then to the output without all but the best of each group.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg_etl.dedup import NearDuplicates, question_key, question_words
from kg_etl.errors import ConfigError, GraphError
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph
from kg_etl.records import FactRecord, KeywordRecord, QARecord, SummaryRecord, TopicRecord, qa_record
from kg_etl.registry import export_kind, export_kinds

__all__ = [
    "DEFAULT_SYSTEM",
    "FORMATS",
    "KINDS",
    "QA_SCHEMA_PATH",
    "ExportReport",
    "FactRecord",
    "KeywordRecord",
    "NearDuplicates",
    "QAOptions",
    "QARecord",
    "SummaryRecord",
    "TopicRecord",
    "check_target",
    "export",
    "export_to",
    "format_qa",
    "iter_qa",
    "iter_records",
    "qa_schema",
    "question_key",
    "question_words",
    "write_atomically",
]

QAFormat = Literal["plain", "chat", "alpaca", "sharegpt"]
KINDS: tuple[str, ...] = tuple(export_kinds())
FORMATS: tuple[QAFormat, ...] = ("plain", "chat", "alpaca", "sharegpt")
DEFAULT_SYSTEM = "Answer the question briefly and accurately."
QA_SCHEMA_PATH = Path(__file__).parent / "data" / "qa_record.schema.json"

PAGE_CHUNKS = 250  # chunks per page: 250..1000 export equally fast on ArcadeDB; 100 is 2x slower
PAGE_DOCUMENTS = 100
Row = dict[str, Any]
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


# -- reading in pages --------------------------------------------------------------------------------------


def _documents(graph: Graph, ids: list[str] | None, page_size: int = PAGE_DOCUMENTS) -> Iterator[Row]:
    """Documents in (path, id) order; only ``ids`` when given."""
    path, doc_id = "", ""
    while True:
        rows = graph.read_rows(st.EXPORT_DOCUMENTS, ids=ids, path=path, id=doc_id, limit=page_size)
        yield from rows
        if len(rows) < page_size:
            return
        path, doc_id = rows[-1]["path"], rows[-1]["id"]


def _chunks(graph: Graph, statement: st.Statement, doc_id: str, page_size: int) -> Iterator[Row]:
    """A document's chunks in (index, id) order, each with its ``items``, ``page_size`` chunks per query."""
    index, chunk_id = -1, ""
    while True:
        rows = graph.read_rows(statement, doc_id=doc_id, index=index, chunk_id=chunk_id, limit=page_size)
        yield from rows
        if len(rows) < page_size:
            return
        index, chunk_id = rows[-1]["chunk_index"], rows[-1]["chunk_id"]


def _items(
    graph: Graph, statement: st.Statement, order: Callable[[Row], Any], ids: list[str] | None, page_size: int
) -> Iterator[tuple[Row, Row, Row]]:
    for doc in _documents(graph, ids):
        for chunk in _chunks(graph, statement, doc["id"], page_size):
            for item in sorted(chunk["items"], key=order):
                yield doc, chunk, item


def _resolve(graph: Graph, documents: Sequence[str]) -> list[str] | None:
    """The ids of the documents named (by id, path or file name); None for all.

    Raises:
        ConfigError: a name matches no document.
    """
    if not documents:
        return None
    ids: dict[str, None] = {}
    for ref in documents:
        found = graph.read_rows(st.FIND_DOCUMENTS, ref=ref)
        if not found:
            raise ConfigError(f"--document {ref}: no such document in the graph (give its id, path or file name)")
        ids.update(dict.fromkeys(str(row["id"]) for row in found))
    return list(ids)


def _build(build: Callable[[Row, Row | None, Row], R], doc: Row, chunk: Row | None, item: Row) -> R:
    """A record from its rows; a graph holding something else is a GraphError that says where."""
    try:
        return build(doc, chunk, item)
    except ValidationError as e:
        where = f"{doc['path']} chunk {chunk['chunk_index']}" if chunk is not None else doc["path"]
        raise GraphError(f"{where}: a stored record does not fit the export format ({e.errors()[0]['msg']})") from e


def iter_records(
    graph: Graph, kind: str, documents: Sequence[str] = (), page_size: int = PAGE_CHUNKS
) -> Iterator[BaseModel]:
    """Every record of one kind in export order, unfiltered; ``documents`` limits it to those (id, path or name).

    Raises:
        ConfigError: an unknown kind, or a document that is not in the graph.
        GraphError: the graph fails, or holds a record that does not fit its record class.
    """
    spec = export_kind(kind)
    ids = _resolve(graph, documents)
    for doc in _documents(graph, ids):
        if spec.documents is not None:  # what the document holds itself (its summary) comes first
            for item in graph.read_rows(spec.documents, doc_id=doc["id"]):
                yield _build(spec.build, doc, None, item)
        for chunk in _chunks(graph, spec.statement, doc["id"], page_size):
            for item in sorted(chunk["items"], key=spec.order):
                yield _build(spec.build, doc, chunk, item)


# -- QA: filters, formats, near-duplicates ------------------------------------------------------------------


class QAOptions(BaseModel):
    """What a QA export keeps and how it writes each pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: QAFormat = "plain"
    validated_only: bool = Field(default=True, description="only pairs the validation pass judged valid")
    min_score: float | None = Field(default=None, ge=0, le=1, description="only pairs scored at least this")
    dedup: bool = Field(default=True, description="drop near-duplicate questions, keeping the best of each group")
    system: str = Field(default=DEFAULT_SYSTEM, description="the system turn of chat and sharegpt ('' for none)")

    def keeps(self, record: QARecord) -> bool:
        """Whether a pair passes the validation filters."""
        if self.validated_only and record.verdict != "valid":
            return False
        return self.min_score is None or (record.score is not None and record.score >= self.min_score)


def iter_qa(
    graph: Graph, documents: Sequence[str] = (), options: QAOptions | None = None, page_size: int = PAGE_CHUNKS
) -> Iterator[QARecord]:
    """QA pairs in export order that pass the options' filters (near-duplicates are not removed here)."""
    options = options or QAOptions()
    spec = export_kind("qa")
    for doc, chunk, item in _items(graph, spec.statement, spec.order, _resolve(graph, documents), page_size):
        record = _build(qa_record, doc, chunk, item)
        if options.keeps(record):
            yield record


def format_qa(record: QARecord, fmt: QAFormat = "plain", system: str = DEFAULT_SYSTEM) -> Row:
    """One record in a training format; the non-plain ones carry the rest of the record as ``metadata``.

    chat: ``messages`` (system, user = question, assistant = answer); alpaca: ``instruction`` = question,
    ``input`` = "", ``output`` = answer; sharegpt: ``conversations`` (system, human, gpt) of ``from``/``value``.
    The question is asked closed-book: the evidence quote and the source stay in the metadata, for evaluation
    and citation, out of the prompt.
    """
    if fmt == "plain":
        return record.model_dump()
    metadata = record.model_dump(exclude={"question", "answer"})
    if fmt == "alpaca":
        return {"instruction": record.question, "input": "", "output": record.answer, "metadata": metadata}
    turns = [("system", system)] if system else []
    turns += [("user", record.question), ("assistant", record.answer)]
    if fmt == "chat":
        return {"messages": [{"role": r, "content": c} for r, c in turns], "metadata": metadata}
    if fmt == "sharegpt":
        names = {"system": "system", "user": "human", "assistant": "gpt"}
        return {"conversations": [{"from": names[r], "value": c} for r, c in turns], "metadata": metadata}
    raise ConfigError(f"{fmt}: unknown QA format; choose one of {', '.join(FORMATS)}")


def qa_schema(fmt: QAFormat = "plain") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one QA record in ``fmt``, from ``kg_etl/data/qa_record.schema.json``."""
    schema: dict[str, Any] = json.loads(QA_SCHEMA_PATH.read_text(encoding="utf-8"))
    if fmt != "plain":
        schema["$ref"] = f"#/$defs/{fmt}"
    return schema


def _rank(record: QARecord) -> float:
    """Valid beats unvalidated beats invalid; then the higher score."""
    tier = {"valid": 6.0, "unvalidated": 2.0}.get(record.verdict, 0.0)
    return tier + (record.score if record.score is not None else -1.0)


# -- writing -----------------------------------------------------------------------------------------------


class ExportReport(BaseModel):
    """What an export wrote and what it left out."""

    kind: str
    written: int = 0
    filtered_out: int = Field(default=0, description="QA pairs below --validated-only / --min-score")
    duplicates_removed: int = Field(default=0, description="near-duplicate questions not written")


# Line breaks that JSON leaves unescaped but str.splitlines() splits on: escaped, so every reader sees one
# record per line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _line(record: Row) -> str:
    return json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


def export(
    graph: Graph,
    out: TextIO,
    kind: str = "qa",
    documents: Sequence[str] = (),
    qa: QAOptions | None = None,
    page_size: int = PAGE_CHUNKS,
) -> ExportReport:
    """Write one JSON object per record of ``kind`` to ``out``, in export order.

    Args:
        documents: only these documents (id, path or file name); all when empty.
        qa: filters, format and near-duplicate removal; only for kind "qa".

    Raises:
        ConfigError: QA options with another kind, an unknown kind, or an unknown document.
        GraphError: the graph fails, or holds a record that does not fit its record class.
    """
    known = export_kind(kind).name
    if known != "qa":
        if qa is not None and qa != QAOptions():
            raise ConfigError(
                f"--format, --validated-only, --min-score, --keep-duplicates and --system are for --kind qa, not {kind}"
            )
        report = ExportReport(kind=known)
        for record in iter_records(graph, known, documents, page_size):
            out.write(_line(record.model_dump()))
            report.written += 1
        return report
    return _export_qa(graph, out, documents, qa or QAOptions(), page_size)


def export_to(
    graph: Graph,
    target: str,
    kind: str = "qa",
    documents: Sequence[str] = (),
    qa: QAOptions | None = None,
    *,
    stdout: TextIO | None = None,
) -> ExportReport:
    """``export`` into a file (``"-"``: ``stdout``), written whole or not at all.

    The records go to a new temporary file in the target's folder, created exclusively and never through
    a link (``O_CREAT | O_EXCL | O_NOFOLLOW``), which then replaces the target. Only a regular file is ever
    replaced: a device, a FIFO, a folder or a symbolic link at the target is refused, so an export can
    neither write through a planted link nor turn ``/dev/full`` into a file.

    Raises:
        ConfigError: the target is not a regular file, its folder is missing, or writing failed (disk
            full, permission, a closed stdout), in one line naming the path.
    """
    if target == "-":
        out = stdout or sys.stdout
        try:
            report = export(graph, out, kind, documents, qa)
            out.flush()
        except OSError as e:
            raise ConfigError(f"standard output: cannot write the export ({e.strerror or e})") from e
        return report
    return write_atomically(Path(target), lambda f: export(graph, f, kind, documents, qa), hint=" (use - for stdout)")


def write_atomically(path: Path, write: Callable[[TextIO], T], errors: str = "strict", hint: str = "") -> T:
    """Call ``write`` with a new file that replaces ``path`` only once it is whole; return what it returns.

    The text goes to a temporary file in the target's folder, created exclusively and never through a link
    (``O_CREAT | O_EXCL | O_NOFOLLOW``), which then replaces the target. Only a regular file is ever
    replaced: a device, a FIFO, a folder or a symbolic link at the target is refused.

    Raises:
        ConfigError: the target is not a regular file, its folder is missing, or writing failed.
    """
    check_target(path, hint)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", errors=errors, newline="\n") as f:
            result = write(f)
        os.replace(partial, path)
    except OSError as e:  # the graph's own OSErrors arrive as GraphError, so this one is the file's
        raise ConfigError(f"{path}: cannot write it ({e.strerror or e}); check its folder and disk") from e
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return result


def check_target(path: Path, hint: str = " (use - for stdout)") -> None:
    """Refuse an output path that is not a regular file (a link, a folder, a FIFO, a device) or whose folder
    is missing: ConfigError, in one line naming the path (and ``hint``)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ConfigError(f"{path}: the folder {path.parent} does not exist") from None
        return
    except OSError as e:
        raise ConfigError(f"{path}: cannot check the output path ({e.strerror or e})") from e
    if not stat.S_ISREG(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{path}: {what}; kg-etl writes regular files only{hint}")


def _export_qa(graph: Graph, out: TextIO, documents: Sequence[str], options: QAOptions, page_size: int) -> ExportReport:
    """One read of the graph. With dedup, lines go to an unnamed temporary file while the groups form, then
    to ``out`` without the dropped positions: the disk holds the output once, memory only the groups."""
    report = ExportReport(kind="qa")
    kept = _filtered(iter_qa(graph, documents, QAOptions(validated_only=False), page_size), options, report)
    if not options.dedup:
        for record in kept:
            out.write(_line(format_qa(record, options.format, options.system)))
            report.written += 1
        return report
    groups = NearDuplicates()
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n") as spool:
        for record in kept:
            groups.add(record.question, _rank(record))
            spool.write(_line(format_qa(record, options.format, options.system)))
        dropped = groups.dropped()
        spool.seek(0)
        for pos, line in enumerate(spool):
            if pos in dropped:
                report.duplicates_removed += 1
            else:
                out.write(line)
                report.written += 1
    return report


def _filtered(records: Iterable[QARecord], options: QAOptions, report: ExportReport) -> Iterator[QARecord]:
    for record in records:
        if options.keeps(record):
            yield record
        else:
            report.filtered_out += 1

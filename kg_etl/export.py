"""Graph -> JSONL: QA datasets to train and evaluate on, and the other extractions, each with its citation.

Records stream from the graph a page of chunks at a time (keyset paging, see ``statements``), in one total
order: document path, document id, chunk index, chunk id, then the record's own key. The same graph gives the
same file, byte for byte, and memory stays flat however large the graph is.

QA export removes near-duplicate questions by default (``NearDuplicates``): the graph is read once, the lines go
to an unnamed temporary file while the groups form, then to the output without all but the best of each group.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tempfile
import unicodedata
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg_etl.errors import ConfigError, GraphError
from kg_etl.extract.facts import FACTS
from kg_etl.extract.keywords import KEYWORDS
from kg_etl.extract.qa import QA
from kg_etl.extract.summary import SUMMARY
from kg_etl.extract.taxonomy import TAXONOMY
from kg_etl.extract.validate import VALIDATE
from kg_etl.graph import statements as st
from kg_etl.graph.connection import Graph

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
    "export",
    "format_qa",
    "iter_qa",
    "iter_records",
    "qa_schema",
    "question_key",
    "question_words",
]

Kind = Literal["qa", "facts", "taxonomy", "keywords", "summaries"]
QAFormat = Literal["plain", "chat", "alpaca", "sharegpt"]
KINDS: tuple[Kind, ...] = ("qa", "facts", "taxonomy", "keywords", "summaries")
FORMATS: tuple[QAFormat, ...] = ("plain", "chat", "alpaca", "sharegpt")
DEFAULT_SYSTEM = "Answer the question briefly and accurately."
QA_SCHEMA_PATH = Path(__file__).parent / "data" / "qa_record.schema.json"

PAGE_CHUNKS = 250  # chunks per page: 250..1000 export equally fast on ArcadeDB; 100 is 2x slower
PAGE_DOCUMENTS = 100
Row = dict[str, Any]
R = TypeVar("R", bound=BaseModel)


# -- records -----------------------------------------------------------------------------------------------
# Each record class lists its own fields first and the citation last: pydantic orders fields base-last-first,
# so ``class X(_Citation, _XFields)`` dumps _XFields' fields, then _Citation's.


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Citation(_Record):
    """Where a record comes from: the PDF (its sha256 is the Document id), its pages, and the chunk."""

    doc_sha256: str
    doc_path: str
    doc_name: str
    doc_title: str | None
    page_start: int = Field(ge=1)
    page_end: int = Field(ge=1)
    chunk_id: str | None = Field(description="None only for a document summary")
    chunk_index: int | None = Field(ge=0)


class _QAFields(_Record):
    id: str
    question: str
    answer: str
    evidence: str
    verdict: Literal["valid", "invalid", "unvalidated"]
    score: float | None = Field(ge=0, le=1)
    judgement: str | None
    model_answer: str | None
    evidence_found: bool | None
    evidence_score: float | None
    answer_overlap: float | None
    model: str | None
    qa_version: str
    validate_version: str | None


class QARecord(_Citation, _QAFields):
    """One question/answer pair, its validation and its citation: ``kg_etl/data/qa_record.schema.json``."""


class _FactFields(_Record):
    id: str
    text: str
    subject: str | None
    predicate: str | None
    object: str | None
    model: str | None
    extractor_version: str


class FactRecord(_Citation, _FactFields):
    """One atomic fact (with its triple, where it has one) and its citation."""


class _TopicFields(_Record):
    topic_id: str
    topic: str
    topic_path: str
    level: int
    importance: float | None
    extractor_version: str


class TopicRecord(_Citation, _TopicFields):
    """One chunk's place in the taxonomy: a topic (its path from the broadest field) and how central it is."""


class _KeywordFields(_Record):
    keyword_id: str
    keyword: str
    relevance: float | None
    extractor_version: str


class KeywordRecord(_Citation, _KeywordFields):
    """One key term of a chunk and its relevance."""


class _SummaryFields(_Record):
    id: str
    kind: Literal["chunk", "document"]
    text: str
    model: str | None
    extractor_version: str


class SummaryRecord(_Citation, _SummaryFields):
    """A chunk's summary, or a document's (no chunk; pages 1 to the last)."""


def _cite(doc: Row, chunk: Row | None) -> Row:
    pages = {"page_start": 1, "page_end": max(1, doc["n_pages"] or 1), "chunk_id": None, "chunk_index": None}
    if chunk is not None:
        pages = {k: chunk[k] for k in ("page_start", "page_end", "chunk_id", "chunk_index")}
    document = {"doc_sha256": doc["id"], "doc_path": doc["path"], "doc_name": doc["name"], "doc_title": doc["title"]}
    return document | pages


def _qa_record(doc: Row, chunk: Row, item: Row) -> QARecord:
    # Versions are stored on each pair when written; older graphs without them get the current ones.
    item = dict(item)
    validated = item["verdict"] in ("valid", "invalid")
    qa_version = item.pop("qa_version", None) or QA.version
    validate_version = item.pop("validate_version", None) or (VALIDATE.version if validated else None)
    return QARecord(**_cite(doc, chunk), **item, qa_version=qa_version, validate_version=validate_version)


def _fact_record(doc: Row, chunk: Row, item: Row) -> FactRecord:
    return FactRecord(**_cite(doc, chunk), **item, extractor_version=FACTS.version)


def _topic_record(doc: Row, chunk: Row, item: Row) -> TopicRecord:
    return TopicRecord(
        **_cite(doc, chunk),
        topic_id=item["id"],
        topic=item["name"],
        topic_path=item["path"],
        level=item["level"],
        importance=item["importance"],
        extractor_version=TAXONOMY.version,
    )


def _keyword_record(doc: Row, chunk: Row, item: Row) -> KeywordRecord:
    return KeywordRecord(
        **_cite(doc, chunk),
        keyword_id=item["id"],
        keyword=item["name"],
        relevance=item["relevance"],
        extractor_version=KEYWORDS.version,
    )


def _summary_record(doc: Row, chunk: Row | None, item: Row) -> SummaryRecord:
    kind: Literal["chunk", "document"] = "chunk" if chunk is not None else "document"
    return SummaryRecord(**_cite(doc, chunk), **item, kind=kind, extractor_version=SUMMARY.version)


@dataclass(frozen=True)
class _KindSpec:
    """How one kind is read: the chunk-page statement, the order within a chunk, the record builder."""

    statement: st.Statement
    order: Callable[[Row], Any]
    build: Callable[[Row, Row, Row], BaseModel]


def _by_id(item: Row) -> Any:
    return item["id"]


_SPECS: dict[Kind, _KindSpec] = {
    "qa": _KindSpec(st.EXPORT_QA_CHUNKS, _by_id, _qa_record),
    "facts": _KindSpec(st.EXPORT_FACT_CHUNKS, _by_id, _fact_record),
    "taxonomy": _KindSpec(st.EXPORT_TOPIC_CHUNKS, lambda t: (t["path"], t["id"]), _topic_record),
    "keywords": _KindSpec(
        st.EXPORT_KEYWORD_CHUNKS, lambda k: (-(k["relevance"] or 0), k["name"], k["id"]), _keyword_record
    ),
    "summaries": _KindSpec(st.EXPORT_SUMMARY_CHUNKS, _by_id, _summary_record),
}


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


def _kind(kind: str) -> Kind:
    """``kind`` as a Kind, or a ConfigError that lists the kinds."""
    for known in KINDS:
        if kind == known:
            return known
    raise ConfigError(f"{kind}: unknown export kind; choose one of {', '.join(KINDS)}")


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


def _build(build: Callable[[Row, Row, Row], R], doc: Row, chunk: Row, item: Row) -> R:
    """A record from its rows; a graph holding something else is a GraphError that says where."""
    try:
        return build(doc, chunk, item)
    except ValidationError as e:
        where = f"{doc['path']} chunk {chunk['chunk_index']}"
        raise GraphError(f"{where}: a stored record does not fit the export format ({e.errors()[0]['msg']})") from e


def iter_records(
    graph: Graph, kind: str, documents: Sequence[str] = (), page_size: int = PAGE_CHUNKS
) -> Iterator[BaseModel]:
    """Every record of one kind in export order, unfiltered; ``documents`` limits it to those (id, path or name).

    Raises:
        ConfigError: an unknown kind, or a document that is not in the graph.
        GraphError: the graph fails, or holds a record that does not fit its record class.
    """
    spec = _SPECS[_kind(kind)]
    ids = _resolve(graph, documents)
    for doc in _documents(graph, ids):
        if kind == "summaries":
            for item in graph.read_rows(st.EXPORT_DOCUMENT_SUMMARIES, doc_id=doc["id"]):
                yield _summary_record(doc, None, item)
        for chunk in _chunks(graph, spec.statement, doc["id"], page_size):
            for item in sorted(chunk["items"], key=spec.order):
                yield _build(spec.build, doc, chunk, item)


# -- QA: filters, formats, near-duplicates ------------------------------------------------------------------


class QAOptions(BaseModel):
    """What a QA export keeps and how it writes each pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: QAFormat = "plain"
    validated_only: bool = Field(default=False, description="only pairs the validation pass judged valid")
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
    spec = _SPECS["qa"]
    for doc, chunk, item in _items(graph, spec.statement, spec.order, _resolve(graph, documents), page_size):
        record = _build(_qa_record, doc, chunk, item)
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


# Near-duplicate questions. Two questions are duplicates when their keys (their content words: case, punctuation,
# contractions, inflection, word order and function words ignored) are equal, or when one key holds the other
# and the smaller has at least 4/5 of the larger's words (Jaccard >= 4/5 with containment). Why: keys hold 3..10
# words; at 4/5 a question with one qualifier more ("the three stations" / "the stations", 4 of 5) is a
# duplicate, while a swapped content word never is, however long the question ("capital of France" / "capital
# of Spain", "upstream" / "downstream" stations): a swapped word is what makes two questions ask different
# things, and plain Jaccard >= 4/5 would merge those from 9 words on. Question words and negations count as
# content: "Who founded X?" and "When was X founded?" differ. Paraphrases with other words ("Which city is the
# capital" / "What is the capital") are kept: telling those apart would take embeddings.
_SIMILAR = (4, 5)  # Jaccard >= 4/5, as integers so that prefix lengths are exact
_BUCKET_CAP = 32

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_IS_CONTRACTED = _words("what who where when why how which that it there here")
_NOT_CONTRACTED = {"can": "can", "won": "will", "shan": "shall", "ain": "is"}
_CONTRACTED = {"re": "are", "ve": "have", "ll": "will", "d": "would", "m": "am"}
_QUESTION_WORDS = _words("what who whom whose where when why how which not no never nor")
_FUNCTION_WORDS = _words(
    "a an the is are was were be been being am do does did done has have had having can could will would shall "
    "should may might must of in on at to for by with from about into onto over under as than then and or but "
    "if so it its this that these those there here they them their he him his she her we us our you your i me "
    "my one ones some any such please also exactly according given called named"
)


def question_words(question: str) -> list[str]:
    """The question's words: NFKC, case-folded, contractions expanded ("what's" -> what is, "isn't" -> is not)."""
    text = unicodedata.normalize("NFKC", question).casefold().translate(_APOSTROPHES)
    words: list[str] = []
    for word in _WORD.findall(text):
        head, _, tail = word.partition("'")
        if not tail:
            words.append(head)
        elif tail == "t" and head.endswith("n"):
            words += [_NOT_CONTRACTED.get(head, head[:-1]), "not"]
        elif tail == "s":  # "what's" is "what is"; any other "'s" is a possessive
            words += [head, "is"] if head in _IS_CONTRACTED else [head]
        else:
            words += [head, _CONTRACTED.get(tail, tail)]
    return words


@functools.lru_cache(maxsize=8192)  # words repeat (Zipf): a small cache takes most of them
def _stem(word: str) -> str:
    """A light suffix stripper (not Porter): "cause", "causes", "caused", "causing" -> caus; "study", "studies"
    -> studi. It merges an unrelated pair now and then, which costs little: a key is a set of several words."""
    if word in _QUESTION_WORDS or not word.isalpha():
        return word
    for suffix in ("ing", "ed", "es", "s", "e"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3 and not (suffix == "s" and stem.endswith(("s", "u", "i"))):
            word = stem
            break
    return word[:-1] + "i" if word.endswith("y") else word


def question_key(question: str) -> tuple[str, ...]:
    """The near-duplicate key: the question's content words (function words dropped, stemmed), sorted, once each."""
    return tuple(sorted({_stem(w) for w in question_words(question) if w not in _FUNCTION_WORDS}))


@functools.lru_cache(maxsize=8192)
def _token_order(token: str) -> tuple[bool, int, str]:
    # One global order for prefix filtering. Question words go last: in most questions, they would make huge
    # buckets; crc32 (stable across processes, unlike hash()) spreads the rest.
    return token in _QUESTION_WORDS, zlib.crc32(token.encode()), token


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class NearDuplicates:
    """Groups near-duplicate questions in one streaming pass, with bounded work per question.

    ``add`` each question in export order with its rank; ``dropped()`` then gives the positions of all but the
    best of each group (highest rank, then earliest). Equal keys meet in a hash table. Similar keys meet through
    prefix filtering: with words in one global order, two sets with Jaccard >= t share a word among their first
    ``n - ceil(t n) + 1`` (Chaudhuri et al. 2006), so a question is compared only with questions that share one
    of its first 1..3 words, and only with the latest ``bucket_cap`` of those: O(1) per question. A 64-bit word
    signature and the key size reject most of those without decoding a key. Groups are the connected
    components of the duplicate pairs (union-find).

    What grows, per question: its key (~40 bytes), a rank, a signature, a size, three ints and a slot of the
    exact-key table: about 130 bytes, 13 MB per 100,000 questions. Buckets are bounded: distinct words x
    ``bucket_cap``. The records themselves are not held: ``export`` spools them to a temporary file.
    """

    def __init__(self, bucket_cap: int = _BUCKET_CAP) -> None:
        self.bucket_cap = bucket_cap
        self._exact = _FirstPositions()
        self._buckets: dict[str, array[int]] = {}
        self._keys = bytearray()
        self._key_ends = array("Q")
        self._signatures = array("Q")
        self._sizes = array("H")
        self._ranks = array("d")
        self._parent = array("i")  # positions: int32 is 2**31 questions, and half the memory of int64
        self._best = array("i")

    def __len__(self) -> int:
        return len(self._ranks)

    def add(self, question: str, rank: float) -> int:
        """Take the next question; ``rank`` orders a group's members (higher is better). Returns its position."""
        pos = len(self._ranks)
        self._ranks.append(rank)
        self._parent.append(pos)
        self._best.append(pos)
        key = question_key(question)
        exact = _hash64("\0".join(key) if key else "\1" + " ".join(question_words(question)))
        first = self._exact.setdefault(exact, pos)
        # An equal key joins its group at once and stays out of the buckets, which need only one of them.
        ordered = sorted(key, key=_token_order) if key and first == pos else []
        self._keys += " ".join(ordered).encode()
        self._key_ends.append(len(self._keys))
        signature = _signature(ordered)
        self._signatures.append(signature)
        self._sizes.append(min(len(ordered), 0xFFFF))
        if first != pos:
            self._union(first, pos)
        elif ordered:
            self._probe(pos, ordered, signature)
        return pos

    def dropped(self) -> set[int]:
        """Positions of every question that is not the best of its group."""
        return {i for i in range(len(self._ranks)) if self._best[self._find(i)] != i}

    def _probe(self, pos: int, ordered: list[str], signature: int) -> None:
        num, den = _SIMILAR
        size = len(ordered)
        prefix = size - (num * size + den - 1) // den + 1
        words: set[str] | None = None
        for token in ordered[:prefix]:
            bucket = self._buckets.setdefault(token, array("i"))
            for other in bucket:
                if not self._may_contain(signature, size, other) or self._find(other) == self._find(pos):
                    continue
                words = words or set(ordered)
                if self._similar(words, other):
                    self._union(other, pos)
            bucket.append(pos)
            if len(bucket) > self.bucket_cap:
                del bucket[0]

    def _may_contain(self, signature: int, size: int, other: int) -> bool:
        """Cheap necessary conditions: one signature covers the other, and the sizes are within 4/5."""
        theirs, their_size = self._signatures[other], self._sizes[other]
        small, large = (signature, theirs) if size <= their_size else (theirs, signature)
        num, den = _SIMILAR
        return small & ~large == 0 and den * min(size, their_size) >= num * max(size, their_size)

    def _similar(self, words: set[str], other: int) -> bool:
        start = self._key_ends[other - 1] if other else 0
        theirs = set(self._keys[start : self._key_ends[other]].decode().split())
        small, large = sorted((words, theirs), key=len)
        num, den = _SIMILAR
        return small <= large and den * len(small) >= num * len(large)

    def _find(self, pos: int) -> int:
        parent = self._parent
        while parent[pos] != pos:
            parent[pos] = parent[parent[pos]]  # path halving
            pos = parent[pos]
        return pos

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        root, child = min(ra, rb), max(ra, rb)
        self._parent[child] = root
        self._best[root] = self._better(self._best[ra], self._best[rb])

    def _better(self, a: int, b: int) -> int:
        ranks = self._ranks
        return a if (ranks[a], -a) > (ranks[b], -b) else b


class _FirstPositions:
    """64-bit hash -> first position, in two flat arrays (open addressing, load <= 2/3): 12..36 bytes an entry,
    where a dict of ints takes ~116."""

    def __init__(self) -> None:
        self._hashes = array("Q", bytes(8 * 1024))
        self._positions = array("i", [-1]) * 1024
        self._used = 0

    def setdefault(self, key: int, pos: int) -> int:
        """The position first stored under ``key``; stores ``pos`` if there is none."""
        mask = len(self._hashes) - 1
        slot = key & mask
        while (found := self._positions[slot]) != -1:
            if self._hashes[slot] == key:
                return found
            slot = (slot + 1) & mask
        self._hashes[slot], self._positions[slot] = key, pos
        self._used += 1
        if 3 * self._used > 2 * len(self._hashes):
            self._grow()
        return pos

    def _grow(self) -> None:
        hashes, positions = self._hashes, self._positions
        self._hashes = array("Q", bytes(16 * len(hashes)))
        self._positions = array("i", [-1]) * (2 * len(hashes))
        self._used = 0
        for key, pos in zip(hashes, positions, strict=True):
            if pos != -1:
                self.setdefault(key, pos)


def _signature(words: Iterable[str]) -> int:
    """One bit per word (of 64): if A is a subset of B, A's bits are a subset of B's."""
    bits = 0
    for word in words:
        bits |= 1 << (zlib.crc32(word.encode()) & 63)
    return bits


def _rank(record: QARecord) -> float:
    """Valid beats unvalidated beats invalid; then the higher score."""
    tier = {"valid": 6.0, "unvalidated": 2.0}.get(record.verdict, 0.0)
    return tier + (record.score if record.score is not None else -1.0)


# -- writing -----------------------------------------------------------------------------------------------


class ExportReport(BaseModel):
    """What an export wrote and what it left out."""

    kind: Kind
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
    known = _kind(kind)
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


def _export_qa(graph: Graph, out: TextIO, documents: Sequence[str], options: QAOptions, page_size: int) -> ExportReport:
    """One read of the graph. With dedup, lines go to an unnamed temporary file while the groups form, then
    to ``out`` without the dropped positions: the disk holds the output once, memory only the groups."""
    report = ExportReport(kind="qa")
    kept = _filtered(iter_qa(graph, documents, QAOptions(), page_size), options, report)
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

"""Every extractor kg-etl runs, in one registry: what each one asks, needs, writes and exports.

An entry declares an extractor's name; how it is made for a run (its schema, prompt and version, which the
run's options may shape: the category labels, a user's schema); what it needs (a model; other extractors'
results, as QA validation needs the QA pairs); how its results become graph rows (``graph.rows``); what it
does once per document (the categories' vote, the summary's reduction); and the export kinds that read its
results back. Settings, selection, the batch extractor, the writer, the pipeline's document step, export and
the command line's choices all iterate over this registry, so a new extractor is its own module (schema and
prompt), its Cypher in ``graph.statements``, and one entry here.

Order matters: extractors run, and their rows are written, in registry order (nodes before the links that
need them; QA before its validation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.defaults import DEFAULT_CATEGORIES, EXPORT_KINDS, EXTRACTOR_NAMES, USER_SCHEMA
from kg_etl.errors import ConfigError
from kg_etl.extract.base import Extractor
from kg_etl.extract.categories import categories_extractor
from kg_etl.extract.facts import FACTS
from kg_etl.extract.keywords import KEYWORDS
from kg_etl.extract.qa import QA
from kg_etl.extract.schema import GraphSchema, schema_extractor
from kg_etl.extract.summary import SUMMARY
from kg_etl.extract.taxonomy import TAXONOMY
from kg_etl.extract.validate import VALIDATE
from kg_etl.graph import rows as r
from kg_etl.graph import statements as st
from kg_etl.graph.user_schema import schema_rows
from kg_etl.records import Row, fact_record, keyword_record, qa_record, schema_record, summary_record, topic_record

__all__ = [
    "REGISTRY",
    "DocumentStep",
    "Entry",
    "ExportKind",
    "ExtractOptions",
    "builtin_row_builders",
    "entries_for",
    "export_kind",
    "export_kinds",
    "row_builders",
    "select_extractors",
]

# What an extractor does once per document, after its chunks: "vote" (the chunks' categories, counted in the
# graph: no model) or "reduce" (the chunk summaries merged into one by the model).
DocumentStep = Literal["vote", "reduce"]


class ExtractOptions(BaseModel):
    """What shapes the extractors of a run beyond their built-in definitions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    categories: tuple[str, ...] = Field(default=DEFAULT_CATEGORIES, min_length=1)
    schema_: GraphSchema | None = Field(default=None, alias="schema", description="the user's own schema")


@dataclass(frozen=True)
class ExportKind:
    """How ``kg-etl export --kind NAME`` reads an extractor's results: a page of chunks with their items,
    the order of items within a chunk, the record each becomes, and any items a document holds itself."""

    name: str
    statement: st.Statement
    order: Callable[[Row], Any]
    build: Callable[[Row, Row | None, Row], BaseModel]
    documents: st.Statement | None = None


@dataclass(frozen=True)
class Entry:
    """One extractor, all of it: see the module's docstring."""

    name: str
    make: Callable[[ExtractOptions], Extractor]
    rows: r.RowBuilder | None = None
    document: DocumentStep | None = None
    exports: tuple[ExportKind, ...] = ()
    needs: tuple[str, ...] = ()
    help: str = ""
    default: bool = True  # run unless --extract leaves it out; the user schema's runs when a schema is given
    # Rows that depend on the run's options (a user schema's types), instead of ``rows``.
    make_rows: Callable[[ExtractOptions], r.RowBuilder] | None = None

    def extractor(self, options: ExtractOptions) -> Extractor:
        """The extractor as this run's options make it."""
        return self.make(options)

    def row_builder(self, options: ExtractOptions) -> r.RowBuilder | None:
        """How this run's results of the extractor become graph rows, if they do."""
        return self.make_rows(options) if self.make_rows is not None else self.rows


def _fixed(extractor: Extractor) -> Callable[[ExtractOptions], Extractor]:
    return lambda _options: extractor


def _by_id(item: Row) -> Any:
    return item["id"]


def _schema(options: ExtractOptions) -> GraphSchema:
    if options.schema_ is None:
        raise ConfigError("--extract schema needs --schema FILE (a TOML schema, papers, contracts or module:NAME)")
    return options.schema_


def _by_type_and_id(item: Row) -> Any:
    return (item["type"], item["id"])


REGISTRY: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            "facts",
            _fixed(FACTS),
            r.fact_rows,
            exports=(ExportKind("facts", st.EXPORT_FACT_CHUNKS, _by_id, fact_record),),
            help="atomic statements, each with a typed subject-predicate-object triple",
        ),
        Entry(
            "taxonomy",
            _fixed(TAXONOMY),
            r.topic_rows,
            exports=(ExportKind("taxonomy", st.EXPORT_TOPIC_CHUNKS, lambda t: (t["path"], t["id"]), topic_record),),
            help="1-3 topic paths, broad to specific, with importance 1-5",
        ),
        Entry(
            "categories",
            lambda options: categories_extractor(options.categories),
            r.category_rows,
            document="vote",
            help="1-3 labels from the configured set; documents by chunk vote",
        ),
        Entry(
            "keywords",
            _fixed(KEYWORDS),
            r.keyword_rows,
            exports=(
                ExportKind(
                    "keywords",
                    st.EXPORT_KEYWORD_CHUNKS,
                    lambda k: (-(k["relevance"] or 0), k["name"], k["id"]),
                    keyword_record,
                ),
            ),
            help="up to 8 terms with a relevance in [0, 1]",
        ),
        Entry(
            "summary",
            _fixed(SUMMARY),
            r.summary_rows,
            document="reduce",
            exports=(
                ExportKind(
                    "summaries",
                    st.EXPORT_SUMMARY_CHUNKS,
                    _by_id,
                    summary_record,
                    documents=st.EXPORT_DOCUMENT_SUMMARIES,
                ),
            ),
            help="per chunk, and per document by map-reduce over the chunk summaries",
        ),
        Entry(
            "qa",
            _fixed(QA),
            r.question_rows,
            exports=(ExportKind("qa", st.EXPORT_QA_CHUNKS, _by_id, qa_record),),
            help="1-3 question / answer / evidence-quote triples",
        ),
        # Its verdicts are written with the questions (qa's rows) and exported with them.
        Entry(
            "validate",
            _fixed(VALIDATE),
            needs=("qa",),
            help="a second pass answers each question from the chunk alone",
        ),
        Entry(
            USER_SCHEMA,
            lambda options: schema_extractor(_schema(options)),
            make_rows=lambda options: schema_rows(_schema(options)),
            exports=(ExportKind("schema", st.EXPORT_SCHEMA_CHUNKS, _by_type_and_id, schema_record),),
            default=False,
            help="the node and relationship types of your own schema (--schema), and only those",
        ),
    )
}

# The command line lists the names from kg_etl.defaults without importing this module (--help stays fast).
assert tuple(n for n, e in REGISTRY.items() if e.default) == EXTRACTOR_NAMES, "defaults.EXTRACTOR_NAMES differs"
assert {k.name for e in REGISTRY.values() for k in e.exports} == set(EXPORT_KINDS), "defaults.EXPORT_KINDS differs"


def entries_for(names: Sequence[str]) -> list[Entry]:
    """The entries named, in registry order.

    Raises:
        ConfigError: no name, an unknown name, or an extractor without one it needs (validate without qa).
    """
    if not names:
        raise ConfigError(f"--extract names no extractor; choose from {','.join(REGISTRY)}")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown extractor(s) {', '.join(unknown)}; choose from {','.join(REGISTRY)}")
    chosen = [entry for name, entry in REGISTRY.items() if name in names]
    for entry in chosen:
        missing = [need for need in entry.needs if need not in names]
        if missing:
            raise ConfigError(f"--extract {entry.name} needs {', '.join(missing)} too: it works on their results")
    return chosen


def select_extractors(names: Sequence[str], options: ExtractOptions | None = None) -> list[Extractor]:
    """The extractors named, made for a run with ``options``, in registry order.

    Raises:
        ConfigError: as ``entries_for``, or options an extractor cannot take (an empty label set).
    """
    options = options or ExtractOptions()
    return [entry.extractor(options) for entry in entries_for(names)]


def builtin_row_builders() -> list[r.RowBuilder]:
    """Every built-in extractor's row builder, in registry order."""
    return row_builders(EXTRACTOR_NAMES)


def row_builders(names: Iterable[str], options: ExtractOptions | None = None) -> list[r.RowBuilder]:
    """The row builders of the extractors named, in registry order."""
    wanted, options = set(names), options or ExtractOptions()
    builders = [entry.row_builder(options) for name, entry in REGISTRY.items() if name in wanted]
    return [build for build in builders if build is not None]


def export_kinds() -> dict[str, ExportKind]:
    """Every export kind by name, in the command line's order (``defaults.EXPORT_KINDS``)."""
    kinds = {kind.name: kind for entry in REGISTRY.values() for kind in entry.exports}
    return {name: kinds[name] for name in EXPORT_KINDS}


def export_kind(name: str) -> ExportKind:
    """The export kind called ``name``.

    Raises:
        ConfigError: no extractor exports a kind of that name.
    """
    kinds = export_kinds()
    if name not in kinds:
        raise ConfigError(f"{name}: unknown export kind; choose one of {', '.join(kinds)}")
    return kinds[name]

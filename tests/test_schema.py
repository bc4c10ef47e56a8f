"""The user's own schema (``--schema``): loading, the grammar it compiles to, the graph it writes, its export.

Replies come from the real grammar (what a model may say) or, for the graph, from a scripted backend in the
real pipeline, real Bolt server; the real small models run it in ``test_real_models``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import neo4j
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field, ValidationError

from kg_etl.cli import cli
from kg_etl.errors import ConfigError
from kg_etl.extract.base import Job, OnReply, Reply
from kg_etl.extract.schema import EXAMPLES, GraphSchema, load_schema, schema_extractor
from kg_etl.graph import statements as st
from kg_etl.graph.user_schema import node_statement, relationship_statement
from kg_etl.llm.grammar import schema_grammar
from kg_etl.llm.pool import PooledBackend
from kg_etl.samples import make_pdf
from tests.conftest import GraphConn, graph_settings
from tests.test_grammar import Gbnf

TEXT = (
    "Deep Nets for Cats was written by Alice Smith and Bob Jones in 2021. The paper proposes CatNet, "
    "which uses ImageNet. CatNet reached an accuracy of 91.2 percent on ImageNet."
)


# ================================================================ loading


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_shipped_examples_load_and_compile(name: str) -> None:
    schema = load_schema(name)
    extractor = schema_extractor(schema)
    assert extractor.name == "schema" and extractor.version.startswith("1-")
    assert set(schema.labels()) <= set(extractor.task.replace(":", " ").replace(";", " ").split())
    schema_grammar(extractor.schema, TEXT)  # the grammar builds (llama.cpp parses it in test_grammar's way)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "schema.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


GOOD = """
name = "people"
[nodes.Person.properties]
name = { copy = true, max_length = 40 }
age = { type = "integer", minimum = 0, maximum = 130 }
[nodes.City]
[[relationships]]
type = "LIVES_IN"
from = "Person"
to = "City"
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[nodes.City]", "[nodes.Chunk]"), "kg-etl's own labels"),
        (("[nodes.City]", "[nodes.city]"), "CamelCase"),
        (('type = "LIVES_IN"', 'type = "RELATED"'), "UPPER_SNAKE_CASE"),
        (('to = "City"', 'to = "Town"'), "unknown node type"),
        ((", maximum = 130", ""), "needs minimum and maximum"),
        (("name = { copy = true, max_length = 40 }", 'name = { type = "integer", minimum = 0, maximum = 9 }'),
         "must be a string"),
        (('name = "people"', 'name = "People!"'), "name"),
        (("age = {", "type = {"), "snake_case"),
    ],
)  # fmt: skip
def test_a_bad_schema_is_one_line_naming_what_to_fix(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    ref = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message) as caught:
        load_schema(ref)
    assert str(caught.value).startswith(f"--schema {ref}") and "\n" not in str(caught.value)


def test_unreadable_references_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_schema(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_schema(_write(tmp_path, "nodes = ["))
    with pytest.raises(ConfigError, match="cannot import"):
        load_schema("no_such_module_here:Schema")
    with pytest.raises(ConfigError, match="neither"):
        load_schema("tests.test_schema:TEXT")


class Author(BaseModel):
    """A person who wrote a paper."""

    name: str = Field(max_length=60, description="full name")
    field: Literal["biology", "physics", "other"] | None = None


class Paper(BaseModel):
    """A research paper."""

    title: str = Field(max_length=100)
    year: int | None = Field(default=None, ge=1900, le=2100)


class Library(BaseModel):
    """Papers and who wrote them."""

    authors: list[Author]
    papers: list[Paper]
    relationships: ClassVar[list[tuple[str, str, str]]] = [("Author", "WROTE", "Paper")]


PEOPLE = GraphSchema.model_validate(
    {
        "name": "people",
        "nodes": {"Person": {}, "City": {}},
        "relationships": [{"type": "IN", "from": "Person", "to": "City"}],
    }
)


def test_a_schema_from_python_a_graph_schema_or_a_pydantic_template() -> None:
    assert load_schema("tests.test_schema:PEOPLE") == PEOPLE
    schema = load_schema("tests.test_schema:Library")
    assert schema.name == "library" and schema.labels() == ["Author", "Paper"]
    assert schema.nodes["Paper"].key == "title" and schema.nodes["Paper"].properties["year"].maximum == 2100
    assert schema.nodes["Author"].properties["field"].values == ("biology", "physics", "other")
    assert [(r.source, r.type, r.target) for r in schema.relationships] == [(("Author",), "WROTE", ("Paper",))]


# ================================================================ what a reply may say


@pytest.fixture(scope="module")
def papers() -> GraphSchema:
    return load_schema("papers")


def _reply(nodes: list[dict[str, Any]], relationships: Sequence[dict[str, Any]] = ()) -> str:
    return json.dumps({"nodes": nodes, "relationships": list(relationships)}, separators=(",", ":"))


def test_the_grammar_admits_only_declared_types_and_names_from_the_text(papers: GraphSchema) -> None:
    extractor = schema_extractor(papers)
    regex = Gbnf(schema_grammar(extractor.schema, TEXT)).regex()
    author = {"type": "Author", "name": "Alice Smith", "affiliation": None}
    paper = {"type": "Paper", "title": "Deep Nets for Cats", "year": 2021}
    wrote = {"type": "WROTE", "source": "Alice Smith", "target": "Deep Nets for Cats"}
    assert regex.fullmatch(_reply([author, paper], [wrote]))
    for bad in (
        _reply([{**author, "type": "Person"}]),  # an undeclared node type
        _reply([{**author, "name": "Carol White"}]),  # a name the text does not hold
        _reply([author, paper], [{**wrote, "type": "CITES"}]),  # an undeclared relationship type
        _reply([{**paper, "year": 1850}]),  # out of the declared bounds
        _reply([{**author, "email": "a@b.c"}]),  # an undeclared property
    ):
        assert not regex.fullmatch(bad), bad


def test_a_relationship_must_join_two_nodes_of_its_reply_of_allowed_types(papers: GraphSchema) -> None:
    model = schema_extractor(papers).schema
    author = {"type": "Author", "name": "Alice Smith", "affiliation": None}
    paper = {"type": "Paper", "title": "Deep Nets for Cats", "year": None}
    kept = {"type": "WROTE", "source": "alice  smith", "target": "Deep Nets for Cats"}  # case and spacing aside
    dangling = {"type": "WROTE", "source": "Bob Jones", "target": "Deep Nets for Cats"}  # not a node of the reply
    reversed_ = {"type": "WROTE", "source": "Deep Nets for Cats", "target": "Alice Smith"}  # types not allowed
    reply = model.model_validate_json(_reply([author, paper], [kept, dangling, reversed_]))
    assert [r.source for r in reply.relationships] == ["alice  smith"]  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        model.model_validate_json(_reply([{**author, "name": ""}]))


def test_statements_quote_only_declared_names(papers: GraphSchema) -> None:
    assert "MERGE (n:SchemaNode:`Paper` {id: row.id})" in node_statement(papers, "Paper").text
    assert "[r:`WROTE` {chunk_id: row.chunk_id}]" in relationship_statement(papers, "WROTE").text
    for bad in ("Chunk", "Paper` {id: 1}) DETACH DELETE n //", "Person"):
        with pytest.raises(Exception, match="not declared"):
            node_statement(papers, bad)
    with pytest.raises(Exception, match="not declared"):
        relationship_statement(papers, "RELATED")


# ================================================================ the graph


_SCRIPT = {
    "Deep Nets": _reply(
        [
            {"type": "Paper", "title": "Deep Nets for Cats", "year": 2021},
            {"type": "Author", "name": "Alice Smith", "affiliation": None},
            {"type": "Author", "name": "Bob Jones", "affiliation": None},
            {"type": "Method", "name": "CatNet"},
        ],
        [
            {"type": "WROTE", "source": "Alice Smith", "target": "Deep Nets for Cats"},
            {"type": "WROTE", "source": "Bob Jones", "target": "Deep Nets for Cats"},
            {"type": "PROPOSES", "source": "Deep Nets for Cats", "target": "CatNet"},
            {"type": "WROTE", "source": "Carol", "target": "Deep Nets for Cats"},  # dropped: no such node
        ],
    ),
    "CatNet": _reply(
        [
            {"type": "Method", "name": "catnet"},  # the same method, as another chunk names it
            {"type": "Dataset", "name": "ImageNet"},
            {"type": "Result", "metric": "accuracy", "value": "91.2 percent"},
        ],
        [
            {"type": "USES", "source": "CatNet", "target": "ImageNet"},
            {"type": "ON", "source": "accuracy", "target": "ImageNet"},
        ],
    ),
}


def _scripted(self: PooledBackend, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
    replies = []
    for i, job in enumerate(jobs):
        prompt = "\n".join(str(m.content) for m in job.messages)
        text = next(reply for key, reply in _SCRIPT.items() if key in prompt)
        replies.append(Reply(text=text, prompt_tokens=10, completion_tokens=10))
        if on_reply is not None:
            on_reply(i, replies[-1])
    return replies


def _ingest(folder: Path, model: Path, *extra: str) -> Any:
    args = ["ingest", str(folder), "--model", str(model), "--extract", "schema", "--schema", "papers", "--quiet"]
    return CliRunner().invoke(cli, [*args, "--chunk-tokens", "120", "--overlap-tokens", "0", *extra])


def _labels_and_types(graph: neo4j.Driver) -> tuple[dict[str, int], dict[str, int]]:
    labels = {r["label"]: r["count"] for r in graph.execute_query(st.COUNT_LABELS.text).records}
    types = {r["type"]: r["count"] for r in graph.execute_query(st.COUNT_RELATIONSHIPS.text).records}
    return labels, types


@pytest.fixture
def paper_graph(
    graph_env: GraphConn, graph: neo4j.Driver, tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A two-chunk paper ingested with the papers schema, from scripted replies."""
    monkeypatch.setattr(PooledBackend, "run", _scripted)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    make_pdf(folder / "cats.pdf", [[TEXT.split(". ")[0] + "."], [". ".join(TEXT.split(". ")[1:])]], title="Cats")
    result = _ingest(folder, tiny_model_path)
    assert result.exit_code == 0, result.output
    return folder


def test_nodes_carry_their_declared_type_and_cite_their_chunks(paper_graph: Path, graph: neo4j.Driver) -> None:
    labels, types = _labels_and_types(graph)
    assert {k: labels[k] for k in ("SchemaNode", "Paper", "Author", "Method", "Dataset", "Result")} == {
        "SchemaNode": 6, "Paper": 1, "Author": 2, "Method": 1, "Dataset": 1, "Result": 1,
    }  # fmt: skip
    assert {k: types.get(k, 0) for k in ("WROTE", "PROPOSES", "USES", "ON")} == {
        "WROTE": 2, "PROPOSES": 1, "USES": 1, "ON": 1,
    }  # fmt: skip
    assert set(labels) <= {*st.LABELS, "Paper", "Author", "Method", "Dataset", "Result"}
    cited = graph.execute_query(
        "MATCH (n:SchemaNode {name: 'CatNet'})-[:MENTIONED_IN]->(c:Chunk) RETURN count(c) AS chunks, n.type AS type"
    ).records[0]
    assert (cited["chunks"], cited["type"]) == (2, "Method")  # one node, named in both chunks
    year = graph.execute_query("MATCH (p:Paper) RETURN p.year AS year, p.title AS title").records[0]
    assert (year["year"], year["title"]) == (2021, "Deep Nets for Cats")


def test_reingest_changes_nothing_and_removal_leaves_no_orphan(
    paper_graph: Path, graph: neo4j.Driver, tiny_model_path: Path
) -> None:
    before = _labels_and_types(graph)
    again = _ingest(paper_graph, tiny_model_path, "--report", str(paper_graph / "again.json"))
    assert again.exit_code == 0, again.output
    assert json.loads((paper_graph / "again.json").read_text())["llm_calls"] == 0
    assert _labels_and_types(graph) == before
    removed = CliRunner().invoke(cli, ["remove", "cats.pdf"])
    assert removed.exit_code == 0, removed.output
    labels, types = _labels_and_types(graph)
    assert not set(labels) & {"SchemaNode", "Paper", "Author"} and not set(types) & {"WROTE", "USES"}


def test_export_kind_schema_cites_each_node_and_its_relationships(paper_graph: Path, tmp_path: Path) -> None:
    out = tmp_path / "schema.jsonl"
    result = CliRunner().invoke(cli, ["export", str(out), "--kind", "schema"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 7  # six nodes, CatNet once per chunk that names it
    paper = next(r for r in records if r["type"] == "Paper")
    assert paper["doc_name"] == "cats.pdf" and paper["page_start"] == 1 and paper["properties"]["year"] == 2021
    alice = next(r for r in records if r["name"] == "Alice Smith")
    assert alice["relationships"] == [
        {"type": "WROTE", "target_id": paper["id"], "target": "Deep Nets for Cats", "target_type": "Paper"}
    ]


def test_schema_without_a_schema_file_is_a_usage_error(tiny_model_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--model", str(tiny_model_path), "--extract", "schema"])
    assert result.exit_code == 2 and "needs --schema" in result.output
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--model", str(tiny_model_path), "--schema", "nope"])
    assert result.exit_code == 2 and "--schema nope" in result.output and "Traceback" not in result.output


def test_the_view_and_the_graph_exports_carry_the_schemas_types(
    paper_graph: Path, graph_server: GraphConn, tmp_path: Path
) -> None:
    from kg_etl.graph.connection import Graph
    from kg_etl.view import Selection, select_view

    with Graph(graph_settings(graph_server)) as kg:
        view = select_view(kg, Selection())
    names = {n.name for n in view.nodes if n.kind == "SchemaNode"}
    assert {"Deep Nets for Cats", "Alice Smith", "CatNet", "ImageNet"} <= names
    assert {e.type for e in view.edges} >= {"WROTE", "PROPOSES", "USES", "MENTIONED_IN"}
    catnet = next(n for n in view.nodes if n.name == "CatNet")
    assert len(view.citations[catnet.key]) == 2  # named in both chunks, each cited

    for fmt, expected in (("graphml", (":SchemaNode:Paper", ">WROTE<")), ("cypher", ("(n:`SchemaNode`:`Paper`)",
                          "[r:`WROTE`]"))):  # fmt: skip
        out = tmp_path / f"graph.{fmt}"
        result = CliRunner().invoke(cli, ["export", str(out), "--format", fmt])
        assert result.exit_code == 0, result.output
        text = out.read_text(encoding="utf-8")
        assert all(part in text for part in expected), (fmt, expected)

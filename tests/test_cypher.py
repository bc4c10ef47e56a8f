"""Every Cypher statement kg-etl ships or sends passes Neo4j's own Cypher front-end and runs on the server."""

from __future__ import annotations

from pathlib import Path

import neo4j
import pytest

from kg_etl.extract.schema import EXAMPLES, load_schema
from kg_etl.graph import statements as st
from kg_etl.graph.connection import split_cypher
from kg_etl.graph.user_schema import statements_for
from tests.conftest import SENT_CYPHER
from tests.cypherlint import CypherStatement, lint_statements

CYPHER_DIR = Path(__file__).resolve().parents[1] / "cypher"
# The graph model: a statement that names anything else is a typo (the checker warns on unknown names).
# With propertyKeys, a misspelt property (d.titel) is an error too.
SCHEMA = {
    "labels": list(st.LABELS),
    "relationshipTypes": list(st.RELATIONSHIP_TYPES),
    "propertyKeys": sorted({key for keys in st.PROPERTY_KEYS.values() for key in keys}),
}


def _file_statements() -> list[CypherStatement]:
    found = []
    for path in sorted(CYPHER_DIR.rglob("*.cypher")):
        for i, text in enumerate(split_cypher(path.read_text(encoding="utf-8"))):
            found.append(CypherStatement(f"{path.relative_to(CYPHER_DIR)}#{i + 1}", text, _example_params(text)))
    return found


def _example_params(text: str) -> dict[str, object]:
    # Browser queries declare their parameters with `:param` in their comments; give each one a value.
    import re

    return {name: "x" for name in re.findall(r"\$(\w+)", text)}


def test_registry_statements_pass_the_cypher_front_end() -> None:
    statements = [CypherStatement(s.name, s.text, s.example) for s in st.ALL.values()]
    assert lint_statements(statements, SCHEMA) == {s.name: [] for s in statements}


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_user_schemas_statements_pass_the_cypher_front_end(name: str) -> None:
    """Built per declared type at run time (Cypher takes no label as a parameter): linted for each example."""
    schema = load_schema(name)
    properties = {prop for node in schema.nodes.values() for prop in node.properties}
    extended = {
        "labels": [*SCHEMA["labels"], *schema.labels()],
        "relationshipTypes": [*SCHEMA["relationshipTypes"], *schema.relationship_types()],
        "propertyKeys": sorted({*SCHEMA["propertyKeys"], *properties, "chunk_id", "doc_id", "schema"}),
    }
    statements = [CypherStatement(s.name, s.text, s.example) for s in statements_for(schema)]
    assert lint_statements(statements, extended) == {s.name: [] for s in statements}


def test_cypher_files_pass_the_cypher_front_end() -> None:
    statements = _file_statements()
    assert statements, "cypher/ holds no statements"
    assert lint_statements(statements, SCHEMA) == {s.name: [] for s in statements}


def test_registry_statements_run_on_the_server(graph: neo4j.Driver) -> None:
    for statement in st.ALL.values():
        with graph.session() as session:
            session.run(statement.text, statement.example).consume()


@pytest.mark.order_last
def test_everything_the_code_sent_is_a_checked_statement() -> None:
    """Runs last (see conftest): by then the other tests have driven the code through every path."""
    known = {s.text for s in st.ALL.values()} | {s.query for s in _file_statements()}
    known |= {s.text for name in EXAMPLES for s in statements_for(load_schema(name))}
    unlisted = sorted(set(SENT_CYPHER) - known)
    assert not unlisted, f"queries sent by kg_etl that are not in statements.ALL or cypher/: {unlisted}"

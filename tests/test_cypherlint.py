"""The Cypher checker: Neo4j's own front-end must catch what Neo4j 5 rejects and pass what it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cypherlint import CypherLintError, CypherStatement, lint_diagnostics, lint_statements, split_cypher_file

MERGE_ROWS = "UNWIND $rows AS row MERGE (d:Document {id: row.id}) SET d += row.props"
ROWS = {"rows": [{"id": "d1", "props": {"title": "A"}}]}
ROW_IDS = {"rows": [{"doc_id": "d1"}]}
SCHEMA = {"labels": ["Document", "Chunk"], "relationshipTypes": ["HAS_CHUNK"], "propertyKeys": ["id", "title"]}

CASES = [
    CypherStatement("valid_merge", MERGE_ROWS, ROWS),
    CypherStatement("syntax", "MATCH (n) RETRUN n"),
    CypherStatement("undefined_variable", "MATCH (n) RETURN m"),
    CypherStatement("undeclared_parameter", "MATCH (d:Document {id: $id}) RETURN d"),
    CypherStatement("declared_null_parameter", "MATCH (d:Document {id: $id}) RETURN d", {"id": None}),
    CypherStatement("old_call_subquery", "UNWIND $rows AS row CALL { WITH row MERGE (:Document {id: row.id}) }", ROWS),
    CypherStatement("second_line", "MATCH (n)\nRETURN m"),
]
SCHEMA_CASES = [
    CypherStatement("valid_merge", MERGE_ROWS, ROWS),
    CypherStatement("valid_read", "MATCH (d:Document)-[:HAS_CHUNK]->(c:Chunk) RETURN d.title, c.id"),
    CypherStatement("new_label_written", "UNWIND $rows AS row MERGE (:Entity {name: row.id})", ROWS),
    CypherStatement("misspelt_label", "MATCH (d:Documnet) RETURN d"),
    CypherStatement("misspelt_type", "MATCH (:Document)-[:HAS_CHUNKS]->(c) RETURN c"),
    CypherStatement("misspelt_property", "MATCH (d:Document) RETURN d.titel"),
    # The checker reads `row.doc_id` in a pattern map as a property of `d`; the lint script then
    # accepts the keys of the example parameters, and only those.
    CypherStatement("row_key_in_pattern", "UNWIND $rows AS row MATCH (d:Document {id: row.doc_id}) RETURN d", ROW_IDS),
    CypherStatement("misspelt_row_key", "UNWIND $rows AS row MATCH (d:Document {id: row.doc_idd}) RETURN d", ROW_IDS),
]


@pytest.fixture(scope="module")
def diagnostics() -> dict[str, list[dict[str, Any]]]:
    return lint_diagnostics(CASES)  # one node process for all cases: start-up is most of the cost


@pytest.fixture(scope="module")
def linted(diagnostics: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {name: [d["message"] for d in found] for name, found in diagnostics.items()}


@pytest.fixture(scope="module")
def linted_with_schema() -> dict[str, list[str]]:
    return lint_statements(SCHEMA_CASES, SCHEMA)


def test_valid_parameterised_merge_has_no_diagnostics(linted: dict[str, list[str]]) -> None:
    assert linted["valid_merge"] == []


def test_syntax_error_is_caught(linted: dict[str, list[str]]) -> None:
    assert any("Invalid input 'RETRUN'" in m for m in linted["syntax"]), linted["syntax"]


def test_undefined_variable_is_caught(linted: dict[str, list[str]]) -> None:
    assert linted["undefined_variable"] == ["Variable `m` not defined"]


def test_undeclared_parameter_is_caught(linted: dict[str, list[str]]) -> None:
    assert linted["undeclared_parameter"] == ["Parameter $id is not defined."]
    assert linted["declared_null_parameter"] == []


def test_deprecations_count_as_diagnostics(linted: dict[str, list[str]]) -> None:
    assert any("deprecated" in m for m in linted["old_call_subquery"]), linted["old_call_subquery"]


def test_schema_passes_valid_statements(linted_with_schema: dict[str, list[str]]) -> None:
    valid = ("valid_merge", "valid_read", "new_label_written", "row_key_in_pattern")
    assert {name: linted_with_schema[name] for name in valid} == {name: [] for name in valid}


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("misspelt_label", "Documnet"),
        ("misspelt_type", "HAS_CHUNKS"),
        ("misspelt_property", "titel"),
        ("misspelt_row_key", "doc_idd"),
    ],
)
def test_schema_catches_misspelt_names(linted_with_schema: dict[str, list[str]], name: str, word: str) -> None:
    [message] = linted_with_schema[name]
    assert message.startswith(word) or f" {word} " in message


def test_diagnostics_carry_severity_and_range(diagnostics: dict[str, list[dict[str, Any]]]) -> None:
    [diagnostic] = diagnostics["second_line"]
    assert diagnostic["severity"] == "Error"
    assert diagnostic["range"]["start"] == {"line": 1, "character": 7}


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        lint_statements([CypherStatement("a", "RETURN 1"), CypherStatement("a", "RETURN 2")])


def test_missing_node_modules_says_npm_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cypherlint

    monkeypatch.setattr(cypherlint, "PACKAGE_DIR", tmp_path / "absent")
    with pytest.raises(CypherLintError, match="npm ci"):
        lint_statements([CypherStatement("a", "RETURN 1")])


def test_split_cypher_file(tmp_path: Path) -> None:
    path = tmp_path / "q.cypher"
    path.write_text(
        "// header; with a semicolon\n"
        "CREATE CONSTRAINT a IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE;\n"
        "MATCH (d:Document {title: 'semi;colon \\' still in'}) RETURN d.`odd;name` AS x; // trailing; note\n"
        'RETURN "a;b" AS s /* block; comment */\n'
        ";\n  \n",
        encoding="utf-8",
    )
    assert split_cypher_file(path) == [
        "CREATE CONSTRAINT a IF NOT EXISTS FOR (d:Document) REQUIRE d.id IS UNIQUE",
        "MATCH (d:Document {title: 'semi;colon \\' still in'}) RETURN d.`odd;name` AS x",
        'RETURN "a;b" AS s',
    ]

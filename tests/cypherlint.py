"""Neo4j's own Cypher front-end from Python: lint statements through ``tests/cypher_lint.mjs``.

The checker is the npm package ``@neo4j-cypher/language-support`` (Neo4j's parser and semantic
analysis), pinned in ``package.json``; ``npm ci`` at the repository root installs it. Every diagnostic
counts, warnings included, so a valid statement must come back with none: declare its parameters
(example values; ``None`` is fine) and, to catch misspelt labels, types and property keys, pass the
schema (``labels`` and ``relationshipTypes`` together, ``propertyKeys``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kg_etl.graph.connection import split_cypher

__all__ = [
    "CypherLintError",
    "CypherStatement",
    "lint_diagnostics",
    "lint_statements",
    "split_cypher",
    "split_cypher_file",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_SCRIPT = REPO_ROOT / "tests" / "cypher_lint.mjs"
PACKAGE_DIR = REPO_ROOT / "node_modules" / "@neo4j-cypher" / "language-support"


class CypherLintError(RuntimeError):
    """Raised when the checker cannot run (no node, no node_modules) or fails."""


@dataclass(frozen=True)
class CypherStatement:
    """A named statement and example values for every ``$parameter`` it uses."""

    name: str
    query: str
    parameters: dict[str, Any] = field(default_factory=dict)


def lint_statements(
    statements: Sequence[CypherStatement], schema: dict[str, Any] | None = None
) -> dict[str, list[str]]:
    """Lint all statements in one node process; returns name -> diagnostic messages ([] = valid).

    Args:
        schema: optional ``labels``, ``relationshipTypes``, ``propertyKeys`` lists and shared
            ``parameters``; see the module docstring for what each one turns on.
    """
    results = lint_diagnostics(statements, schema)
    return {name: [d["message"] for d in diagnostics] for name, diagnostics in results.items()}


def lint_diagnostics(
    statements: Sequence[CypherStatement], schema: dict[str, Any] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Like ``lint_statements``, with whole diagnostics (message, severity, range, offsets)."""
    names = [s.name for s in statements]
    if len(set(names)) != len(names):
        raise ValueError(f"statement names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}")
    payload = {"schema": schema or {}, "statements": [asdict(s) for s in statements]}
    output = _run_node(json.dumps(payload, default=str))
    return {result["name"]: result["diagnostics"] for result in json.loads(output)}


def _run_node(stdin: str) -> str:
    node = shutil.which("node")
    if node is None:
        raise CypherLintError("node is not on PATH: install Node.js 20 or newer to lint Cypher")
    if not PACKAGE_DIR.is_dir():
        raise CypherLintError(f"{PACKAGE_DIR} is missing: run `npm ci` in {REPO_ROOT}")
    proc = subprocess.run(
        [node, str(LINT_SCRIPT)], input=stdin, capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    if proc.returncode != 0:
        raise CypherLintError(f"{LINT_SCRIPT.name} exited with {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def split_cypher_file(path: Path | str) -> list[str]:
    """The statements of a ``.cypher`` file; see ``kg_etl.graph.connection.split_cypher``."""
    return split_cypher(Path(path).read_text(encoding="utf-8"))

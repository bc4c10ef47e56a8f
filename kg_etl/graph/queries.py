"""The Neo4j Browser queries shipped in cypher/queries/, and query parameters typed as Browser types them.

Each query file opens with comments: what it answers, then ``:param name => value`` lines with an example
for every parameter it takes (the Browser's own syntax, so a user can paste them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kg_etl.errors import ConfigError
from kg_etl.graph.connection import CYPHER_DIR

__all__ = ["BrowserQuery", "installed_queries", "load_query", "parse_param"]

_PARAM_LINE = re.compile(r"^//\s*:param\s+(\w+)\s*=>\s*(.+?)\s*$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")


@dataclass(frozen=True)
class BrowserQuery:
    """One query file: its name, text, one-line summary, and its parameters with their example values."""

    name: str
    text: str
    summary: str
    parameters: dict[str, str]


def installed_queries() -> list[BrowserQuery]:
    """Every query in the package's cypher/queries/, by name."""
    folder = CYPHER_DIR / "queries"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".cypher")), key=lambda f: f.name)
    return [_parse(f.name.removesuffix(".cypher"), f.read_text(encoding="utf-8")) for f in files]


def load_query(name_or_path: str) -> BrowserQuery:
    """A query file by path, or an installed query by name (``entity_facts``, ``entity_facts.cypher``).

    Raises:
        ConfigError: neither a readable file nor an installed query.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        try:
            return _parse(path.stem, path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the query ({e})") from e
    name = name_or_path.removesuffix(".cypher")
    for query in installed_queries():
        if query.name == name:
            return query
    known = ", ".join(q.name for q in installed_queries())
    raise ConfigError(f"{name_or_path}: no such file, and no installed query of that name; installed: {known}")


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value`` with the value typed as Neo4j Browser's ``:param`` types it.

    Numbers, true/false/null, [lists] and {maps} (JSON) and 'single-' or "double-quoted" strings keep
    their type; anything else is the string as written (``entity=World Health Organization``).

    Raises:
        ConfigError: not ``name=value``, or the name is not a parameter name.
    """
    name, sep, raw = text.partition("=")
    name, raw = name.strip().lstrip("$"), raw.strip()
    if not sep or not _NAME.match(name):
        raise ConfigError(f"--param {text!r}: expected NAME=VALUE, e.g. --param entity='World Health Organization'")
    return name, _value(raw)


def _value(raw: str) -> Any:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("\\'", "'")
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _parse(name: str, text: str) -> BrowserQuery:
    comments = [line.strip() for line in text.splitlines() if line.strip().startswith("//")]
    parameters = {m.group(1): m.group(2) for line in comments if (m := _PARAM_LINE.match(line))}
    summary = comments[0].lstrip("/ ").strip() if comments else ""
    return BrowserQuery(name=name, text=text, summary=summary, parameters=parameters)

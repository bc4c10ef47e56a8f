"""A connection to the graph: the official neo4j driver, one database, errors mapped to GraphError.

Two servers speak to it: Neo4j 5, and ArcadeDB's Bolt plugin (the local server). Two differences matter here:

- Telling them apart. ArcadeDB answers ``CALL dbms.components()`` exactly like Neo4j ("Neo4j Kernel",
  5.26.0, community), so that call cannot discriminate. The Bolt agent string can: Neo4j sends
  ``Neo4j/<version>`` and nothing else (``Neo4j/5.26.0``, ``Neo4j/5.27-aura``), while compatible servers
  append who they are (``Neo4j/5.26.0 compatible (ArcadeDB 26.10.2)``). See ``Graph.is_neo4j``.
- Read transactions. Neo4j refuses a write in a read transaction; ArcadeDB runs it, and commits schema
  commands (CREATE INDEX ...) even when the transaction is rolled back. So ``Graph.read_query`` refuses
  write clauses before sending anything and checks the server's own summary afterwards; see there.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import neo4j
from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from kg_etl.errors import GraphError
from kg_etl.graph import statements as st
from kg_etl.graph.statements import Statement

__all__ = ["CYPHER_DIR", "Graph", "GraphSettings", "split_cypher", "write_clause"]

T = TypeVar("T")
# The top-level cypher/ folder, as installed inside the package (kg_etl/cypher links to it in a checkout).
CYPHER_DIR = files("kg_etl") / "cypher"
SCHEMA_FILE = CYPHER_DIR / "schema.cypher"
# Full-text indexes: Neo4j only (ArcadeDB rejects CREATE FULLTEXT INDEX).
NEO4J_SCHEMA_FILE = CYPHER_DIR / "schema-neo4j.cypher"
# Neo4j's own agent string is "Neo4j/" + a version with no spaces; compatible servers add a description.
_NEO4J_AGENT = re.compile(r"Neo4j/\d[\w.+-]*")


class GraphSettings(BaseModel):
    """Where the graph is; the password is a SecretStr so it never shows in reprs or logs.

    Credentials written into the URI (``bolt://alice:secret@host:7687``) are taken out of it here, into
    ``username`` and ``password``: the URI is printed in messages, and must never carry a password.
    """

    model_config = ConfigDict(frozen=True)

    uri: str
    username: str
    password: SecretStr
    database: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_the_uri(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("uri"), str):
            return data
        found = _USERINFO.match(data["uri"])
        if found is None:
            return data
        cleaned = dict(data, uri=found["scheme"] + found["rest"])
        if found["user"]:
            cleaned["username"] = unquote(found["user"])
        if found["password"]:
            cleaned["password"] = SecretStr(unquote(found["password"]))
        return cleaned


# scheme://user:password@rest, matched without parsing the rest: a malformed URI loses its password too.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][\w+.-]*://)(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@(?P<rest>.*)$")


class Graph:
    """A driver bound to one database. Use as a context manager, or call ``close()``."""

    def __init__(self, settings: GraphSettings) -> None:
        """Raises: GraphError: the URI is not one the driver takes (the message never shows a password)."""
        self.settings = settings
        try:
            _check_uri(settings.uri)
            self._driver = neo4j.GraphDatabase.driver(
                settings.uri,
                auth=(settings.username, settings.password.get_secret_value()),
                connection_timeout=10.0,
                max_transaction_retry_time=15.0,
            )
        except (ValueError, TypeError, DriverError) as e:
            reason = str(e.args[0]) if e.args else type(e).__name__
            raise GraphError(
                f"{settings.uri}: not a graph URI ({reason}); use e.g. bolt://localhost:7687 or "
                "neo4j://host:7687 in NEO4J_URI / --neo4j-uri"
            ) from None

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._driver.close()

    def wait_ready(self, timeout_s: float = 30.0, first_delay: float = 0.25) -> None:
        """Check the server answers a query, retrying with backoff while it is still starting.

        Raises:
            GraphError: wrong credentials (at once), or still unreachable after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        delay = first_delay
        while True:
            try:
                self._ping()
                return
            except AuthError as e:
                raise GraphError(
                    f"{self.settings.uri}: authentication failed for user {self.settings.username!r}; "
                    "check NEO4J_USERNAME / NEO4J_PASSWORD"
                ) from e
            except GraphError as e:
                if time.monotonic() + delay > deadline:
                    raise GraphError(
                        f"{e} (gave up after {timeout_s:.0f} s; raise --connect-timeout to wait longer)"
                    ) from e
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _ping(self) -> None:
        # An auto-commit query: a managed transaction would itself retry an unreachable server for up to
        # max_transaction_retry_time, and the --connect-timeout budget is this loop's to spend.
        with self._session() as session:
            session.run(st.PING.text).consume()

    @contextmanager
    def _session(self, access_mode: str = neo4j.WRITE_ACCESS) -> Iterator[neo4j.Session]:
        try:
            with self._driver.session(database=self.settings.database, default_access_mode=access_mode) as session:
                yield session
        except AuthError:
            raise
        except (ServiceUnavailable, DriverError, OSError) as e:
            raise GraphError(
                f"{self.settings.uri}: graph database unreachable ({_one_line(e)}); "
                "is it running? `kg-etl graph status` shows the local one"
            ) from e
        except Neo4jError as e:
            raise GraphError(f"{self.settings.uri}: the database refused a statement: {_one_line(e)}") from e

    def write(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        """Run ``work`` in one write transaction: all of it commits, or none of it."""
        with self._session() as session:
            return session.execute_write(work)

    def run(self, statement: Statement, **params: Any) -> None:
        """One statement in its own write transaction."""
        self.write(lambda tx: tx.run(statement.text, params).consume())

    def read_rows(self, statement: Statement, **params: Any) -> list[dict[str, Any]]:
        """All rows of a read statement, as dicts."""
        with self._session() as session:
            return session.execute_read(lambda tx: [r.data() for r in tx.run(statement.text, params)])

    def read_query(self, text: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A user's own query (``kg-etl query``), which must not change the graph.

        Three guards, because ArcadeDB runs writes inside read transactions (and commits schema commands even
        when the transaction rolls back): a query with a write clause is refused before it is sent; the rest
        runs in a read-mode session, in a transaction that is always rolled back (a read has nothing to
        commit); and a query the server itself reports as anything but a read (``query_type``, e.g. a
        procedure that writes) raises instead of returning rows.

        Raises:
            GraphError: the query has a write clause, the server reports a write, or it refused the query.
        """
        clause = write_clause(text)
        if clause is not None:
            raise GraphError(
                f"kg-etl query runs read-only queries, and this one has a {clause} clause; "
                "change the graph with cypher-shell or Neo4j Browser instead"
            )
        with (
            self._session(access_mode=neo4j.READ_ACCESS) as session,
            session.begin_transaction() as tx,
        ):
            # tx.run is called in this function's own frame: the test suite tells users' queries from the
            # project's own statements by the name of the function that sends them.
            result = tx.run(text, params or {})
            rows = [record.data() for record in result]
            summary = result.consume()
            tx.rollback()
        if summary.query_type not in (None, "r"):
            raise GraphError(
                f"kg-etl query runs read-only queries, and the server reports this one as a write "
                f"(query type {summary.query_type!r}); it was rolled back"
            )
        return rows

    def server_agent(self) -> str:
        """The server's Bolt agent string, e.g. ``Neo4j/5.26.0``."""
        with self._session():
            return str(self._driver.get_server_info().agent)

    def is_neo4j(self) -> bool:
        """True when the server is Neo4j itself, not a Bolt-compatible stand-in such as ArcadeDB.

        Judged by the agent string (see the module docstring): ``dbms.components()`` cannot tell them apart.
        """
        return _NEO4J_AGENT.fullmatch(self.server_agent()) is not None

    def apply_schema(self, path: Traversable = SCHEMA_FILE, neo4j_path: Traversable | None = NEO4J_SCHEMA_FILE) -> int:
        """Run every statement of ``path`` and, on Neo4j only, of ``neo4j_path`` (idempotent); returns how many ran."""
        statements = split_cypher(path.read_text(encoding="utf-8"))
        if neo4j_path is not None and self.is_neo4j():
            statements += split_cypher(neo4j_path.read_text(encoding="utf-8"))
        with self._session() as session:
            for text in statements:
                session.run(text).consume()
        return len(statements)


# Clauses that change data or schema: CREATE, MERGE, [DETACH] DELETE, SET, REMOVE, FOREACH, LOAD CSV,
# DROP/ALTER/RENAME (schema, databases, users), GRANT/DENY/REVOKE (privileges), TERMINATE (transactions).
_WRITE_WORDS = frozenset(
    ("create", "merge", "delete", "detach", "set", "remove", "foreach", "load", "drop", "alter", "rename", "grant",
     "deny", "revoke", "terminate")
)  # fmt: skip
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def write_clause(text: str) -> str | None:
    """The first write clause keyword of a Cypher query (upper case), or None for a read-only query.

    Strings, backticked names and comments are skipped, and so are words used as names: after ``.``
    (a property), ``$`` (a parameter) or ``:`` (a label), or before ``:`` (a map key or a variable with a
    label). A variable named like a clause keyword (``WITH 1 AS set``) is taken for the clause: backtick it.
    """
    code = _mask_cypher(text)
    for match in _WORD.finditer(code):
        word = match.group().lower()
        if word not in _WRITE_WORDS:
            continue
        before = code[: match.start()].rstrip()[-1:]
        after = code[match.end() :].lstrip()[:1]
        if before not in (".", "$", ":") and after != ":":
            return word.upper()
    return None


def _mask_cypher(source: str) -> str:
    """``source`` with strings, backticked names and comments blanked out (same length)."""
    out = list(source)
    i = 0
    while i < len(source):
        if source.startswith("//", i):
            end = _index_or_end(source, "\n", i)
        elif source.startswith("/*", i):
            end = min(_index_or_end(source, "*/", i + 2) + 2, len(source))
        elif source[i] in "'\"`":
            end = _closing_quote(source, i)
        else:
            i += 1
            continue
        out[i:end] = " " * (end - i)
        i = end
    return "".join(out)


def _closing_quote(source: str, start: int) -> int:
    """The index just past the quote that closes the one at ``start`` (backslash escapes, except in backticks)."""
    quote = source[start]
    i = start + 1
    while i < len(source):
        if source[i] == "\\" and quote != "`":
            i += 2
        elif source[i] == quote:
            return i + 1
        else:
            i += 1
    return len(source)


_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


def _check_uri(uri: str) -> None:
    """Raises ValueError unless ``uri`` is scheme://host[:port] with a scheme the driver speaks."""
    parts = urlsplit(uri)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"the scheme must be one of {', '.join(_SCHEMES)}")
    if not parts.hostname:
        raise ValueError("no host")
    parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range


def split_cypher(source: str) -> list[str]:
    """Split Cypher source on ``;`` terminators, dropping comments.

    A ``;`` inside a string ('...' or "...", with backslash escapes), a backticked name, a
    ``// line`` comment or a ``/* block */`` comment does not end a statement.
    """
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(source):
        ch = source[i]
        if quote is not None:
            step = 2 if ch == "\\" and quote != "`" else 1  # keep an escaped char, even a quote
            current.append(source[i : i + step])
            quote = None if ch == quote else quote
            i += step
        elif source.startswith("//", i):
            i = _index_or_end(source, "\n", i)
        elif source.startswith("/*", i):
            i = _index_or_end(source, "*/", i + 2) + 2
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            quote = ch if ch in "'\"`" else None
            current.append(ch)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def _index_or_end(text: str, needle: str, start: int) -> int:
    found = text.find(needle, start)
    return len(text) if found < 0 else found


def _one_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())[:300]

"""A connection to the graph: the official neo4j driver, one database, errors mapped to GraphError.

Two servers speak to it: Neo4j 5, and ArcadeDB's Bolt plugin (the local server). Two differences matter here:

- Telling them apart. ArcadeDB answers ``CALL dbms.components()`` exactly like Neo4j ("Neo4j Kernel",
  5.26.0, community), so that call cannot discriminate. The Bolt agent string can: Neo4j sends
  ``Neo4j/<version>`` and nothing else (``Neo4j/5.26.0``, ``Neo4j/5.27-aura``), while compatible servers
  append who they are (``Neo4j/5.26.0 compatible (ArcadeDB 26.10.2)``). See ``Graph.is_neo4j``.
- Read transactions. Neo4j refuses a write in a read transaction; ArcadeDB ignores the access mode, runs
  writes, commits schema commands (CREATE INDEX ...) even when the transaction is rolled back, ignores the
  driver's transaction timeout, and executes DDL under EXPLAIN. So on ArcadeDB read-only is its permission
  system's job: ``kg-etl query`` connects as a user whose group may only read records (see
  ``LocalGraphServer``); ``Graph.read_query`` adds what each server allows; see there.
"""

from __future__ import annotations

import contextlib
import re
import threading
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

__all__ = [
    "CYPHER_DIR",
    "QUERY_TIMEOUT_S",
    "READ_ONLY_PROCEDURES",
    "Graph",
    "GraphSettings",
    "plan_problem",
    "split_cypher",
]

T = TypeVar("T")
# The top-level cypher/ folder, as installed inside the package (kg_etl/cypher links to it in a checkout).
CYPHER_DIR = files("kg_etl") / "cypher"
SCHEMA_FILE = CYPHER_DIR / "schema.cypher"
# Full-text indexes: Neo4j only (ArcadeDB rejects CREATE FULLTEXT INDEX).
NEO4J_SCHEMA_FILE = CYPHER_DIR / "schema-neo4j.cypher"
QUERY_TIMEOUT_S = 30.0  # kg-etl query's default --timeout
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

    def read_query(
        self, text: str, params: dict[str, Any] | None = None, timeout: float = QUERY_TIMEOUT_S
    ) -> list[dict[str, Any]]:
        """A user's own query (``kg-etl query``), which must not change the graph: the server refuses writes.

        Read-only is the server's to enforce, not a word filter's: on kg-etl's local server ``query`` connects
        as a user who may only read (``LocalGraphServer.reader_settings``); on Neo4j the session is in READ
        mode, which Neo4j enforces, and the plan (EXPLAIN) may hold no LOAD CSV and only read-only
        procedures. Whatever runs is rolled back. After ``timeout`` seconds, or at Ctrl-C, the query is
        ended on the server (``TERMINATE TRANSACTIONS``), not merely abandoned.

        Raises:
            GraphError: the server refused the query (a write, a file read), it ran past ``timeout``, or failed.
        """
        if self.is_neo4j():
            self._check_plan(text, params or {})
        outcome: dict[str, Any] = {}
        runner = threading.Thread(
            target=self._user_query, args=(text, params or {}, timeout, outcome), daemon=True, name="kg-etl-query"
        )
        runner.start()
        try:
            runner.join(timeout)
        except KeyboardInterrupt:
            self._terminate(text)
            raise
        if runner.is_alive():
            self._terminate(text)
            runner.join(10.0)
            raise GraphError(f"the query ran past --timeout {timeout:g} s and was stopped on the server")
        if "error" in outcome:
            raise outcome["error"]
        summary = outcome["summary"]
        if summary.query_type not in (None, "r"):
            raise GraphError(
                "kg-etl query runs read-only queries, and the server reports this one as a write "
                f"(query type {summary.query_type!r}); nothing of it was committed"
            )
        rows: list[dict[str, Any]] = outcome["rows"]
        return rows

    def _user_query(self, text: str, params: dict[str, Any], timeout: float, outcome: dict[str, Any]) -> None:
        # The test suite tells users' queries from the project's own statements by this function's name.
        try:
            with self._session(access_mode=neo4j.READ_ACCESS) as session:
                tx = session.begin_transaction(timeout=timeout)  # Neo4j ends it there too
                try:
                    result = tx.run(text, params)
                    outcome["rows"] = [record.data() for record in result]
                    outcome["summary"] = result.consume()
                finally:
                    tx.close()  # rolled back: a read has nothing to commit
        except GraphError as e:
            outcome["error"] = _refusal(e)
        except BaseException as e:  # handed to the caller's thread, which raises it
            outcome["error"] = e

    def _terminate(self, text: str) -> None:
        """End the server's transactions that run ``text`` (on ArcadeDB a client's own, on Neo4j as allowed)."""
        with contextlib.suppress(GraphError, Neo4jError, DriverError):
            running = self.read_rows(st.RUNNING_TRANSACTIONS)
            ids = [row["id"] for row in running if str(row["query"]).strip() == text.strip()]
            if ids:
                with self._session() as session:
                    session.run(st.TERMINATE_TRANSACTIONS.text, ids=ids).consume()

    def _check_plan(self, text: str, params: dict[str, Any]) -> None:
        """On Neo4j: the plan of ``text`` must read only (no LOAD CSV, procedures from a short list)."""
        with self._session(access_mode=neo4j.READ_ACCESS) as session:
            summary = session.run("EXPLAIN " + text, params).consume()  # plans, runs nothing
        problem = (
            plan_problem(summary.plan or {}) if summary.query_type == "r" else f"query type {summary.query_type!r}"
        )
        if problem is not None:
            raise GraphError(f"kg-etl query runs read-only queries, and this one has {problem}; nothing was run")

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


# Procedures a read-only query may call on Neo4j: schema introspection. Others may write, or read files.
READ_ONLY_PROCEDURES = frozenset({
    "db.labels", "db.relationshipTypes", "db.propertyKeys", "db.indexes", "db.constraints", "db.info",
    "db.schema.visualization", "db.schema.nodeTypeProperties", "db.schema.relTypeProperties", "dbms.components",
})  # fmt: skip
_PROCEDURE_NAME = re.compile(r"([A-Za-z_][\w.]*)\s*\(")


def plan_problem(plan: dict[str, Any]) -> str | None:
    """What in a Neo4j plan (EXPLAIN's ``summary.plan``) a read-only query may not do, or None."""
    pending = [plan]
    while pending:
        node = pending.pop()
        operator = str(node.get("operatorType", ""))
        if operator.startswith("LoadCSV"):
            return "LOAD CSV (it reads files or URLs)"
        if "ProcedureCall" in operator:
            details = " ".join(str(v) for v in (node.get("args") or {}).values())
            name = _PROCEDURE_NAME.search(details)
            if name is None or name.group(1) not in READ_ONLY_PROCEDURES:
                return f"the procedure {name.group(1) if name else '(unnamed)'}, which is not a read-only one"
        pending.extend(node.get("children") or [])
    return None


def _refusal(error: GraphError) -> GraphError:
    """A write the server refused, said as what it is."""
    code = str(getattr(error.__cause__, "code", "") or "")
    if code.endswith(("Security.Forbidden", "Statement.AccessMode")) or "not allowed" in str(error):
        reason = _one_line(error.__cause__ or error)
        return GraphError(f"kg-etl query runs read-only queries, and the server refused this one: {reason}")
    return error


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

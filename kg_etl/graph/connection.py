"""A connection to the graph: the official neo4j driver, one database, errors mapped to GraphError."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import neo4j
from neo4j.exceptions import AuthError, DriverError, Neo4jError, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, SecretStr

from kg_etl.errors import GraphError
from kg_etl.graph import statements as st
from kg_etl.graph.statements import Statement

__all__ = ["Graph", "GraphSettings", "split_cypher"]

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO_ROOT / "cypher" / "schema.cypher"


class GraphSettings(BaseModel):
    """Where the graph is; the password is a SecretStr so it never shows in reprs or logs."""

    model_config = ConfigDict(frozen=True)

    uri: str
    username: str
    password: SecretStr
    database: str | None = None


class Graph:
    """A driver bound to one database. Use as a context manager, or call ``close()``."""

    def __init__(self, settings: GraphSettings) -> None:
        self.settings = settings
        self._driver = neo4j.GraphDatabase.driver(
            settings.uri,
            auth=(settings.username, settings.password.get_secret_value()),
            connection_timeout=10.0,
            max_transaction_retry_time=15.0,
        )

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._driver.close()

    def wait_ready(self, attempts: int = 6, first_delay: float = 0.5) -> None:
        """Check the server answers a query, retrying with backoff while it is still starting.

        Raises:
            GraphError: wrong credentials (at once), or unreachable after all attempts.
        """
        delay = first_delay
        for attempt in range(1, attempts + 1):
            try:
                self.read_rows(st.PING)
                return
            except AuthError as e:
                raise GraphError(
                    f"{self.settings.uri}: authentication failed for user "
                    f"{self.settings.username!r}; check NEO4J_USERNAME / NEO4J_PASSWORD"
                ) from e
            except GraphError:
                if attempt == attempts:
                    raise
                time.sleep(delay)
                delay *= 2

    @contextmanager
    def _session(self) -> Iterator[neo4j.Session]:
        try:
            with self._driver.session(database=self.settings.database) as session:
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
        """A user's own query (``kg-etl query``), in a read transaction so it cannot change the graph."""
        with self._session() as session:
            return session.execute_read(lambda tx: [r.data() for r in tx.run(text, params or {})])

    def apply_schema(self, path: Path = SCHEMA_FILE) -> int:
        """Run every statement of ``cypher/schema.cypher`` (idempotent); returns how many ran."""
        statements = split_cypher(path.read_text(encoding="utf-8"))
        with self._session() as session:
            for text in statements:
                session.run(text).consume()
        return len(statements)


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

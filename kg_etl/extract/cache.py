"""The extraction cache: results by (chunk text, extractor, version, model), in SQLite under KG_ETL_HOME.

It is what makes a re-run cheap: a re-ingested or edited PDF sends only new or changed chunks to the model.
It only saves work, so it heals rather than fails: a file that is not a usable cache (truncated, garbled,
another schema) is set aside with one notice and a new one started; an entry the caller cannot use is
dropped (``discard``) and asked for again. A write that the disk refuses is one ``StateError`` naming the file.
The file is private (0600, in a 0700 folder): it holds what the model extracted from private PDFs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from kg_etl.defaults import private_dir
from kg_etl.errors import StateError

__all__ = ["SqliteCache"]

T = TypeVar("T")
_LOG = logging.getLogger(__name__)


class SqliteCache:
    """A key -> JSON store; safe for several kg-etl processes at once (WAL, busy timeout)."""

    def __init__(self, path: Path, notify: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._notify = notify or _LOG.warning
        private_dir(path.parent)
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            self._set_aside(e)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():  # created private, before SQLite creates it with the umask's mode
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS extraction (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("SELECT key, value FROM extraction LIMIT 1").fetchall()  # the schema we expect
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _set_aside(self, error: Exception) -> None:
        broken = self.path.with_name(f"{self.path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self.path) + suffix)
            if part.exists():
                part.replace(Path(str(broken) + suffix))
        self._notify(f"{self.path}: not a usable extraction cache ({error}); set aside as {broken.name}, starting anew")

    @contextmanager
    def _healing(self) -> Iterator[None]:
        """A cache that breaks while in use is set aside and reopened; a full disk is one StateError."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "full" in str(e) or "readonly" in str(e) or "unable to open" in str(e):
                raise StateError(f"{self.path}: cannot write the extraction cache ({e}); free space there or "
                                 "move KG_ETL_HOME") from e  # fmt: skip
            self._reopen(e)
        except sqlite3.DatabaseError as e:
            self._reopen(e)

    def _reopen(self, error: Exception) -> None:
        self._db.close()
        self._set_aside(error)
        self._db = self._connect()

    def get(self, key: str) -> str | None:
        with self._healing():
            row = self._db.execute("SELECT value FROM extraction WHERE key = ?", (key,)).fetchone()
            return None if row is None or not isinstance(row[0], str) else row[0]
        return None

    def put(self, key: str, value: str) -> None:
        with self._healing():
            self._db.execute("INSERT OR REPLACE INTO extraction (key, value) VALUES (?, ?)", (key, value))

    def discard(self, key: str) -> None:
        """Forget an entry its reader could not use (garbled, or of an older schema)."""
        with self._healing():
            self._db.execute("DELETE FROM extraction WHERE key = ?", (key,))

    def __len__(self) -> int:
        with self._healing():
            return int(self._db.execute("SELECT count(*) FROM extraction").fetchone()[0])
        return 0

    def close(self) -> None:
        self._db.close()

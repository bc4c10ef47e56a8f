"""The extraction cache: results by (chunk text, extractor, version, model), in SQLite under KG_ETL_HOME.

It is what makes a re-run cheap: a re-ingested or edited PDF sends only new or changed chunks to the model.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["SqliteCache"]


class SqliteCache:
    """A key -> JSON store; safe for several kg-etl processes at once (WAL, busy timeout)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS extraction (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM extraction WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO extraction (key, value) VALUES (?, ?)", (key, value))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM extraction").fetchone()[0])

    def close(self) -> None:
        self._db.close()

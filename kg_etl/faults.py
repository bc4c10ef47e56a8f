"""Test-only fault hooks: real native crashes on demand, so tests can show what a crash inside llama.cpp does.

Never set in normal use. ``KG_ETL_TEST_FAULTS`` holds comma-separated hooks:

- ``probe-crash-repack``: the placement probe segfaults when extra buffer types (weight repacking) are on,
  as llama.cpp's AMX path does on Intel Xeons (``kg_etl.llm.placement``); the plain placement survives.
- ``worker-crash-after=N``: a model worker segfaults after it has sent N replies (``kg_etl.llm.worker``).
- ``ray-actor-kill-after=N``: a Ray model actor SIGKILLs itself after it has streamed N replies, once (not
  again after Ray restarts it) (``kg_etl.distributed.remote``): what a lost node or an OOM kill does.

The crash is a real SIGSEGV (a read of address 0), not an exception: what the parent sees is what it would
see if llama.cpp itself crashed.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["FAULTS_ENV", "fault", "segfault"]

FAULTS_ENV = "KG_ETL_TEST_FAULTS"


def fault(name: str) -> str | None:
    """The value of hook ``name`` ("" for a hook without one), or None when it is not set."""
    for item in os.environ.get(FAULTS_ENV, "").split(","):
        key, _, value = item.strip().partition("=")
        if key == name:
            return value
    return None


def segfault() -> None:
    """Die of SIGSEGV now, as a crash in native code would (faulthandler, where enabled, still reports it)."""
    ctypes.string_at(0)

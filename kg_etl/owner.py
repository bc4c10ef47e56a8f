"""Who holds a document claim: this process's identity, and whether another holder is still alive."""

from __future__ import annotations

import functools
import os
import socket

__all__ = ["is_stale", "this_process"]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused PID apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


@functools.cache
def this_process() -> str:
    """``host:pid:start``: unique across hosts, and across restarts that reuse a PID."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def is_stale(owner: str) -> bool:
    """True when ``owner`` is a process on this host that no longer runs (killed, crashed, finished)."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's process: only its heartbeat can tell
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return start not in ("?", "") and _start_time(pid) not in (start, None)

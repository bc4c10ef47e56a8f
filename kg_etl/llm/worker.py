"""A model in a process of its own: the ingest process sends a round of requests, the worker streams replies.

llama.cpp is native code: a crash in it (the AMX segfault on Intel Xeons, a driver fault on a GPU) kills the
process it runs in, with no Python exception and no message. So every model ``kg-etl ingest`` loads lives in
a worker process, as Ollama runs llama.cpp in a runner: grammars, prefix-state reuse and the batched decoder
all run there, and the ingest process only sees replies, or ``WorkerCrashedError`` naming the signal.
Closing a worker ends its process, so all of its memory (RAM and VRAM) goes back to the OS at once.

The protocol is in ``kg_etl.llm.protocol``, the worker's side in ``kg_etl.llm.serve``. A worker ignores
SIGINT, dies with its parent, and logs llama.cpp's output and any fault report to ``KG_ETL_HOME/logs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kg_etl.defaults import kg_etl_home, private_dir
from kg_etl.errors import ModelError, StateError, WorkerCrashedError
from kg_etl.extract.base import Job, OnReply, Reply
from kg_etl.llm.backend import chat_request, to_reply
from kg_etl.llm.protocol import ChatRequest, WorkerInfo, WorkerSpec
from kg_etl.llm.runtime import Completion, ModelStats, OnDone, Sampling, model_file_id

__all__ = ["ModelWorker", "WorkerBackend"]

_CLOSE_TIMEOUT_S = 30.0
_LOG_MAX_AGE_S = 7 * 24 * 3600


class ModelWorker:
    """One model loaded in a worker process. Close it (or use ``with``) to end the process.

    Raises (from the constructor and ``generate``):
        WorkerCrashedError: the process died (its signal or exit code is in the message).
        ModelError: the model could not be loaded, or the worker refused a request.
    """

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.name = Path(spec.path).name
        self.stats = ModelStats()
        self.peak_rss_mb: float | None = None
        # Wall time of generate() here, and the part of it the worker spent generating: the rest is IPC.
        self.wall_seconds = 0.0
        self.worker_seconds = 0.0
        self._busy = False
        self._closed = False
        self.log_path = _log_path(self.name)
        started = time.perf_counter()
        ours, theirs = socket.socketpair()
        with ours, theirs, self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {self.name}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "kg_etl.llm.serve", str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            self._conn = Connection(os.dup(ours.fileno()))
        try:
            self._conn.send(spec)
            self.info = self._ready()
            self.start_seconds = time.perf_counter() - started  # process start, imports and model load
        except BaseException:
            self._kill()
            raise

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def path(self) -> Path:
        return Path(self.spec.path)

    @property
    def closed(self) -> bool:
        """True once the worker process has ended (closed, killed or crashed)."""
        return not self.alive

    def _ready(self) -> WorkerInfo:
        message = self._recv("loading the model")
        if message[0] == "error":
            self._proc.wait(timeout=_CLOSE_TIMEOUT_S)
            raise message[1]
        info: WorkerInfo = message[1]
        return info

    def generate(
        self, requests: Sequence[ChatRequest], sampling: Sampling | None = None, on_done: OnDone | None = None
    ) -> list[Completion]:
        """Complete every request in the worker; ``on_done(i, completion)`` as each arrives."""
        if self._closed:
            raise ModelError(f"{self.name}: the model worker was closed; start a new one")
        if not requests:
            return []
        out: dict[int, Completion] = {}
        started = time.perf_counter()
        self._busy = True
        self._send(("generate", list(requests), sampling))
        while (message := self._recv("generating"))[0] == "reply":
            _, i, completion = message
            out[i] = completion
            self.stats.add(completion)
            if on_done is not None:
                on_done(i, completion)
        self._busy = False
        if message[0] == "error":
            raise message[1]
        self.wall_seconds += time.perf_counter() - started
        self.worker_seconds += message[1]
        return [out[i] for i in range(len(requests))]

    @property
    def ipc_overhead(self) -> float | None:
        """The share of generate()'s time not spent generating: sending requests, receiving replies."""
        return self.wall_seconds / self.worker_seconds - 1 if self.worker_seconds else None

    def close(self) -> None:
        """End the worker: asked to close when idle, killed when it is in the middle of a round."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.alive and not self._busy:
                self._send(("close",))
                if self._conn.poll(_CLOSE_TIMEOUT_S):
                    message = self._conn.recv()
                    self.peak_rss_mb = message[1] if message[0] == "closed" else None
                self._proc.wait(timeout=_CLOSE_TIMEOUT_S)
        except (OSError, EOFError, WorkerCrashedError, subprocess.TimeoutExpired):
            pass  # a worker that cannot close cleanly is killed below: its memory goes back either way
        finally:
            self._kill()

    def _kill(self) -> None:
        if self.alive:
            self._proc.kill()
        self._proc.wait()
        self._conn.close()

    def _send(self, message: Any) -> None:
        try:
            self._conn.send(message)
        except OSError as e:
            raise self._crashed("receiving work") from e

    def _recv(self, doing: str) -> Any:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as e:
            raise self._crashed(doing) from e

    def _crashed(self, doing: str) -> WorkerCrashedError:
        self._busy = False
        try:
            code = self._proc.wait(timeout=_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        how = signal.Signals(-code).name if code < 0 else f"exit code {code}"
        return WorkerCrashedError(self.name, f"{how} while {doing}", str(self.log_path))


class WorkerBackend:
    """Extraction jobs on a ``ModelWorker``: the same contract as ``LlamaBackend``, across processes."""

    def __init__(self, worker: ModelWorker) -> None:
        self.worker = worker
        self._model_id = model_file_id(Path(worker.spec.path))

    @property
    def model_id(self) -> str:
        return self._model_id

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        def done(i: int, c: Completion) -> None:
            if on_reply is not None:
                on_reply(i, to_reply(c))

        return [to_reply(c) for c in self.worker.generate([chat_request(job) for job in jobs], on_done=done)]


def _log_path(model: str) -> Path:
    """A fresh log per worker, old ones pruned: ``KG_ETL_HOME/logs/worker-<pid>-<model>.log``.

    Raises:
        StateError: the folder cannot be written (a full disk, permissions).
    """
    folder = kg_etl_home() / "logs"
    try:
        return _fresh_log(folder, model)
    except OSError as e:
        raise StateError(f"{folder}: cannot write the model worker's log ({e.strerror or e}); free space there "
                         "or move KG_ETL_HOME") from e  # fmt: skip


def _fresh_log(folder: Path, model: str) -> Path:
    private_dir(folder)
    cutoff = time.time() - _LOG_MAX_AGE_S
    for old in folder.glob("worker-*.log"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    path = folder / f"worker-{os.getpid()}-{model}.log"
    path.touch(mode=0o600)
    return path

"""The model worker's own process: load one model, then serve rounds of requests until told to close.

Started by ``kg_etl.llm.worker.ModelWorker`` as ``python -m kg_etl.llm.serve FD PARENT_PID``; the protocol
is in ``kg_etl.llm.protocol``. It imports no LangChain and no graph driver, so it starts in about a second.
The worker ignores SIGINT (the ingest process decides what Ctrl-C does), dies with its parent (Linux
``PR_SET_PDEATHSIG``, else at the closed socket), and writes llama.cpp's output and Python's fault report
(``faulthandler``) to its log.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from kg_etl.errors import KgEtlError, ModelError
from kg_etl.llm.protocol import ChatRequest, WorkerInfo, WorkerSpec, gen_request
from kg_etl.llm.runtime import Completion, Sampling

__all__ = ["main"]


def _die_with_parent(parent: int) -> None:
    """Be killed when the ingest process dies, even by SIGKILL (Linux); elsewhere the closed socket ends us."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


class _Serving:
    """The worker's side: the loaded model, its engine, and the fault hook of the tests."""

    def __init__(self, conn: Connection, spec: WorkerSpec) -> None:
        from kg_etl.faults import fault
        from kg_etl.llm.parallel import ParallelDecoder
        from kg_etl.llm.runtime import LocalModel, peak_rss_mb

        started = time.perf_counter()
        self.conn = conn
        self.model = LocalModel(
            Path(spec.path),
            # With a batched decoder the model's own context serves nothing: the minimum.
            n_ctx=spec.n_ctx if spec.parallel == 1 else 512,
            n_gpu_layers=spec.n_gpu_layers,
            require_gpu=spec.require_gpu,
            n_threads=spec.threads,
            sampling=spec.sampling,
            cpu_repack="on" if spec.extra_bufts else "off",
            chat_template=spec.chat_template,
        )
        self.decoder = None
        if spec.parallel > 1:
            try:
                self.decoder = ParallelDecoder(self.model, spec.parallel, n_ctx_per_seq=spec.n_ctx_per_seq)
            except BaseException:
                self.model.close()
                raise
        crash_after = fault("worker-crash-after")
        self.crash_after = int(crash_after) if crash_after else None
        self.sent = 0
        rss = peak_rss_mb()
        self.info = WorkerInfo(os.getpid(), self.model.offloaded, rss, time.perf_counter() - started)

    def generate(self, requests: list[ChatRequest], sampling: Sampling | None) -> None:
        from kg_etl.faults import segfault

        def done(i: int, completion: Completion) -> None:
            if self.crash_after is not None and self.sent >= self.crash_after:
                segfault()
            self.conn.send(("reply", i, completion))
            self.sent += 1

        started = time.perf_counter()
        engine = self.decoder or self.model
        engine.generate([gen_request(self.model, r) for r in requests], sampling, on_done=done)
        self.conn.send(("done", time.perf_counter() - started))

    def close(self) -> None:
        if self.decoder is not None:
            self.decoder.close()
        self.model.close()


def _send_error(conn: Connection, error: BaseException) -> None:
    """Send an error the parent can raise: ours as they are, anything else (a bug) as a ModelError."""
    if not isinstance(error, KgEtlError):
        traceback.print_exception(error)  # into the worker's log
        error = ModelError(f"the model worker failed ({type(error).__name__}: {error}); see its log")
    try:
        conn.send(("error", error))
    except (pickle.PicklingError, TypeError, AttributeError):
        conn.send(("error", ModelError(str(error))))


def _serve(conn: Connection) -> None:
    from kg_etl.llm.runtime import peak_rss_mb

    spec: WorkerSpec = conn.recv()
    try:
        serving = _Serving(conn, spec)
    except Exception as e:
        _send_error(conn, e)
        return
    conn.send(("ready", serving.info))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            break
        if message[0] == "close":
            break
        try:
            serving.generate(message[1], message[2])
        except Exception as e:
            _send_error(conn, e)
    serving.close()
    with contextlib.suppress(OSError):
        conn.send(("closed", peak_rss_mb()))


def main(argv: Sequence[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(argv[1]))
    faulthandler.enable()  # a native crash leaves the Python stack in the worker's log
    with Connection(int(argv[0])) as conn:
        _serve(conn)


if __name__ == "__main__":
    main(sys.argv[1:])

"""What runs on the Ray cluster's workers: a model actor, and the reading and chunking of one PDF.

Nothing here imports Ray at module level: the driver wraps these with ``ray.remote`` when a run asks for Ray,
so ``kg-etl --help`` never pays for it. Errors cross the process boundary as plain data (``RemoteError``), not
as pickled exceptions: kg-etl's exceptions carry constructor arguments that pickling would not restore.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from kg_etl.config import IngestSettings
from kg_etl.engine import open_document, split_document
from kg_etl.errors import KgEtlError, ReadError, WorkerCrashedError
from kg_etl.faults import fault
from kg_etl.llm.pool import ModelPool, ModelUse
from kg_etl.llm.protocol import ChatRequest
from kg_etl.llm.registry import resolve_model
from kg_etl.llm.runtime import Completion, Tokenizer, model_file_id
from kg_etl.llm.worker import ModelWorker, WorkerBackend
from kg_etl.models import Chunk, DocumentMeta, Page, PageStatus

__all__ = ["ActorInfo", "ModelActor", "ReadResult", "RemoteError", "apply_env", "open_remote", "read_remote"]


class RemoteError(BaseModel):
    """An error raised on a worker, as data: what kind, its one line, and a crashed model's details."""

    kind: str = Field(description="crashed (the llama.cpp worker died), read (the PDF), or error (anything else)")
    message: str
    model: str = ""
    how: str = ""
    log: str = ""
    path: str = ""

    @classmethod
    def of(cls, error: KgEtlError) -> RemoteError:
        if isinstance(error, WorkerCrashedError):
            return cls(kind="crashed", message=str(error), model=error.model, how=error.how, log=error.log)
        if isinstance(error, ReadError):
            return cls(kind="read", message=error.reason, path=error.path)
        return cls(kind="error", message=str(error))

    def exception(self, node: str = "") -> KgEtlError:
        """The error to raise on the driver (a crash names the node whose worker log tells more)."""
        if self.kind == "crashed":
            return WorkerCrashedError(self.model, self.how, f"{self.log} on {node}" if node else self.log)
        if self.kind == "read":
            return ReadError(self.path, self.message)
        return KgEtlError(self.message)


class ActorInfo(BaseModel):
    """A model actor once its model is loaded: where it runs and how."""

    pid: int
    node: str
    model: str
    model_id: str
    offloaded: bool
    placement: str
    threads: int
    load_seconds: float
    worker_pid: int


def apply_env(env: Mapping[str, str]) -> None:
    """Make this worker's ``KG_ETL_*`` variables the driver's: set those given, drop any others.

    Ray reuses worker processes across tasks and runs, so a variable left by an earlier run must not leak
    into this one.
    """
    for name in [n for n in os.environ if n.startswith("KG_ETL_") and n not in env]:
        del os.environ[name]
    os.environ.update(env)


class ModelActor:
    """One resident model for the whole run, in a Ray actor: loaded once, when the actor starts.

    It loads the model as one machine does (``ModelPool``: the placement probe, the worker process, the
    run's context size and sampling), and streams each reply back as soon as the worker finishes it.
    """

    def __init__(self, settings: IngestSettings, ref: str, sequence_context: int, env: Mapping[str, str]) -> None:
        apply_env(env)
        self.ref = ref
        self.pool = ModelPool(settings)
        self.pool.sequence_context = lambda: sequence_context
        self.pool.backend(ref)  # loaded here, once: a restarted actor loads it again in its own __init__
        self._kill_after = _kill_after()
        self._sent = 0

    @property
    def _worker(self) -> ModelWorker:
        backend = self.pool.backend(self.ref)
        assert isinstance(backend, WorkerBackend)
        return backend.worker

    def info(self) -> ActorInfo:
        worker, use = self._worker, self.pool.usage[self.ref]
        return ActorInfo(
            pid=os.getpid(),
            node=socket.gethostname(),
            model=use.name,
            model_id=use.model_id,
            offloaded=use.offloaded,
            placement=use.placement,
            threads=use.threads,
            load_seconds=worker.start_seconds,
            worker_pid=worker.pid,
        )

    def run(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, Completion] | RemoteError]:
        """Each request's completion, ``(index, completion)``, in the order they finish; a ``RemoteError`` ends it."""
        arrived: queue.Queue[tuple[int, Completion] | RemoteError | None] = queue.Queue()

        def generate() -> None:
            try:
                self._worker.generate(list(requests), on_done=lambda i, c: arrived.put((i, c)))
                arrived.put(None)
            except KgEtlError as e:
                arrived.put(RemoteError.of(e))
            except BaseException as e:  # an unexpected bug: told, not swallowed, and the stream ends
                arrived.put(RemoteError(kind="error", message=f"{type(e).__name__}: {e}"))

        # The worker hands replies to a callback; a thread turns them into this generator's items, so each
        # reaches the driver (and its cache) as soon as it is finished, not when the whole part is.
        threading.Thread(target=generate, daemon=True).start()
        while (item := arrived.get()) is not None:
            yield item
            if isinstance(item, RemoteError):
                return
            self._sent += 1
            if self._sent == self._kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> ModelUse:
        """End the model's worker (its memory goes back) and say what it did."""
        self.pool.close()
        return self.pool.usage[self.ref]


def _kill_after() -> int | None:
    """The test hook ``ray-actor-kill-after=N`` (``kg_etl.faults``), in an actor's first life only."""
    import ray

    value = fault("ray-actor-kill-after")
    first_life = not ray.get_runtime_context().was_current_actor_reconstructed
    return int(value) if value and first_life else None


class ReadResult(BaseModel):
    """A PDF read and chunked on a worker: its chunks, and the pages that gave no usable text."""

    chunks: list[Chunk] = Field(default_factory=list)
    notes: list[Page] = Field(default_factory=list)
    error: RemoteError | None = None


def open_remote(path: str, settings: IngestSettings, env: Mapping[str, str]) -> DocumentMeta | RemoteError:
    """Open a PDF (check, hash, decrypt, metadata) within the run's time limit; no page is read yet."""
    apply_env(env)
    try:
        return open_document(Path(path), settings).meta
    except ReadError as e:
        return RemoteError.of(e)


def read_remote(path: str, settings: IngestSettings, env: Mapping[str, str]) -> ReadResult:
    """Read every page of a PDF and cut it into chunks, exactly as one machine does."""
    apply_env(env)
    result = ReadResult()
    try:
        doc = open_document(Path(path), settings)
        pages = _noted(doc.pages(), result.notes)
        result.chunks = list(split_document(doc.meta.id, pages, settings, _tokenizer(settings).count_tokens))
    except ReadError as e:
        result.error = RemoteError.of(e)
    return result


def _noted(pages: Iterator[Page], notes: list[Page]) -> Iterator[Page]:
    for page in pages:
        if page.status is not PageStatus.OK:
            notes.append(page)
        yield page


# A worker process reads many PDFs in a run: its tokenizer is loaded once (milliseconds, a few MiB).
_TOKENIZERS: dict[tuple[str, str], Tokenizer] = {}


def _tokenizer(settings: IngestSettings) -> Tokenizer:
    """The run's main model's tokenizer: chunks are cut with it on one machine too."""
    path = resolve_model(settings.model, download=False)
    key = (str(path), model_file_id(path))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = Tokenizer(path)
    return _TOKENIZERS[key]

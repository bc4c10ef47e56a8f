"""``kg-etl ingest --ray``: the one-machine ingest, with its models on Ray actors and several documents at once.

The driver (this process) owns what must be one: the graph writer, the extraction cache and the claims. It
runs the single-machine pipeline unchanged on a few *lanes* (threads), each working on one document as one
machine would: claim, read, batches, extraction rounds, cache, writes, document results. What moves out:

- the models, to a group of Ray actors per model (``actors``), each holding one resident model for the run;
- the reading and chunking of each PDF, to Ray tasks pinned to the driver's node, where the files are (no
  shared filesystem is needed; the tasks run in a worker's main thread, where the read time limit works).

Writes go through one writer, one statement or transaction at a time (``SerialWriter``): a batch of chunks
is one transaction, as on one machine, and relationship writes that lock both end nodes never race.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, computed_field

from kg_etl.config import IngestSettings
from kg_etl.distributed.actors import ActorPlan, ActorUse, RayModelPool, portable
from kg_etl.distributed.remote import ReadResult, RemoteError, open_remote, read_remote
from kg_etl.engine import Document, Lane
from kg_etl.errors import ConfigError
from kg_etl.graph.connection import Graph
from kg_etl.graph.writer import GraphWriter
from kg_etl.llm.pool import ModelPool
from kg_etl.models import Chunk, DocumentMeta, Page
from kg_etl.pipeline import Event, IngestReport, ingest

__all__ = [
    "RayEngine",
    "RayIngestReport",
    "RayOptions",
    "RemoteDocument",
    "SerialWriter",
    "ingest_on_ray",
    "ray_session",
    "require_ray",
]

L = TypeVar("L", bound=Lane)


class RayOptions(BaseModel):
    """Where the Ray cluster is and how the model actors are laid out on it."""

    address: str = Field(description="local (a Ray started for the run), auto, or a cluster address")
    actors: int = Field(default=1, ge=1, le=1024, description="model actors per model")
    gpus_per_actor: float | None = Field(default=None, ge=0, description="None: 1 where the cluster has GPUs, else 0")
    cpus_per_actor: float = Field(default=1.0, ge=0, description="CPUs each actor reserves (and llama.cpp threads)")
    max_restarts: int = Field(default=3, ge=0, description="times Ray restarts an actor that died")
    lanes: int | None = Field(default=None, ge=1, description="documents worked on at once; None: 2 per actor")


class RayIngestReport(IngestReport):
    """The run, as on one machine, plus the cluster: each actor's work, speed, loads and restarts."""

    cluster: str = ""
    nodes: int = 0
    lanes: int = 0
    actors: list[ActorUse] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def actor_restarts(self) -> int:
        return sum(a.restarts for a in self.actors)


def require_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ConfigError: Ray is not installed (it is the optional extra ``kg-etl[ray]``).
    """
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--ray needs Ray, which is not installed here: pip install 'kg-etl[ray]'") from e
    return ray


@contextlib.contextmanager
def ray_session(ray: Any, address: str) -> Iterator[str]:
    """Connected to Ray for the run: a local Ray started and stopped with it, or a cluster's address.

    A process already connected (a library caller, a test) keeps its connection, and it is left open.
    """
    if ray.is_initialized():
        yield "this process's Ray connection"
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            ray.init(address="local", **quiet)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"--ray {address}: cannot connect to Ray ({_first_line(e)}); start the cluster with "
                          "`ray start --head` or use --ray local") from e  # fmt: skip
    try:
        yield address
    finally:
        ray.shutdown()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class SerialWriter(GraphWriter):
    """The run's one writer, shared by its lanes: each of its calls runs alone (one transaction at a time)."""

    def __init__(self, writer: GraphWriter) -> None:
        super().__init__(writer.graph, writer.rows)
        self._serial = threading.RLock()  # re-entrant: a writer method may call another

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name.startswith("_") or not callable(attr):
            return attr
        lock = super().__getattribute__("_serial")

        @functools.wraps(attr)
        def serial(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attr(*args, **kwargs)

        return serial


class RemoteDocument:
    """A PDF opened on the cluster: its metadata now; pages and chunks from one read task, when first asked."""

    def __init__(self, meta: DocumentMeta, read: Callable[[], ReadResult]) -> None:
        self._meta, self._read = meta, read
        self._result: ReadResult | None = None

    @property
    def meta(self) -> DocumentMeta:
        return self._meta

    def _got(self) -> ReadResult:
        if self._result is None:
            self._result = self._read()
        if self._result.error is not None:
            raise self._result.error.exception()
        return self._result

    def pages(self) -> Iterator[Page]:
        """The pages that gave no usable text (the only ones the pipeline looks at: it has the chunks)."""
        yield from self._got().notes

    def chunks(self) -> list[Chunk]:
        return self._got().chunks


class RayEngine:
    """A ``RunEngine`` on a Ray cluster (see the module docstring)."""

    def __init__(self, ray: Any, options: RayOptions, env: dict[str, str] | None = None) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.options = ray, options
        self.env = env if env is not None else {k: v for k, v in os.environ.items() if k.startswith("KG_ETL_")}
        gpus = options.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        self.plan = ActorPlan(options.actors, gpus, options.cpus_per_actor, options.max_restarts, self.env)
        self.lanes = options.lanes or 2 * options.actors
        # Reading is a few percent of the LLM's time and at most one task per lane: it reserves no CPU, so
        # actors that hold every CPU of the node cannot starve it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self._open = ray.remote(open_remote).options(num_cpus=0, scheduling_strategy=here)
        self._read = ray.remote(read_remote).options(num_cpus=0, scheduling_strategy=here)
        self.pool: RayModelPool | None = None

    def check_resources(self, models: int = 1) -> None:
        """Raises ConfigError when the cluster cannot hold the actors at all (they would wait forever)."""
        total = self.ray.cluster_resources()
        plan, n = self.plan, self.plan.actors * models
        for kind, each in (("CPU", plan.cpus), ("GPU", plan.gpus)):
            if n * each > total.get(kind, 0) + 1e-9:
                raise ConfigError(
                    f"--ray-actors {plan.actors} with {each:g} {kind} each need {n * each:g} {kind}s; the Ray "
                    f"cluster has {total.get(kind, 0):g}: lower --ray-actors or --ray-{kind.lower()}s-per-actor"
                )

    def models(self, settings: IngestSettings, notify: Callable[[str], None]) -> ModelPool:
        threads = settings.threads or max(1, int(self.plan.cpus))  # the CPUs it reserves, unless told
        self.pool = RayModelPool(self.ray, settings.model_copy(update={"threads": threads}), self.plan, notify)
        return self.pool

    def open(self, path: Path, settings: IngestSettings) -> Document:
        # Absolute, not resolved: Ray's workers do not run in this folder, and a link must stay a link.
        where, settings = os.path.abspath(path), portable(settings)
        meta = self.ray.get(self._open.remote(where, settings, self.env))
        if isinstance(meta, RemoteError):
            raise meta.exception()
        return RemoteDocument(meta, lambda: self.ray.get(self._read.remote(where, settings, self.env)))

    def chunks(
        self, doc: Document, pages: Iterator[Page], settings: IngestSettings, count_tokens: Callable[[str], int]
    ) -> Iterator[Chunk]:
        assert isinstance(doc, RemoteDocument)
        for _ in pages:  # the caller notes the pages without text as they pass; the task cut the chunks
            pass
        return iter(doc.chunks())

    def each_document(self, lane: L, paths: Sequence[Path], work: Callable[[L, Path], bool]) -> bool:
        return _Lanes(lane, self.lanes).run(paths, work)

    def fill(self, report: RayIngestReport) -> None:
        report.lanes = self.lanes
        report.nodes = sum(bool(node.get("Alive")) for node in self.ray.nodes())
        report.actors = self.pool.actors if self.pool is not None else []


class _Lanes:
    """Several documents at once: forks of the run on threads, sharing one serial writer and event sink."""

    def __init__(self, lane: Lane, count: int) -> None:
        self.lane, self.count = lane, count
        self.writer = SerialWriter(lane.writer)
        self._events = threading.Lock()
        self._paths = threading.Lock()
        self.failed = threading.Event()  # a lane hit an error: the others finish their batch and stop
        self.errors: list[BaseException] = []
        self.interrupted = False

    def on_event(self, event: Event) -> None:
        with self._events:
            self.lane.on_event(event)

    def should_stop(self) -> bool:
        return self.failed.is_set() or self.lane.should_stop()

    def run(self, paths: Sequence[Path], work: Callable[[L, Path], bool]) -> bool:
        todo = iter(paths)
        threads = [
            threading.Thread(target=self._lane, args=(todo, work), name=f"kg-etl-lane-{i}", daemon=True)
            for i in range(min(self.count, len(paths)))
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C twice: the lanes stop at their next check; the caller ends the actors
            self.failed.set()
            raise
        if self.errors:
            raise self.errors[0]
        return not self.interrupted and next(todo, None) is None

    def _lane(self, todo: Iterator[Path], work: Callable[[Any, Path], bool]) -> None:
        fork = self.lane.fork(self.writer, self.on_event, self.should_stop)
        try:
            while not self.should_stop():
                with self._paths:
                    path = next(todo, None)
                if path is None:
                    return
                if not work(fork, path):
                    self.interrupted = True
                    return
        except BaseException as e:
            self.errors.append(e)
            self.failed.set()
        finally:
            fork.close_fork()


def ingest_on_ray(
    inputs: Sequence[Path],
    graph: Graph,
    settings: IngestSettings,
    options: RayOptions,
    *,
    on_event: Callable[[Event], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
    report: RayIngestReport | None = None,
) -> RayIngestReport:
    """``pipeline.ingest`` on a Ray cluster: the same claims, batches, cache and graph (see the module docstring).

    Raises:
        ConfigError: Ray is missing, the cluster cannot be reached or cannot hold the actors.
        and whatever ``pipeline.ingest`` raises.
    """
    ray = require_ray()
    report = report if report is not None else RayIngestReport()
    with ray_session(ray, options.address) as cluster:
        report.cluster = cluster
        engine = RayEngine(ray, options)
        engine.check_resources(1 if not settings.keep_models_loaded else len(_models(settings)))
        try:
            ingest(inputs, graph, settings, on_event=on_event, should_stop=should_stop, report=report, engine=engine)
        finally:
            engine.fill(report)
    return report


def _models(settings: IngestSettings) -> set[str]:
    return {settings.model, *settings.extractor_models.values()}

"""The driver's side of the model actors: a group per model, work spread over it, actors that die redone.

A round of jobs from the extractor (``BatchExtractor``) is cut into parts along its chunks (a chunk's jobs
stay together, so its prefix is evaluated once) and each part goes to the actor with the fewest parts in
hand. An actor holds at most ``IN_FLIGHT`` parts (one generating, one queued so it never waits for the
driver); when every actor is full, the lanes wait: that is the backpressure. Replies stream back one by one
and reach the extractor, hence the cache, as each arrives.

An actor that dies (killed, its node lost) is restarted by Ray (``max_restarts``) and loads its model again;
the part it held is sent again, less the replies that had already arrived. Nothing of that batch is written
before every reply is in, so a batch is never half-written. A crash inside llama.cpp, by contrast, ends the
run with ``WorkerCrashedError`` as on one machine: a segfault on some input would repeat on every retry.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, computed_field

from kg_etl.config import IngestSettings
from kg_etl.distributed.remote import ActorInfo, ModelActor, RemoteError
from kg_etl.errors import KgEtlError, ModelError
from kg_etl.extract.base import Backend, Job, OnReply, Reply
from kg_etl.llm.backend import chat_request, to_reply
from kg_etl.llm.pool import ModelPool, ModelUse
from kg_etl.llm.protocol import ChatRequest
from kg_etl.llm.runtime import Completion, ModelStats

__all__ = ["IN_FLIGHT", "ActorGroup", "ActorPlan", "ActorUse", "RayModelPool", "portable", "portable_ref"]

IN_FLIGHT = 2
# Tries of one part before the run gives up on it: each failed try is an actor that died under it.
_PART_TRIES = 4
# Seconds to wait for Ray to restart a dead actor, whose new process loads the model again.
_RESTART_POLLS = 300


class ActorUse(BaseModel):
    """What one model actor did over the run, all its restarts included."""

    model: str
    index: int
    node: str = ""
    pids: list[int] = Field(default_factory=list, description="the actor's process, one per (re)start")
    loads: int = Field(default=0, description="times its model was loaded: 1 + restarts seen")
    restarts: int = 0
    offloaded: bool = False
    placement: str = ""
    threads: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = Field(default=0.0, description="time its model spent generating")
    worker_peak_rss_mb: float | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_per_s(self) -> float | None:
        return self.completion_tokens / self.seconds if self.seconds else None

    def record(self, info: ActorInfo) -> bool:
        """Note a (re)started actor; True when it is a new process (a restart, after the first)."""
        if info.pid in self.pids:
            return False
        self.pids.append(info.pid)
        self.loads += 1
        self.restarts = self.loads - 1
        self.node, self.offloaded, self.placement, self.threads = (
            info.node,
            info.offloaded,
            info.placement,
            info.threads,
        )
        return True

    def add(self, completion: Completion) -> None:
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.seconds += completion.seconds


def _totals(uses: Iterable[ActorUse]) -> ModelStats:
    """The actors' replies summed, as one model's running totals."""
    total = ModelStats()
    for use in uses:
        total.calls += use.calls
        total.prompt_tokens += use.prompt_tokens
        total.completion_tokens += use.completion_tokens
        total.seconds += use.seconds
    return total


@dataclass(frozen=True)
class ActorPlan:
    """How many actors per model, and what each reserves on the cluster."""

    actors: int
    gpus: float
    cpus: float
    max_restarts: int
    env: Mapping[str, str]


@dataclass
class _Slot:
    handle: Any  # a Ray actor handle
    use: ActorUse
    in_flight: int = 0
    dead: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class ActorGroup:
    """One model on N actors: a ``Backend`` whose rounds are spread over them (see the module docstring)."""

    def __init__(self, ray: Any, model_id: str, slots: list[_Slot], notify: Callable[[str], None]) -> None:
        self._ray, self._model_id, self._slots, self._notify = ray, model_id, slots, notify
        self._free = threading.Condition()

    @classmethod
    def start(
        cls, ray: Any, settings: IngestSettings, ref: str, expect: tuple[str, str, int], plan: ActorPlan,
        notify: Callable[[str], None],
    ) -> ActorGroup:  # fmt: skip
        """Start ``plan.actors`` actors for model ``ref`` and wait until each has loaded it.

        ``expect`` is (name, model_id, sequence context) as the driver sees the model: an actor whose file
        differs would cache replies under a model it does not run.

        Raises:
            ModelError: an actor could not load the model, or has another file under that name.
        """
        remote = ray.remote(ModelActor).options(
            num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=plan.max_restarts, max_task_retries=0
        )
        name, model_id, context = expect
        # Passwords stay with the driver: actors only generate, and may run on other machines.
        lean = portable(settings).model_copy(update={"password": None, "passwords": {}})
        handles = [remote.remote(lean, portable_ref(ref), context, dict(plan.env)) for _ in range(plan.actors)]
        slots = [_Slot(h, ActorUse(model=name, index=i)) for i, h in enumerate(handles)]
        try:
            for slot, info in zip(slots, _infos(ray, handles, name), strict=True):
                if info.model_id != model_id:
                    raise ModelError(f"{name}: the file on node {info.node} ({info.model_id}) is not the driver's "
                                     f"({model_id}); give every node the same model file")  # fmt: skip
                slot.use.record(info)
                where = "GPU" if info.offloaded else f"CPU ({info.threads} threads, {info.placement})"
                notify(f"model actor {slot.use.index + 1}/{plan.actors}: {name} loaded on {info.node}'s {where} "
                       f"in {info.load_seconds:.1f} s (pid {info.pid})")  # fmt: skip
        except BaseException:
            for handle in handles:
                ray.kill(handle, no_restart=True)
            raise
        return cls(ray, model_id, slots, notify)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def uses(self) -> list[ActorUse]:
        return [slot.use for slot in self._slots]

    @property
    def busy(self) -> bool:
        return any(slot.in_flight for slot in self._slots)

    def stats(self) -> ModelStats:
        return _totals(self.uses)

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        """One reply per job, in order; ``on_reply`` is called in this thread, as each arrives."""
        if not jobs:
            return []
        requests = [chat_request(job) for job in jobs]
        arrived: queue.Queue[tuple[int, Reply] | BaseException | None] = queue.Queue()
        parts = _parts(requests, sum(not s.dead for s in self._slots))
        for part in parts:
            threading.Thread(target=self._part, args=(requests, part, arrived), daemon=True).start()
        replies: dict[int, Reply] = {}
        ended = 0
        while ended < len(parts):
            item = arrived.get()
            if item is None:
                ended += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                replies[item[0]] = item[1]
                if on_reply is not None:
                    on_reply(*item)
        return [replies[i] for i in range(len(jobs))]

    def _part(self, requests: list[ChatRequest], part: list[int], out: queue.Queue[Any]) -> None:
        """Runs one part to the end on some actor, again on another try when its actor dies under it."""
        try:
            left = list(part)
            for _ in range(_PART_TRIES):
                slot = self._acquire()
                try:
                    left = self._stream(slot, requests, left, out)
                finally:
                    self._release(slot)
                if not left:
                    out.put(None)
                    return
            raise ModelError(f"{self._slots[0].use.model}: model actors died {_PART_TRIES} times under the same "
                             "work; see the Ray logs (`ray logs`) of the nodes")  # fmt: skip
        except BaseException as e:  # handed to the lane's thread, which raises it
            out.put(e)

    def _stream(self, slot: _Slot, requests: list[ChatRequest], left: list[int], out: queue.Queue[Any]) -> list[int]:
        """Sends the part's jobs to ``slot``; returns those still without a reply when its actor died."""
        ray = self._ray
        pending = list(left)
        try:
            for ref in slot.handle.run.remote([requests[i] for i in left]):
                item = ray.get(ref)
                if isinstance(item, RemoteError):
                    raise item.exception(slot.use.node)
                i, completion = item
                with slot.lock:
                    slot.use.add(completion)
                pending.remove(left[i])
                out.put((left[i], to_reply(completion)))
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):  # the actor, or its node, died
            self._restarted(slot)
        return pending

    def _restarted(self, slot: _Slot) -> None:
        """After an actor died under a part: wait for Ray's restart, or take the actor out for good."""
        try:
            info = self._back(slot)
        except KgEtlError:
            slot.dead = True
            self._notify(f"model actor {slot.use.index + 1} ({slot.use.model}) is gone for good; the others go on")
            if all(s.dead for s in self._slots):
                raise ModelError(f"{slot.use.model}: every model actor died and Ray restarts no more of them; "
                                 "see the Ray logs (`ray logs`), then rerun to resume") from None  # fmt: skip
            return
        with slot.lock:
            fresh = slot.use.record(info)
        if fresh:
            self._notify(f"model actor {slot.use.index + 1} ({slot.use.model}) died and was restarted on {info.node} "
                         f"(pid {info.pid}); the replies it had not sent are asked for again")  # fmt: skip

    def _back(self, slot: _Slot) -> ActorInfo:
        """The actor's info once Ray has restarted it (and it has loaded its model again).

        Raises:
            ModelError: the actor is dead for good (no restarts left, or its model no longer loads).
        """
        unavailable = self._ray.exceptions.ActorUnavailableError
        for _ in range(_RESTART_POLLS):
            try:
                return _infos(self._ray, [slot.handle], slot.use.model, passing=unavailable)[0]
            except unavailable:
                time.sleep(1.0)
        raise ModelError(f"{slot.use.model}: model actor {slot.use.index + 1} did not come back")

    def _acquire(self) -> _Slot:
        with self._free:
            while True:
                alive = [s for s in self._slots if not s.dead]
                if not alive:
                    raise ModelError(f"{self._slots[0].use.model}: no model actor is left")
                slot = min(alive, key=lambda s: s.in_flight)
                if slot.in_flight < IN_FLIGHT:
                    slot.in_flight += 1
                    return slot
                self._free.wait()

    def _release(self, slot: _Slot) -> None:
        with self._free:
            slot.in_flight -= 1
            self._free.notify_all()

    def close(self) -> None:
        """End every actor, its model worker first (so its peak memory is known)."""
        ray = self._ray
        for slot in self._slots:
            if slot.dead:
                continue
            if not slot.in_flight:  # a busy actor (a run stopped at once) would answer only after its part
                with contextlib.suppress(ray.exceptions.RayError):
                    use: ModelUse = ray.get(slot.handle.close.remote(), timeout=60)
                    slot.use.worker_peak_rss_mb = use.worker_peak_rss_mb
            ray.kill(slot.handle, no_restart=True)


def portable_ref(ref: str) -> str:
    """A model named by a relative path, made absolute: Ray's workers do not run in the driver's folder."""
    if Path(ref).suffix == ".gguf" or os.sep in ref:
        return os.path.abspath(os.path.expanduser(ref))
    return ref


def portable(settings: IngestSettings) -> IngestSettings:
    """The settings with every file they name (models, a chat template file) as an absolute path."""
    template = settings.chat_template
    if template is not None and Path(template).expanduser().is_file():
        template = os.path.abspath(os.path.expanduser(template))
    models = {name: portable_ref(ref) for name, ref in settings.extractor_models.items()}
    update = {"model": portable_ref(settings.model), "extractor_models": models, "chat_template": template}
    return settings.model_copy(update=update)


def _infos(ray: Any, handles: Sequence[Any], name: str, passing: type[BaseException] | None = None) -> list[ActorInfo]:
    """Each actor's info once its model is loaded; an actor that could not load it is one ModelError.

    An error of type ``passing`` is raised as it is (the caller waits and asks again).
    """
    try:
        return list(ray.get([h.info.remote() for h in handles]))
    except ray.exceptions.RayError as e:
        if passing is not None and isinstance(e, passing):
            raise
        raise ModelError(f"{name}: a model actor could not load the model: {_last_line(e)}") from None


def _last_line(error: BaseException) -> str:
    """The line that says what went wrong in a Ray task's traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _parts(requests: Sequence[ChatRequest], actors: int) -> list[list[int]]:
    """Request indices cut into at most ``actors`` parts of about equal size, never splitting a chunk's jobs.

    A chunk's jobs share their first message (the chunk, before ``SPLIT``): kept together, the worker
    evaluates that prefix once for all of them.
    """
    if not requests:
        return []
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.messages[:1], []).append(i)
    ordered = list(groups.values())
    n = max(1, min(actors, len(ordered)))
    size = -(-len(requests) // n)  # jobs per part, rounded up
    parts: list[list[int]] = [[]]
    for group in ordered:
        if parts[-1] and len(parts[-1]) + len(group) > size and len(parts) < n:
            parts.append([])
        parts[-1].extend(group)
    return parts


class RayModelPool(ModelPool):
    """The run's models as groups of Ray actors, with one machine's interface (``ModelPool``).

    Models are read here only for what the driver needs (the file's identity, the tokenizer); each model's
    group of actors starts on first use, and unless the run keeps every model, the resident group is ended
    (once no lane is using it) before another starts, so the cluster holds one model's actors at a time.
    """

    def __init__(
        self, ray: Any, settings: IngestSettings, plan: ActorPlan, notify: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(settings, notify)
        self._ray, self._plan = ray, plan
        self._groups: dict[str, ActorGroup] = {}
        self._lock = threading.Condition()
        self.ended: list[ActorUse] = []  # the actors of groups already ended

    def backend(self, ref: str) -> Backend:
        with self._lock:
            group = self._groups.get(ref)
            if group is None:
                if not self.settings.keep_models_loaded:
                    while any(g.busy for g in self._groups.values()):
                        self._lock.wait(timeout=0.5)  # another lane's round on the resident model ends first
                    self.release_all()
                group = self._groups[ref] = self._start(ref)
            return group

    def _start(self, ref: str) -> ActorGroup:
        use = self._use(ref)
        context = min(self.settings.n_ctx, self.sequence_context() if self.sequence_context else self.settings.n_ctx)
        group = ActorGroup.start(self._ray, self.settings, ref, (use.name, use.model_id, context), self._plan,
                                 self._notify)  # fmt: skip
        use.loads += self._plan.actors
        infos = group.uses
        use.offloaded, use.placement, use.threads = infos[0].offloaded, infos[0].placement, infos[0].threads
        self.max_resident = max(self.max_resident, len(self._groups) + 1)
        return group

    @property
    def resident(self) -> list[str]:
        return list(self._groups)

    @property
    def actors(self) -> list[ActorUse]:
        """Every actor of the run: of the groups ended, then of those still running."""
        groups = list(self._groups.values())  # a snapshot: lanes ask for speeds while a group may start
        return self.ended + [use for group in groups for use in group.uses]

    def stats(self) -> ModelStats:
        return _totals(self.actors)

    def release(self, ref: str) -> None:
        group = self._groups.pop(ref, None)
        if group is None:
            return
        try:
            group.close()
        finally:
            use, actors = self.usage[ref], group.uses
            use.loads += sum(a.restarts for a in actors)
            use.calls += sum(a.calls for a in actors)
            use.prompt_tokens += sum(a.prompt_tokens for a in actors)
            use.completion_tokens += sum(a.completion_tokens for a in actors)
            use.seconds += sum(a.seconds for a in actors)
            use.worker_peak_rss_mb = max((a.worker_peak_rss_mb or 0.0 for a in actors), default=0.0) or None
            self.ended.extend(actors)

    def release_all(self) -> None:
        for ref in list(self._groups):
            self.release(ref)

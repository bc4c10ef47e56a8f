"""Running extractors over a batch of chunks: cache, jobs in rounds, validation, retries, failures.

Jobs go to the backend a round at a time, grouped by chunk (so the llama.cpp backend evaluates each chunk's
prefix once, and the parallel backend decodes the whole round together). Extractors that follow up on the
others' results (``Extractor.follow``: the QA validation pass) run in a second settling, once those results
are in. A reply that does not validate is
asked for again, with the validation error, in the next round; when retries run out the failure is recorded
on the chunk with the raw reply: never an empty result that looks like success.

An extractor may have a backend (a model) of its own. ``run(..., only=backend)`` then does one model's share
of the work: its results land in the cache (its failures in memory, for the rest of the run), so the full
``run`` that follows, with another model resident, finds them there instead of loading this model again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, Field, ValidationError

from kg_etl.errors import ExtractionError
from kg_etl.extract.base import Backend, ChunkExtraction, ExtractionCache, ExtractionFailure, Extractor, Job, Reply
from kg_etl.extract.echo import echoed
from kg_etl.extract.summary import SUMMARY, Summary, reduce_groups, reduce_messages
from kg_etl.llm.grammar import parse_reply
from kg_etl.llm.prompt import chunk_messages, retry_messages
from kg_etl.models import Chunk, content_id

__all__ = ["REDUCE_BUDGET", "BatchExtractor", "DocumentSummary", "OnProgress"]

# Tokens of chunk summaries merged per reduce call: with instructions and reply, well inside a 4k context.
REDUCE_BUDGET = 1500


class DocumentSummary(BaseModel):
    """A document's summary and how many reduce rounds built it."""

    summary: str
    rounds: int = Field(ge=0)
    chunk_summaries: int = Field(ge=0)


@dataclass
class _Task:
    """One extractor on one chunk (or one QA pair), through its retries."""

    out: ChunkExtraction
    extractor: Extractor
    messages: list[BaseMessage]
    key: str
    accept: Callable[[BaseModel], None]
    attempt: int = 1
    # The instructions of a chunk extractor whose free text must come from the chunk, not from them.
    instructions: str | None = None


class BatchExtractor:
    """Runs extractors over chunks with one backend, a cache, and bounded retries."""

    def __init__(
        self,
        backend: Backend,
        extractors: Sequence[Extractor],
        *,
        retries: int = 2,
        cache: ExtractionCache | None = None,
        backends: Mapping[str, Backend] | None = None,
    ) -> None:
        """``backend`` runs every extractor that ``backends`` (extractor name -> backend) does not name."""
        self.backend = backend
        self.backends = dict(backends or {})
        self.extractors = list(extractors)
        self.retries = retries
        self.cache = cache
        self._failed: dict[str, ExtractionFailure] = {}  # by key: not asked again in this run
        # By extractor: replies valid on the first try, valid after retries, failed (cache hits not counted).
        self.outcomes: dict[str, Counter[str]] = {}
        # Told what the model is doing (e.g. "facts, keywords") and how many replies of how many are in.
        self.on_progress: OnProgress | None = None

    def backend_for(self, extractor: Extractor) -> Backend:
        return self.backends.get(extractor.name, self.backend)

    # -- chunks ------------------------------------------------------------------------------------------

    def run(self, chunks: Sequence[Chunk], source: str, *, only: Backend | None = None) -> list[ChunkExtraction]:
        """Every extractor over every chunk, then the follow-up extractors (QA validation) on their results.

        With ``only``, jobs for other backends are left undone (cached results are still used): the
        returned extractions are then partial, for warming the cache, not for writing.
        """
        outs = [ChunkExtraction(chunk=chunk) for chunk in chunks]
        first = [ex for ex in self.extractors if ex.follow is None]
        self._settle([self._chunk_task(out, ex, source) for out in outs for ex in first], only)
        for follower in (ex for ex in self.extractors if ex.follow is not None):
            self._settle([task for out in outs for task in self._follow_tasks(out, follower, source)], only)
        return outs

    def _chunk_task(self, out: ChunkExtraction, extractor: Extractor, source: str) -> _Task:
        def accept(result: BaseModel) -> None:
            out.results[extractor.name] = result
            out.models[extractor.name] = self.backend_for(extractor).model_id

        instructions = extractor.instructions(out.chunk.text_hash)
        return _Task(
            out,
            extractor,
            chunk_messages(out.chunk, source, instructions),
            self._key(out.chunk.text_hash, extractor),
            accept,
            instructions=instructions,
        )

    def _follow_tasks(self, out: ChunkExtraction, extractor: Extractor, source: str) -> list[_Task]:
        assert extractor.follow is not None
        asks = extractor.follow(out, out.chunk.text)
        if asks:
            out.models[extractor.name] = self.backend_for(extractor).model_id
        return [
            _Task(
                out,
                extractor,
                chunk_messages(out.chunk, source, ask.instructions),
                self._key(out.chunk.text_hash, extractor, *ask.key),
                ask.accept,
            )
            for ask in asks
        ]

    # -- documents ---------------------------------------------------------------------------------------

    def summarise_document(
        self, summaries: Sequence[str], source: str, count_tokens: Callable[[str], int]
    ) -> DocumentSummary | ExtractionFailure:
        """Reduce chunk summaries to one: groups that fit the context, summarised, until one is left.

        Runs on the summary extractor's backend; the same summaries in the same order are cache hits.
        """
        level, rounds = list(summaries), 0
        holder = ChunkExtraction(chunk=_DOCUMENT_CHUNK)
        while len(level) > 1:
            rounds += 1
            groups = reduce_groups(level, count_tokens, REDUCE_BUDGET)
            if len(groups) == len(level):  # every summary alone in its group: pair them so each round shrinks
                groups = [level[i : i + 2] for i in range(0, len(level), 2)]
            merged: list[str] = [""] * len(groups)  # by group: cached groups resolve before the others
            tasks = []
            for i, group in enumerate(groups):

                def accept(result: BaseModel, i: int = i, merged: list[str] = merged) -> None:
                    assert isinstance(result, Summary)
                    merged[i] = result.summary

                key = self._key(content_id(*group), SUMMARY, "document")
                tasks.append(_Task(holder, SUMMARY, reduce_messages(source, group), key, accept))
            self._settle(tasks)
            if holder.failures:
                return holder.failures[0]
            level = merged
        return DocumentSummary(summary=level[0] if level else "", rounds=rounds, chunk_summaries=len(summaries))

    # -- the loop ----------------------------------------------------------------------------------------

    def _key(self, text_hash: str, extractor: Extractor, *extra: str) -> str:
        """Input text, extractor and its version, model, and any per-item input: what fixes a result."""
        model_id = self.backend_for(extractor).model_id
        return content_id(text_hash, extractor.name, extractor.version, model_id, *extra)

    def _settle(self, tasks: list[_Task], only: Backend | None = None) -> None:
        pending = [task for task in tasks if not self._from_cache(task)]
        if only is not None:
            pending = [task for task in pending if self.backend_for(task.extractor) is only]
        progress = _Progress(self.on_progress, len(pending))
        while pending:
            retries = [
                retry for group in _by_backend(pending, self.backend_for) for retry in self._round(*group, progress)
            ]
            progress.total += len(retries)
            pending = retries

    def _round(self, backend: Backend, tasks: list[_Task], progress: _Progress | None = None) -> list[_Task]:
        """One round of jobs on one backend; returns the tasks to ask again, in their order.

        Each reply is handled (validated, cached) as it arrives, not when the round ends: a crash or a
        Ctrl-C in the middle of a round then loses only the replies still being generated.
        """
        retries: dict[int, _Task] = {}
        handled: set[int] = set()

        stage = _stage(tasks)
        if progress is not None:
            progress.report(stage)

        def arrived(i: int, reply: Reply) -> None:
            handled.add(i)
            retry = self._handle(tasks[i], reply)
            if retry is not None:
                retries[i] = retry
            if progress is not None:
                progress.done += 1
                progress.report(stage)

        replies = backend.run(
            [Job(tuple(t.messages), t.extractor.schema, t.out.chunk.text) for t in tasks], on_reply=arrived
        )
        for i, reply in enumerate(replies):  # a backend that hands over nothing early still gets each handled
            if i not in handled:
                arrived(i, reply)
        return [retries[i] for i in sorted(retries)]

    def _from_cache(self, task: _Task) -> bool:
        failure = self._failed.get(task.key)
        if failure is not None:
            task.out.failures.append(failure)
            return True
        raw = self.cache.get(task.key) if self.cache is not None else None
        if raw is None:
            return False
        try:
            result = task.extractor.schema.model_validate_json(raw)
        except ValidationError:  # garbled, or written by an older schema: a miss, and the entry goes
            assert self.cache is not None
            self.cache.discard(task.key)
            return False
        task.accept(result)
        return True

    def _handle(self, task: _Task, reply: Reply) -> _Task | None:
        """Accept a valid reply; return the task to ask again, or record the failure when out of retries."""
        task.out.llm_calls += 1
        task.out.prompt_tokens += reply.prompt_tokens
        try:
            result = _parse(task.extractor.schema, reply)
            _check_not_echoed(task, result)
        except ExtractionError as e:
            if task.attempt <= self.retries:
                return replace(
                    task, messages=retry_messages(task.messages, reply.text, str(e)), attempt=task.attempt + 1
                )
            failure = ExtractionFailure(
                extractor=task.extractor.name, error=str(e), raw=reply.text, attempts=task.attempt
            )
            task.out.failures.append(failure)
            self._failed[task.key] = failure
            self._outcome(task, "failed")
            return None
        task.accept(result)
        self._outcome(task, "first_try" if task.attempt == 1 else "after_retries")
        if self.cache is not None:
            self.cache.put(task.key, result.model_dump_json())
        return None

    def _outcome(self, task: _Task, outcome: str) -> None:
        self.outcomes.setdefault(task.extractor.name, Counter())[outcome] += 1


OnProgress = Callable[[str, int, int], None]


@dataclass
class _Progress:
    """Replies received of those asked for in one settling, told to ``on_progress`` as they come in."""

    on_progress: OnProgress | None
    total: int
    done: int = 0

    def report(self, stage: str) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, self.done, self.total)


def _stage(tasks: Sequence[_Task]) -> str:
    """What a round is about, for the progress display: its extractors, or the document summary."""
    if all(task.out.chunk is _DOCUMENT_CHUNK for task in tasks):
        return "document summary"
    return ", ".join(dict.fromkeys(t.extractor.shown_as for t in tasks))


def _by_backend(tasks: list[_Task], backend_for: Callable[[Extractor], Backend]) -> list[tuple[Backend, list[_Task]]]:
    """Tasks grouped by backend, in order of first appearance (a backend's jobs stay in their order)."""
    groups: dict[int, tuple[Backend, list[_Task]]] = {}
    for task in tasks:
        backend = backend_for(task.extractor)
        groups.setdefault(id(backend), (backend, []))[1].append(task)
    return list(groups.values())


def _check_not_echoed(task: _Task, result: BaseModel) -> None:
    """Raises ExtractionError for a reply that repeats the instructions or a placeholder (``extract.echo``)."""
    if task.instructions is None:
        return
    copied = echoed(result, task.instructions, task.out.chunk.text)
    if copied is not None:
        raise ExtractionError(
            f"the reply repeats the prompt, not the excerpt ({copied[:60]!r}); take every value from the excerpt",
            attempts=task.attempt,
        )


def _parse(schema: type[BaseModel], reply: Reply) -> BaseModel:
    if reply.error is not None:
        raise ExtractionError(reply.error, raw=reply.text, attempts=1)
    if reply.parsed is not None:
        return reply.parsed
    return parse_reply(schema, reply.text, reply.finish_reason)


# Document-level work has no chunk of its own; its failures are collected on this stand-in.
_DOCUMENT_CHUNK = Chunk(
    id="document", doc_id="document", index=0, text="", page_start=1, page_end=1, char_start=0, char_end=0, n_tokens=0
)

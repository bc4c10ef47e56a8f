"""One model, loaded once, over evaluation texts: the ingest's own extractor loop, without a graph or a cache.

Each text is one chunk (benchmark texts are short). The work runs exactly as in ``kg-etl ingest`` (the same
prompts, grammar, retries, state reuse and batched decoding, in a worker process), so what is measured
here is what an ingest would produce. Nothing is cached: a second run measures the model again.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.config import IngestSettings
from kg_etl.defaults import CHUNK_TOKENS
from kg_etl.errors import ExtractionError
from kg_etl.extract.base import ChunkExtraction, ExtractionFailure, Extractor, Job
from kg_etl.extract.run import BatchExtractor
from kg_etl.llm.grammar import parse_reply
from kg_etl.llm.pool import ModelPool, PooledBackend
from kg_etl.llm.prompt import chunk_messages
from kg_etl.models import Chunk, content_id
from kg_etl.pipeline import check_models, check_settings, run_extractors, sequence_context

__all__ = ["EvalItem", "EvalModel", "FailureSample", "Outcomes", "RunFigures"]

_T = TypeVar("_T")


class EvalItem(BaseModel):
    """One evaluation text and the id its scores refer to.

    The prompt shows no title: benchmark texts have none, and the same prompt for every text keeps the
    batch together (an ingest shows the document's title, which helps a model a little, if at all).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    text: str

    def chunk(self) -> Chunk:
        doc_id = content_id("eval", self.id)
        return Chunk(
            id=content_id(doc_id, 0, self.text),
            doc_id=doc_id,
            index=0,
            text=self.text,
            page_start=1,
            page_end=1,
            char_start=0,
            char_end=len(self.text),
            n_tokens=0,
        )


class Outcomes(BaseModel):
    """How replies fared against their schema: valid at once, valid after a retry with the error, or failed."""

    first_try: int = 0
    after_retries: int = 0
    failed: int = 0

    @classmethod
    def of(cls, counts: Counter[str]) -> Outcomes:
        return cls(**{key: counts.get(key, 0) for key in ("first_try", "after_retries", "failed")})


class FailureSample(BaseModel):
    """Why extractions failed: each distinct error (its first line), how often, and one raw reply."""

    extractor: str
    error: str
    count: int
    raw: str

    @classmethod
    def of(cls, failures: Sequence[ExtractionFailure], top: int = 10) -> list[FailureSample]:
        groups: dict[tuple[str, str], list[ExtractionFailure]] = {}
        for failure in failures:
            groups.setdefault((failure.extractor, failure.error.splitlines()[0][:200]), []).append(failure)
        ranked = sorted(groups.items(), key=lambda item: -len(item[1]))[:top]
        return [cls(extractor=e, error=err, count=len(fs), raw=fs[0].raw[:300]) for (e, err), fs in ranked]


class RunFigures(BaseModel):
    """What the model did: calls, tokens and time, per text as well as in all."""

    model: str
    texts: int
    llm_calls: int = 0
    prompt_tokens: int = Field(default=0, description="prompt tokens evaluated (a reused prefix is not counted)")
    completion_tokens: int = 0
    seconds: float = Field(default=0.0, description="wall time of the work, the model's load excluded")
    load_seconds: float = 0.0

    @property
    def seconds_per_text(self) -> float:
        return self.seconds / self.texts if self.texts else 0.0

    @property
    def prompt_tokens_per_text(self) -> float:
        return self.prompt_tokens / self.texts if self.texts else 0.0


class EvalModel:
    """A model in its worker process for an evaluation; use as a context manager (the worker ends on exit)."""

    def __init__(self, settings: IngestSettings, notify: Callable[[str], None] | None = None) -> None:
        check_settings(settings)
        check_models(settings)
        self.settings = settings
        self.pool = ModelPool(settings, notify)
        self.backend = PooledBackend(self.pool, settings.model)
        # The worker's context is sized once, when it starts, for every extractor the settings name: a later
        # call for another extractor must not find it too small.
        planned = run_extractors(settings)
        chunk_tokens = settings.chunk_tokens or CHUNK_TOKENS
        self.pool.sequence_context = lambda: sequence_context(planned, chunk_tokens, self._count)
        self.name = self.pool.path(settings.model).stem
        self.outcomes: dict[str, Counter[str]] = {}
        self.failures: list[ExtractionFailure] = []  # every failed extraction, with its error and raw reply
        self._seconds = 0.0

    def __enter__(self) -> EvalModel:
        return self

    def __exit__(self, *_: object) -> None:
        self.pool.close()

    def extract(
        self,
        items: Sequence[EvalItem],
        extractors: Sequence[Extractor],
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[ChunkExtraction]:
        """Every extractor over every text (one chunk each); a follow-up extractor (validate) after the others.

        ``extractors`` should be among those the settings name (``settings.extractors``): the context is
        sized for those.

        Texts go to the model a few at a time, as an ingest's batches do, so ``on_progress(done, total)``
        moves and a long evaluation shows where it is.
        """
        runner = BatchExtractor(self.backend, extractors, retries=self.settings.retries)
        outs: list[ChunkExtraction] = []
        step = max(1, self.settings.batch_size)
        for start in range(0, len(items), step):
            chunks = [item.chunk() for item in items[start : start + step]]
            outs += self._timed(functools.partial(runner.run, chunks, ""))
            if on_progress is not None:
                on_progress(len(outs), len(items))
        self.failures += [failure for out in outs for failure in out.failures]
        for name, counts in runner.outcomes.items():
            self.outcomes.setdefault(name, Counter()).update(counts)
        return outs

    def ask(self, questions: Sequence[tuple[EvalItem, str]], schema: type[BaseModel]) -> list[BaseModel | None]:
        """One reply per (text, instructions), parsed against ``schema``; None where it did not fit (no retry).

        For the evaluation's own questions to the model (is this fact stated?): their failures are counted
        by the caller, not retried, so they cannot inflate a score.
        """
        jobs = [Job(tuple(chunk_messages(item.chunk(), "", task)), schema) for item, task in questions]
        replies = self._timed(lambda: self.backend.run(jobs))
        results: list[BaseModel | None] = []
        for reply in replies:
            try:
                results.append(reply.parsed or parse_reply(schema, reply.text, reply.finish_reason))
            except ExtractionError:  # an invalid or cut-off reply: no answer, which the caller counts
                results.append(None)
        return results

    def figures(self, texts: int) -> RunFigures:
        stats = self.pool.stats()
        return RunFigures(
            model=self.name,
            texts=texts,
            llm_calls=stats.calls,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            seconds=round(self._seconds - self.pool.load_seconds, 2),
            load_seconds=round(self.pool.load_seconds, 2),
        )

    def _timed(self, work: Callable[[], _T]) -> _T:
        started = time.perf_counter()
        try:
            return work()
        finally:
            self._seconds += time.perf_counter() - started

    def _count(self, text: str) -> int:
        return self.pool.tokenizer(self.settings.model).count_tokens(text)

"""What every extractor shares: its definition, the retry loop, and the per-chunk run over one model.

All extractors of a chunk start from one evaluated prefix (system prompt + chunk text); each then only
evaluates its own instructions. A reply is grammar-constrained to its schema, validated by pydantic, and
asked for again with the validation error when it still fails; when retries run out the failure is
recorded with the raw reply, never turned into an empty result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict, Field

from kg_etl.errors import ExtractionError
from kg_etl.llm.grammar import llama_grammar, max_tokens_for, parse_reply
from kg_etl.llm.prompt import SPLIT, chunk_messages, retry_messages, to_chat_dicts
from kg_etl.llm.runtime import LocalModel, Prefix
from kg_etl.models import Chunk, content_id

__all__ = [
    "ChunkExtraction",
    "ChunkExtractor",
    "ExtractionCache",
    "ExtractionFailure",
    "Extractor",
]


@dataclass(frozen=True)
class Extractor:
    """One kind of extraction: a schema the reply must fit and the instructions that ask for it.

    ``version`` is part of the cache key: change it whenever the task or schema changes meaning.
    """

    name: str
    version: str
    schema: type[BaseModel]
    task: str


class ExtractionFailure(BaseModel):
    """An extractor that gave no valid reply for a chunk within its retries."""

    model_config = ConfigDict(frozen=True)

    extractor: str
    error: str
    raw: str = Field(description="the last reply, as the model wrote it")
    attempts: int


class ChunkExtraction(BaseModel):
    """Everything extracted from one chunk: valid results by extractor name, and failures."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chunk: Chunk
    results: dict[str, BaseModel] = Field(default_factory=dict)
    failures: list[ExtractionFailure] = Field(default_factory=list)
    prompt_tokens: int = Field(default=0, description="prompt tokens evaluated for this chunk")
    llm_calls: int = 0


class ExtractionCache(Protocol):
    """Stored results by key, so unchanged chunks are never sent to the model twice."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


class ChunkExtractor:
    """Runs a set of extractors over chunks with one resident model."""

    def __init__(
        self,
        model: LocalModel,
        extractors: Sequence[Extractor],
        *,
        model_id: str,
        retries: int = 2,
        cache: ExtractionCache | None = None,
    ) -> None:
        self.model = model
        self.extractors = list(extractors)
        self.model_id = model_id
        self.retries = retries
        self.cache = cache

    def cache_key(self, chunk: Chunk, extractor: Extractor) -> str:
        """Chunk text, extractor and its version, and the model: what determines a result."""
        return content_id(chunk.text_hash, extractor.name, extractor.version, self.model_id)

    def run(self, chunk: Chunk, source: str) -> ChunkExtraction:
        """Every extractor over ``chunk``; cached results are reused without touching the model."""
        out = ChunkExtraction(chunk=chunk)
        prefix: Prefix | None = None
        for extractor in self.extractors:
            cached = self._cached(chunk, extractor)
            if cached is not None:
                out.results[extractor.name] = cached
                continue
            messages = chunk_messages(chunk, source, extractor.task)
            if prefix is None:
                prefix = self.model.evaluate_prefix(self._render_split(messages)[0])
                out.prompt_tokens += len(prefix.tokens)
            self._extract(extractor, messages, prefix, out)
        return out

    def _cached(self, chunk: Chunk, extractor: Extractor) -> BaseModel | None:
        if self.cache is None:
            return None
        raw = self.cache.get(self.cache_key(chunk, extractor))
        return None if raw is None else extractor.schema.model_validate_json(raw)

    def _render_split(self, messages: Sequence[BaseMessage]) -> tuple[str, str]:
        prefix, _, suffix = self.model.render(to_chat_dicts(messages)).partition(SPLIT)
        return prefix, suffix

    def _extract(self, extractor: Extractor, messages: list[BaseMessage], prefix: Prefix,
                 out: ChunkExtraction) -> None:
        grammar: Any = llama_grammar(extractor.schema)
        budget = max_tokens_for(extractor.schema)
        raw, error = "", ""
        attempts = self.retries + 1
        for _ in range(attempts):
            completion = self.model.complete(self._render_split(messages)[1], prefix=prefix, grammar=grammar,
                                             max_tokens=budget)
            out.prompt_tokens += completion.prompt_tokens
            out.llm_calls += 1
            raw = completion.text
            try:
                result = parse_reply(extractor.schema, raw, completion.finish_reason)
            except ExtractionError as e:
                error = str(e)
                messages = retry_messages(messages, raw, error)
                continue
            out.results[extractor.name] = result
            if self.cache is not None:
                self.cache.put(self.cache_key(out.chunk, extractor), result.model_dump_json())
            return
        out.failures.append(ExtractionFailure(extractor=extractor.name, error=error, raw=raw, attempts=attempts))

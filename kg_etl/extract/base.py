"""What every extractor shares: its definition, the jobs it sends to a model backend, and its results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict, Field

from kg_etl.models import Chunk

__all__ = [
    "Ask",
    "Backend",
    "ChunkExtraction",
    "ExtractionCache",
    "ExtractionFailure",
    "Extractor",
    "Job",
    "OnReply",
    "Reply",
    "once_each",
]


T = TypeVar("T")


def once_each(items: Sequence[T], key: Callable[[T], str]) -> list[T]:
    """``items`` without repeats (by ``key``), first mentions kept: greedy small models repeat an item up to
    a list's limit (SmolLM2-135M wrote one sentence six times), which says it once."""
    seen: set[str] = set()
    unique = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            unique.append(item)
    return unique


@dataclass(frozen=True)
class Ask:
    """One question a follow-up extractor puts about a chunk's earlier results (e.g. one per QA pair).

    ``key`` tells this question from the chunk's others in the cache; ``accept`` takes the valid reply.
    """

    instructions: str
    key: tuple[str, ...]
    accept: Callable[[BaseModel], None]


# A follow-up extractor's questions about one chunk, given what the chunk's extractors found (an empty list
# where there is nothing to ask); it may set up the result that ``accept`` fills in.
Follow = Callable[["ChunkExtraction", str], list[Ask]]


@dataclass(frozen=True)
class Extractor:
    """One kind of extraction: a schema the reply must fit and the instructions that ask for it.

    ``version`` is part of the cache key: change it whenever the task or schema changes meaning. An
    extractor with ``follow`` runs after the others, on what they found: the QA validation pass asks one
    question per QA pair. ``label`` is what the progress display calls its work.
    """

    name: str
    version: str
    schema: type[BaseModel]
    task: str
    # Instructions that differ by chunk (keyed by its text hash), where the same text for every chunk would
    # bias a small model, e.g. a label list whose first labels always win.
    task_for: Callable[[str], str] | None = None
    follow: Follow | None = None
    label: str = ""

    def instructions(self, text_hash: str) -> str:
        """The instructions for one chunk: the same for the same text, so the cache and prefix hold."""
        return self.task_for(text_hash) if self.task_for is not None else self.task

    @property
    def shown_as(self) -> str:
        """The extractor's name in progress messages."""
        return self.label or self.name


@dataclass(frozen=True)
class Job:
    """One request to a model: chat messages (the shared prefix ends at ``prompt.SPLIT``) and a schema.

    ``source`` is the chunk text the schema's copied fields (``grammar.COPY``) take their spans from.
    """

    messages: tuple[BaseMessage, ...]
    schema: type[BaseModel]
    source: str = ""


@dataclass(frozen=True)
class Reply:
    """A backend's answer to a job: the raw text, and the parsed result where the backend parsed it."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    parsed: BaseModel | None = None
    error: str | None = None


# Called with a job's index and its reply as soon as the reply arrives.
OnReply = Callable[[int, Reply], None]


class Backend(Protocol):
    """Runs jobs on a model: a llama.cpp model (its worker process), or any LangChain chat model."""

    @property
    def model_id(self) -> str:
        """Identifies the model in cache keys: another model gives other answers."""
        ...

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        """One reply per job, in order; ``on_reply(i, reply)`` is called for each as it arrives.

        Replies handed to ``on_reply`` are kept (cached) at once, so a crash or Ctrl-C in the middle of a
        round loses only the replies still being generated.
        """
        ...


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
    models: dict[str, str] = Field(default_factory=dict, description="result name -> id of the model that made it")
    prompt_tokens: int = Field(default=0, description="prompt tokens evaluated for this chunk")
    llm_calls: int = 0


class ExtractionCache(Protocol):
    """Stored results by key, so unchanged chunks are never sent to the model twice."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def discard(self, key: str) -> None:
        """Forget an entry that could not be used; it is extracted again."""
        ...

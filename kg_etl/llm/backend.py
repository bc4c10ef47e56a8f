"""Backends that run extraction jobs: a llama.cpp model (in this process or in its worker), or any LangChain chat model.

A job becomes a ``ChatRequest`` (chat messages, the GBNF grammar of its schema, a token budget): plain data,
so it can cross into the model's worker process, where ``gen_request`` renders it with the model's own chat
template and splits it where the shared prefix ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel

from kg_etl.extract.base import Job, OnReply, Reply
from kg_etl.llm.grammar import max_tokens_for, schema_grammar
from kg_etl.llm.prompt import SPLIT, to_chat_dicts
from kg_etl.llm.protocol import ChatRequest, gen_request
from kg_etl.llm.runtime import Completion, GenRequest, LocalModel, OnDone, Sampling

__all__ = ["ChatRequest", "Engine", "LangChainBackend", "LlamaBackend", "chat_request", "gen_request", "to_reply"]


class Engine(Protocol):
    """Generates completions for requests: ``LocalModel`` one at a time, ``ParallelDecoder`` together."""

    def generate(
        self, requests: Sequence[GenRequest], sampling: Sampling | None = None, on_done: OnDone | None = None
    ) -> list[Completion]: ...


def chat_request(job: Job) -> ChatRequest:
    """The job's messages, its schema's grammar (for its source) and the longest reply that schema admits."""
    messages = tuple((m["role"], m["content"]) for m in to_chat_dicts(job.messages))
    return ChatRequest(messages, schema_grammar(job.schema, job.source), max_tokens_for(job.schema))


def to_reply(c: Completion) -> Reply:
    return Reply(
        text=c.text, finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens
    )


class LlamaBackend:
    """Jobs on a model loaded in this process: prompts rendered with its chat template, replies grammar-constrained.

    ``kg-etl ingest`` runs its models in worker processes instead (``kg_etl.llm.worker``); this one serves
    the library, the LangChain adapter, benchmarks and the worker itself.
    """

    def __init__(self, model: LocalModel, engine: Engine | None = None) -> None:
        self.model = model
        self.engine: Engine = engine or model

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def request(self, job: Job) -> GenRequest:
        """The job as a generation request, split where the shared prefix (system prompt + chunk) ends."""
        return gen_request(self.model, chat_request(job))

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        def done(i: int, c: Completion) -> None:
            if on_reply is not None:
                on_reply(i, to_reply(c))

        return [to_reply(c) for c in self.engine.generate([self.request(job) for job in jobs], on_done=done)]


class LangChainBackend:
    """Jobs on any LangChain chat model that can return structured output (Ollama, OpenAI-compatible...)."""

    def __init__(self, chat_model: BaseChatModel, model_id: str | None = None) -> None:
        self.chat_model = chat_model
        self._model_id = model_id or f"langchain:{type(chat_model).__name__}:{_model_name(chat_model)}"

    @property
    def model_id(self) -> str:
        return self._model_id

    def run(self, jobs: Sequence[Job], on_reply: OnReply | None = None) -> list[Reply]:
        replies = []
        for i, job in enumerate(jobs):
            replies.append(self._one(job))
            if on_reply is not None:
                on_reply(i, replies[-1])
        return replies

    def _one(self, job: Job) -> Reply:
        runnable = self.chat_model.with_structured_output(job.schema, include_raw=True)
        # The SPLIT marker only matters to the llama.cpp backend's prefix reuse; other models never see it.
        messages = [m.model_copy(update={"content": str(m.content).replace(SPLIT, "")}) for m in job.messages]
        out: Any = runnable.invoke(messages)
        raw = out.get("raw")
        text = str(getattr(raw, "content", "") or getattr(raw, "additional_kwargs", "") or "")
        error = out.get("parsing_error")
        parsed = out.get("parsed")
        return Reply(
            text=text,
            parsed=parsed if error is None else None,
            error=None if error is None and parsed is not None else str(error or "no structured reply"),
        )


def _model_name(chat_model: BaseChatModel) -> str:
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(chat_model, attribute, None)
        if isinstance(value, str):
            return value
    return "default"

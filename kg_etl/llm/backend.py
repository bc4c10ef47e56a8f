"""Backends that run extraction jobs: the resident llama.cpp model, or any LangChain chat model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel

from kg_etl.extract.base import Job, Reply
from kg_etl.llm.grammar import max_tokens_for, schema_grammar
from kg_etl.llm.prompt import SPLIT, to_chat_dicts
from kg_etl.llm.runtime import Completion, GenRequest, LocalModel, Sampling

__all__ = ["Engine", "LangChainBackend", "LlamaBackend"]


class Engine(Protocol):
    """Generates completions for requests: ``LocalModel`` one at a time, ``ParallelDecoder`` together."""

    def generate(self, requests: Sequence[GenRequest], sampling: Sampling | None = None) -> list[Completion]: ...


class LlamaBackend:
    """Jobs on the resident model: prompts rendered with its chat template, replies grammar-constrained."""

    def __init__(self, model: LocalModel, engine: Engine | None = None) -> None:
        self.model = model
        self.engine: Engine = engine or model

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def request(self, job: Job) -> GenRequest:
        """The job as a generation request, split where the shared prefix (system prompt + chunk) ends."""
        prefix, _, suffix = self.model.render(to_chat_dicts(job.messages)).partition(SPLIT)
        return GenRequest(
            prefix=prefix, suffix=suffix, grammar=schema_grammar(job.schema), max_tokens=max_tokens_for(job.schema)
        )

    def run(self, jobs: Sequence[Job]) -> list[Reply]:
        completions = self.engine.generate([self.request(job) for job in jobs])
        return [
            Reply(
                text=c.text,
                finish_reason=c.finish_reason,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
            )
            for c in completions
        ]


class LangChainBackend:
    """Jobs on any LangChain chat model that can return structured output (Ollama, OpenAI-compatible...)."""

    def __init__(self, chat_model: BaseChatModel, model_id: str | None = None) -> None:
        self.chat_model = chat_model
        self._model_id = model_id or f"langchain:{type(chat_model).__name__}:{_model_name(chat_model)}"

    @property
    def model_id(self) -> str:
        return self._model_id

    def run(self, jobs: Sequence[Job]) -> list[Reply]:
        return [self._one(job) for job in jobs]

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

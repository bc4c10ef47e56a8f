"""A LangChain chat model over the resident llama.cpp model, with grammar-enforced structured output.

``ChatLocalLFM2(model=LocalModel(...))`` is a regular ``BaseChatModel``: ``invoke`` chats, and
``with_structured_output(PydanticModel)`` constrains the reply with kg-etl's own grammar for that schema,
so the output always parses (no tool-calling needed, which small local models do poorly).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import BaseModel, ConfigDict, ValidationError

from kg_etl.llm.grammar import max_tokens_for, schema_grammar
from kg_etl.llm.prompt import to_chat_dicts
from kg_etl.llm.runtime import GenRequest, LocalModel

__all__ = ["ChatLocalLFM2"]


class ChatLocalLFM2(BaseChatModel):
    """LangChain's chat interface to a ``LocalModel`` (kg-etl's resident llama.cpp model)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: LocalModel
    max_tokens: int = 512

    @property
    def _llm_type(self) -> str:
        return "kg-etl-llama-cpp"

    @property
    def model_name(self) -> str:
        return self.model.name

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text, finish = self._complete(messages, kwargs.get("grammar"), int(kwargs.get("max_tokens", self.max_tokens)))
        message = AIMessage(content=text, response_metadata={"finish_reason": finish})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _complete(self, messages: list[BaseMessage], grammar: str | None, max_tokens: int) -> tuple[str, str]:
        prompt = self.model.render(to_chat_dicts(messages))
        completion = self.model.generate(
            [GenRequest(prefix="", suffix=prompt, grammar=grammar, max_tokens=max_tokens)]
        )[0]
        return completion.text, completion.finish_reason

    def with_structured_output(  # type: ignore[override]
        self, schema: type[BaseModel], *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Replies constrained by the grammar of ``schema`` and parsed into it."""
        grammar, budget = schema_grammar(schema), max_tokens_for(schema)

        def structured(value: LanguageModelInput) -> dict[str, Any] | BaseModel:
            messages = self._convert_input(value).to_messages()
            text, finish = self._complete(messages, grammar, budget)
            raw = AIMessage(content=text, response_metadata={"finish_reason": finish})
            try:
                parsed: BaseModel | None = schema.model_validate_json(text)
                error: Exception | None = None
            except ValidationError as e:
                if not include_raw:
                    raise
                parsed, error = None, e
            if include_raw:
                return {"raw": raw, "parsed": parsed, "parsing_error": error}
            assert parsed is not None
            return parsed

        return RunnableLambda(structured)

"""Prompts: the chunk text sits in a prefix that every extractor shares, so it is evaluated once per chunk."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, convert_to_openai_messages
from langchain_core.prompts import ChatPromptTemplate

from kg_etl.llm.protocol import SPLIT
from kg_etl.models import Chunk

__all__ = ["RETRY_ECHO_CHARS", "RETRY_ERROR_CHARS", "SPLIT", "chunk_messages", "retry_messages", "to_chat_dicts"]


SYSTEM = (
    "You are a precise information-extraction system. You read one excerpt of a document and answer "
    "with a single JSON object that follows the requested format exactly. Use only what the excerpt "
    "states; never invent facts. Keep every string short and self-contained."
)

CHUNK_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", SYSTEM),
        ("human", "Excerpt{source}, pages {pages}:\n\n{text}\n\n{split}{task}"),
    ]
)


def chunk_messages(chunk: Chunk, source: str, task: str) -> list[BaseMessage]:
    """The messages for one extractor over one chunk; everything before ``SPLIT`` is shared.

    ``source`` is the document's title, or "" for none: never its file name, which a small model copies
    into keywords and facts as if the excerpt said it.
    """
    pages = str(chunk.page_start) if chunk.page_start == chunk.page_end else f"{chunk.page_start}-{chunk.page_end}"
    title = source.replace(SPLIT, " ").strip()
    return CHUNK_PROMPT.format_messages(
        source=f' from "{title}"' if title else "",
        pages=pages,
        text=chunk.text.replace(SPLIT, " "),
        split=SPLIT,
        task=task,
    )


# How much of an invalid reply and of its error a retry repeats: enough to show the model its mistake, little
# enough that a retry prompt always fits the context the first one did (see pipeline.check_settings).
RETRY_ECHO_CHARS = 600
RETRY_ERROR_CHARS = 500


def retry_messages(messages: Sequence[BaseMessage], reply: str, error: str) -> list[BaseMessage]:
    """``messages`` plus the invalid reply and the validation error, asking for a corrected reply."""
    retry = ChatPromptTemplate.from_messages(
        [("ai", "{reply}"), ("human", "That reply is invalid: {error}\nReply again with corrected JSON only.")]
    )
    echo = reply if len(reply) <= RETRY_ECHO_CHARS else reply[:RETRY_ECHO_CHARS] + " ..."
    return [*messages, *retry.format_messages(reply=echo, error=error[:RETRY_ERROR_CHARS])]


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the ``{"role", "content"}`` dicts that chat templates take."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in convert_to_openai_messages(list(messages))]

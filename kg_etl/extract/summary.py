"""Summaries: one per chunk, and one per document reduced from the chunk summaries (map-reduce).

The reduce step groups consecutive summaries so each group fits the model's context, summarises each group,
and repeats on the results until one summary is left, so a 350-page document works like a 3-page one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, ConfigDict, Field

from kg_etl.extract.base import Extractor
from kg_etl.llm.prompt import SPLIT, SYSTEM

__all__ = ["DOCUMENT_SUMMARY_TASK", "SUMMARY", "Summary", "reduce_groups", "reduce_messages"]


class Summary(BaseModel):
    """A short summary."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(min_length=10, max_length=500, description="two to four plain sentences")


SUMMARY = Extractor(
    name="summary",
    version="2",
    schema=Summary,
    task=(
        "Summarise the excerpt in two to four plain sentences that keep its key names, numbers and claims. "
        'Answer with JSON: "summary" is the text.'
    ),
)

DOCUMENT_SUMMARY_TASK = (
    "Write one summary of this whole text in two to four plain sentences: its subject, main points and "
    'conclusions. Answer with JSON: "summary" is the text.'
)

REDUCE_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", SYSTEM),
        ("human", "Summaries of consecutive parts of a document{source}:\n\n{summaries}\n\n{split}{task}"),
    ]
)


def reduce_messages(source: str, summaries: Sequence[str]) -> list[BaseMessage]:
    """The prompt that merges consecutive summaries into one."""
    numbered = "\n".join(f"{i}. {text}" for i, text in enumerate(summaries, start=1))
    title = f' ("{source.strip()}")' if source.strip() else ""
    return REDUCE_PROMPT.format_messages(source=title, summaries=numbered, split=SPLIT, task=DOCUMENT_SUMMARY_TASK)


def reduce_groups(summaries: Sequence[str], count_tokens: Callable[[str], int], budget: int) -> list[list[str]]:
    """Consecutive groups of summaries, each within ``budget`` tokens and holding at least two where possible."""
    groups: list[list[str]] = [[]]
    used = 0
    for text in summaries:
        cost = count_tokens(text) + 4
        if groups[-1] and used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(text)
        used += cost
    return groups

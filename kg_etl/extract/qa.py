"""Question/answer pairs: a question the excerpt answers, the answer, and the evidence quoted from it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.extract.base import Extractor
from kg_etl.llm.grammar import COPY

# Most words of an evidence quote: a sentence, copied from the chunk (COPY), so every quote is verbatim.
QUOTE_WORDS = 40

__all__ = ["QA", "QUOTE_WORDS", "QAPair", "QAPairs"]


class QAPair(BaseModel):
    """One question the excerpt answers."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=10, max_length=200, description="a self-contained question, ending with ?")
    answer: str = Field(min_length=1, max_length=200, description="the answer, as the excerpt gives it")
    evidence: str = Field(
        min_length=10,
        max_length=300,
        description="a sentence copied word for word from the excerpt that supports the answer",
        json_schema_extra={COPY: QUOTE_WORDS},
    )


class QAPairs(BaseModel):
    """Question/answer pairs for one chunk."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[QAPair] = Field(min_length=1, max_length=3, description="one to three pairs")


QA = Extractor(
    name="qa",
    version="3",
    schema=QAPairs,
    task=(
        "Write one to three questions that the excerpt answers, each understandable without the excerpt, "
        "with its answer and, as evidence, a sentence copied exactly from the excerpt. Answer with JSON: "
        '"pairs" is a list of objects with "question", "answer" and "evidence".'
    ),
)

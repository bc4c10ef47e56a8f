"""Keywords: the terms a reader would search for, each with a relevance weight."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kg_etl.extract.base import Extractor, once_each
from kg_etl.llm.grammar import COPY

__all__ = ["KEYWORDS", "Keyword", "Keywords"]


class Keyword(BaseModel):
    """One key term."""

    model_config = ConfigDict(extra="forbid")

    # Copied from the chunk (COPY): a term the text does not contain cannot be one of its keywords.
    term: str = Field(
        min_length=2,
        max_length=40,
        description="a word or short phrase as it appears in the text",
        json_schema_extra={COPY: True},
    )
    relevance: float = Field(ge=0, le=1, description="0..1, how relevant the term is to the excerpt")


class Keywords(BaseModel):
    """The key terms of one chunk."""

    model_config = ConfigDict(extra="forbid")

    keywords: list[Keyword] = Field(min_length=1, max_length=8, description="one to eight key terms")

    @field_validator("keywords")
    @classmethod
    def _once_each(cls, keywords: list[Keyword]) -> list[Keyword]:
        """Each term once (the first, most relevant, mention)."""
        return once_each(keywords, lambda keyword: " ".join(keyword.term.casefold().split()))


KEYWORDS = Extractor(
    name="keywords",
    version="4",
    schema=Keywords,
    task=(
        "List the key terms of the excerpt (names, technical terms, concepts), each copied as it appears in the "
        'excerpt, most relevant first, each with a relevance between 0 and 1. Answer with JSON: "keywords" is '
        'a list of objects with "term" and "relevance".'
    ),
)

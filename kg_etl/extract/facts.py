"""Atomic facts: short self-contained statements, each optionally with a subject-predicate-object triple."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kg_etl.extract.base import Extractor, once_each
from kg_etl.llm.grammar import COPY, LOWER, never_null

__all__ = ["FACTS", "EntityType", "Fact", "Facts", "Triple"]


EntityType = Literal[
    "person", "organization", "location", "event", "concept", "technology", "product", "work", "law",
    "quantity", "date", "other",
]  # fmt: skip


class Triple(BaseModel):
    """A subject-predicate-object reading of a fact; the types keep same-named things apart.

    Subject and object are copied from the chunk (``COPY``): the grammar admits only its spans, so an
    entity is named as the text names it, never paraphrased or invented.
    """

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(
        min_length=1, max_length=60, description="the entity the fact is about", json_schema_extra={COPY: True}
    )
    subject_type: EntityType = Field(description="what kind of thing the subject is")
    predicate: str = Field(
        min_length=1,
        max_length=40,
        description="a short verb phrase, e.g. 'is part of'",
        json_schema_extra={LOWER: True},
    )
    object: str = Field(
        min_length=1, max_length=60, description="the other entity or value", json_schema_extra={COPY: True}
    )
    object_type: EntityType = Field(description="what kind of thing the object is")

    @field_validator("predicate")
    @classmethod
    def _lower(cls, predicate: str) -> str:
        """In lower case, as the graph stores it (a model without the grammar may write capitals)."""
        return predicate.lower()


class Fact(BaseModel):
    """One atomic fact stated in the excerpt."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(
        min_length=5, max_length=160, description="one self-contained sentence, understandable without the excerpt"
    )
    # Every fact is asked for its triple: where null was allowed, small models wrote it for nearly every fact.
    triple: Triple | None = Field(description="the fact as subject-predicate-object", json_schema_extra=never_null)

    @field_validator("triple")
    @classmethod
    def _no_degenerate_triple(cls, triple: Triple | None) -> Triple | None:
        """A triple that relates a thing to itself, or names an end as its predicate, says nothing: dropped.

        Small models fill every slot with the same name (SmolLM2-135M wrote subject, predicate and object
        "The Velvet Underground album"); the statement is kept, the graph gets no self-loop.
        """
        if triple is None:
            return None
        subject, predicate, obj = (_plain(part) for part in (triple.subject, triple.predicate, triple.object))
        return None if subject == obj or predicate in (subject, obj) else triple


class Facts(BaseModel):
    """The atomic facts of one chunk."""

    model_config = ConfigDict(extra="forbid")

    facts: list[Fact] = Field(max_length=6, description="the most important facts, at most 6")

    @field_validator("facts")
    @classmethod
    def _once_each(cls, facts: list[Fact]) -> list[Fact]:
        """Each statement once."""
        return once_each(facts, lambda fact: _plain(fact.statement))


def _plain(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .")


FACTS = Extractor(
    name="facts",
    version="5",
    schema=Facts,
    # No example values (small models copy them), and no field names or descriptions a model could copy as
    # values: SmolLM2-135M answered an earlier wording with {"statement": "facts", ...} for 11 of 30 texts. The
    # grammar fixes the JSON's shape, so the prompt only says, in plain words, what goes in it.
    task=(
        "List up to six facts that the excerpt states. Each fact is a short sentence from the excerpt, with its "
        "subject, predicate and object. Copy the subject and the object word for word from the excerpt; the "
        "predicate is a short verb phrase. Types: " + ", ".join(sorted(get_args(EntityType))) + "."
    ),
)

"""Atomic facts: short self-contained statements, each optionally with a subject-predicate-object triple."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.extract.base import Extractor

__all__ = ["FACTS", "EntityType", "Fact", "Facts", "Triple"]


EntityType = Literal[
    "person", "organization", "location", "event", "concept", "technology", "product", "work", "law",
    "quantity", "date", "other",
]  # fmt: skip


class Triple(BaseModel):
    """A subject-predicate-object reading of a fact; the types keep same-named things apart."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=60, description="the entity the fact is about")
    subject_type: EntityType = Field(description="what kind of thing the subject is")
    predicate: str = Field(min_length=1, max_length=40, description="a short verb phrase, e.g. 'is part of'")
    object: str = Field(min_length=1, max_length=60, description="the other entity or value")
    object_type: EntityType = Field(description="what kind of thing the object is")


class Fact(BaseModel):
    """One atomic fact stated in the excerpt."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(
        min_length=5, max_length=160, description="one self-contained sentence, understandable without the excerpt"
    )
    triple: Triple | None = Field(description="the fact as subject-predicate-object, or null if it has none")


class Facts(BaseModel):
    """The atomic facts of one chunk."""

    model_config = ConfigDict(extra="forbid")

    facts: list[Fact] = Field(max_length=6, description="the most important facts, at most 6")


FACTS = Extractor(
    name="facts",
    version="3",
    schema=Facts,
    # No example values: small models copy them into every answer. The grammar fixes the JSON's shape, so
    # the prompt only needs to say what goes where.
    task=(
        "List the atomic facts the excerpt states: each a short, self-contained sentence that names its "
        "subject explicitly (no 'it' or 'they'), and, where it fits, a subject-predicate-object triple whose "
        'subject and object are copied from the excerpt. Answer with JSON: "facts" is a list of objects with '
        '"statement" and "triple" (an object with "subject", "subject_type", "predicate", "object", '
        '"object_type", or null when the fact has no clear triple). Types: '
        + ", ".join(sorted(get_args(EntityType)))
        + "."
    ),
)

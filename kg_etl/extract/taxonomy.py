"""Hierarchical taxonomy: paths from a broad field to a specific topic, each node with an importance level."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kg_etl.extract.base import Extractor

__all__ = ["TAXONOMY", "Taxonomy", "TopicNode", "TopicPath"]


class TopicNode(BaseModel):
    """One level of a topic path."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=2, max_length=40, description="topic name, Title Case, no trailing punctuation")
    importance: int = Field(ge=1, le=5, description="how central this topic is to the excerpt: 1 minor .. 5 main")


class TopicPath(BaseModel):
    """Broad to specific: a field, a subfield, a topic."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[TopicNode] = Field(min_length=1, max_length=4, description="from the broadest to the most specific")


class Taxonomy(BaseModel):
    """The topic paths an excerpt belongs to."""

    model_config = ConfigDict(extra="forbid")

    paths: list[TopicPath] = Field(min_length=1, max_length=3, description="one to three topic paths")


TAXONOMY = Extractor(
    name="taxonomy",
    version="2",
    schema=Taxonomy,
    task=(
        "Place the excerpt in a topic hierarchy: give one to three paths from a broad field to the specific "
        "topic it is about, named from the excerpt's own subject matter, each node with an importance from 1 "
        '(minor) to 5 (the main subject). Answer with JSON: "paths" is a list of objects with "nodes", a list '
        'of objects with "name" and "importance", broadest first.'
    ),
)

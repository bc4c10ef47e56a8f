"""Categories: classification into a configurable label set; the grammar admits only labels from the set."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field, create_model

from kg_etl.config import DEFAULT_CATEGORIES
from kg_etl.errors import ConfigError
from kg_etl.extract.base import Extractor
from kg_etl.models import content_id

__all__ = ["DEFAULT_CATEGORIES", "categories_extractor", "document_categories"]


def categories_extractor(labels: Sequence[str] = DEFAULT_CATEGORIES) -> Extractor:
    """An extractor whose schema is an enum of ``labels`` (so the grammar can only emit those)."""
    labels = tuple(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if not labels or any(len(label) > 60 for label in labels):
        raise ConfigError("categories: give 1 or more labels of at most 60 characters each")
    label_type: Any = Literal[labels]  # a Literal built at run time: pydantic makes it an enum
    schema = create_model(
        "Categories",
        __config__=ConfigDict(extra="forbid"),
        labels=(list[label_type], Field(min_length=1, max_length=3, description="one to three categories")),
    )
    task = "Classify the excerpt into one to three of these categories, most fitting first: "

    def task_for(text_hash: str) -> str:
        # A new order for every chunk: in one fixed order a small model picks the first labels every time.
        order = sorted(labels, key=lambda label: content_id(text_hash, label))
        return task + "; ".join(order) + '. Answer with JSON: "labels" is a list of the chosen categories.'

    return Extractor(
        name="categories",
        # The label set is part of the version: another set gives other answers, so other cache entries.
        version="2-" + content_id(*labels)[:8],
        schema=schema,
        task=task,
        task_for=task_for,
    )


def document_categories(chunk_labels: Iterable[Sequence[str]], top: int = 3) -> list[tuple[str, float]]:
    """A document's categories from its chunks' votes: (label, share of chunks), most frequent first."""
    votes: Counter[str] = Counter()
    n = 0
    for labels in chunk_labels:
        n += 1
        votes.update(set(labels))  # one vote per chunk and label
    return [(label, round(count / n, 3)) for label, count in votes.most_common(top)] if n else []

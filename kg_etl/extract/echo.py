"""Replies that repeat the prompt instead of reading the excerpt: an example value, a placeholder, a label list.

Small models copy what the prompt shows them (one wrote the same example topic path for all 35 chunks of a
run; another filled every string with "..."). A reply whose free text is a placeholder, or a phrase of the
instructions that the excerpt does not contain, is not an extraction: it is asked for again with that
error, and recorded as a failure when retries run out. Values a schema fixes to a closed set (entity
types, category labels) are the instructions' words by design and are not checked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

__all__ = ["echoed"]

_PLACEHOLDERS = frozenset({"string", "text", "value", "example", "name", "term", "topic", "n/a", "todo", "tbd"})
# "...", "…", "---", "???": a placeholder a template shows, not text (other junk is not an echo of the prompt)
_PLACEHOLDER_MARKS = re.compile(r"[.\u2026\-_?\s]*")
_MIN_ECHO = 4  # shorter strings ("and", "it") are in any text


def echoed(result: BaseModel, instructions: str, source: str) -> str | None:
    """The first free-text value of ``result`` that repeats the instructions rather than ``source``, or None."""
    prompt, excerpt = _norm(instructions), _norm(source)
    for value in _free_text(result):
        text = _norm(value)
        if _PLACEHOLDER_MARKS.fullmatch(text) or text in _PLACEHOLDERS:
            return value
        if len(text) >= _MIN_ECHO and text in prompt and text not in excerpt:
            return value
    return None


def _free_text(model: BaseModel) -> Iterator[str]:
    """Every string value of ``model`` and its nested models, except fields typed as a closed set."""
    for name, field in type(model).model_fields.items():
        if _closed(field.annotation):
            continue
        yield from _strings(getattr(model, name))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, BaseModel):
        yield from _free_text(value)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _closed(annotation: Any) -> bool:
    """A Literal (or a list of one): the schema's own words, which the instructions list on purpose."""
    if get_origin(annotation) is Literal:
        return True
    return any(_closed(arg) for arg in get_args(annotation) if arg is not type(None))


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

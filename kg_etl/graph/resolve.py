"""Entity resolution: one node per real thing, every surface form kept as an alias.

Names are normalised (Unicode form, case, whitespace, punctuation, a leading article) into a key; the id is
the key *and* the entity type, so "Jaguar" the animal and "Jaguar" the company stay apart. Within a
document an acronym joins the entity it abbreviates ("WHO" -> "World Health Organization") when the types
agree. Topics merge across documents by their full path, keywords and categories by their normalised name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from kg_etl.models import content_id

__all__ = ["acronym", "entity_id", "name_key", "resolve_acronyms", "term_id", "topic_id", "topic_path_key"]

_POSSESSIVE = re.compile(r"'s\b")
_ARTICLE = re.compile(r"^(the|a|an)\s+")
_PUNCT = re.compile(r"[^\w\s&+#./-]+")
_SPACE = re.compile(r"\s+")


def name_key(name: str) -> str:
    """The comparison form of a name: NFKC, casefolded, no edge punctuation or leading article, one space."""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = _PUNCT.sub(" ", _POSSESSIVE.sub("", text.replace("\u2019", "'")))
    text = _SPACE.sub(" ", text).strip(" .-/")
    return _ARTICLE.sub("", text) or text


def entity_id(name: str, entity_type: str) -> str:
    """Same normalised name and type -> same entity; another type -> another entity."""
    return content_id("entity", entity_type, name_key(name))


def term_id(kind: str, name: str) -> str:
    """Ids of keywords and categories: by kind and normalised name."""
    return content_id(kind, name_key(name))


def topic_path_key(names: Iterable[str]) -> str:
    return " > ".join(name_key(n) for n in names)


def topic_id(names: Iterable[str]) -> str:
    """A topic is its whole path from the root: "Biology > Cells" and "Computing > Cells" differ."""
    return content_id("topic", topic_path_key(names))


def acronym(name: str) -> str:
    """Initials of a multi-word name ("World Health Organization" -> "who"), "" for a single word."""
    words = [w for w in name_key(name).split() if w not in {"of", "and", "for", "the", "&", "in", "on"}]
    return "".join(w[0] for w in words) if len(words) >= 2 else ""


def resolve_acronyms(names: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """For (name, type) pairs seen together, map an acronym's key to the key of the full name it stands for.

    Only unambiguous cases: exactly one full name of the same type has those initials.
    """
    names = list(names)
    by_initials: dict[tuple[str, str], set[str]] = {}
    for name, kind in names:
        initials = acronym(name)
        if initials:
            by_initials.setdefault((kind, initials), set()).add(name_key(name))
    mapping: dict[tuple[str, str], str] = {}
    for name, kind in names:
        key = name_key(name)
        full = by_initials.get((kind, key.replace(".", "")), set())
        if " " not in key and len(full) == 1:
            mapping[(kind, key)] = next(iter(full))
    return mapping

"""GBNF grammars that only admit JSON documents valid for a pydantic model, and bounded in length.

llama-cpp-python's own JSON-schema converter lets raw control characters into strings (pydantic's JSON
parser rejects them), ignores ``minimum``/``maximum`` and cannot stop ``max_tokens`` from cutting a reply
in half. This module builds the grammar itself from ``model.model_json_schema()``:

- every property is emitted, in declaration order (optional fields too: their values fit the schema);
- strings are ``"`` + ``char{minLength,maxLength}`` + ``"``: a char is one Basic Multilingual Plane code
  point other than ``"``, ``\\``, U+0000-U+001F and U+007F, or one short JSON escape (``\\n``, ``\\"``...).
  ``\\uXXXX`` escapes and characters beyond the BMP are left out on purpose: each character is then at most
  three UTF-8 bytes (not six), which halves the reply bound and so the context a reply must reserve;
- integers and numbers need both bounds; floats are written with at most three decimals;
- whitespace is at most one space, after ``{ [ , :`` and before ``} ]``: no endless newlines;
- every string and array is bounded, so the longest document is known: ``max_tokens_for`` returns it;
- a string field marked ``COPY`` takes, when a source text is given, only a span of that text: up to
  ``SPAN_WORDS`` whole words as they stand there (see ``copy_spans``), so a model cannot name what the
  text does not. Without a source it is an ordinary string.

A schema feature outside this subset raises ``GrammarError`` when the grammar is built, never a silent
fallback to generic JSON. ``parse_reply`` turns a completion into the model or an ``ExtractionError``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, PydanticInvalidForJsonSchema, ValidationError

from kg_etl.errors import ExtractionError, KgEtlError
from kg_etl.llm.runtime import TOO_LONG

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = [
    "COPY",
    "FLOAT_DECIMALS",
    "LOWER",
    "MAX_REPEAT",
    "MAX_REPLY_TOKENS",
    "SPAN_WORDS",
    "STORED_MAY_BE_NULL",
    "GrammarError",
    "TruncatedReplyError",
    "copy_spans",
    "llama_grammar",
    "max_tokens_for",
    "never_null",
    "not_copied",
    "parse_reply",
    "schema_grammar",
]

M = TypeVar("M", bound=BaseModel)
Schema = Mapping[str, Any]

MAX_REPEAT = 2000
"""llama.cpp's ``MAX_REPETITION_THRESHOLD``: a larger ``{m,n}`` bound silently becomes unbounded there."""

MAX_REPLY_TOKENS = 16_384
"""Default ceiling for ``max_tokens_for``: a schema whose longest reply is longer is a design error."""

FLOAT_DECIMALS = 3
"""Most digits after the decimal point that the grammar lets a number have."""

COPY = "x-copy"
"""JSON-schema annotation on a string field (``json_schema_extra={COPY: True}``): copied from the source.

Small models paraphrase, abbreviate and invent names when asked for an entity; with this mark the grammar
only admits spans of the job's source text (its chunk), so every subject and object is found in the text.
``True`` admits spans of up to ``SPAN_WORDS`` words; a number, spans of up to that many (a quoted passage).
"""

SPAN_WORDS = 8
"""Most words in a copied span: an entity name, a date or an amount, not a clause."""

STORED_MAY_BE_NULL = "x-stored-may-be-null"
"""Set by ``never_null``: the reply must fill the field, but a validator may drop it to ``None`` afterwards,
so a check of stored results (not of replies) lets it be null."""

LOWER = "x-lower"
"""JSON-schema annotation on a string field (``json_schema_extra={LOWER: True}``): no ASCII capital letter.

For a triple's predicate, a verb phrase that the graph stores in lower case anyway: small models copy the
subject's name into it ("Alan Shepard | Alan Shepard | US national"), and a name starts with a capital.
"""

# Words that neither begin (in lower case) nor end a copied span: "in New Hampshire" and "The movie English
# Without Tears is written by" are not names; "The Beatles" and "University of Oxford" are.
_SPAN_EDGE_WORDS = frozenset((
    "a", "an", "the", "and", "or", "but", "nor", "of", "in", "on", "at", "to", "for", "by", "with", "from", "into",
    "onto", "as", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "do", "does", "did",
    "that", "which", "who", "whom", "whose", "this", "these", "those", "it", "its", "he", "she", "they", "his",
    "her", "their", "not", "than", "then", "so", "if",
))  # fmt: skip

SMALL_INT_RANGE = 32
"""Integer ranges with at most this many values are spelled out as an alternation of literals."""

# The most UTF-8 bytes one string character can take: a raw BMP character. llama.cpp only lets
# tokens with a non-empty piece through a grammar, so bytes bound tokens.
_CHAR_BYTES = 3
_WS_BYTES = 1

# Shared rules: string characters (no raw control characters, no lone surrogates) and whitespace.
_BASE_RULES = {
    "ws": '" "?',
    "char": r'[^"\\\x00-\x1F\x7F\U00010000-\U0010FFFF] | "\\" ["\\/bfnrt]',
    "frac": '"." [0-9]{1,' + str(FLOAT_DECIMALS) + "}",
    "zero-frac": '"." "0"{1,' + str(FLOAT_DECIMALS) + "}",
}

# A string character without ASCII capitals (``LOWER``).
_LOWER_CHAR = _BASE_RULES["char"].replace("\\x7F", "\\x7FA-Z", 1)

# Keywords that only describe a value; everything else must be understood or the build fails.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$comment",
        COPY,
        LOWER,
        STORED_MAY_BE_NULL,
    }
)

# A word, with the marks inside it: 1,200  U.S  co-founder  Aarhus's. Spans are runs of these.
_WORD = re.compile(r"\w+(?:[^\w\s]\w+)*")
# What may stand between two words of one span: spaces, after a comma or a full stop ("Wheeler, Texas",
# "St. Louis"), or an ampersand, slash, plus or dash ("Tom & Jerry"). Brackets, quotes, colons and
# semicolons end a span: a name does not run across them.
_JOIN = re.compile(r"[,.]?\s+|\s*[&/+\u2013\u2014-]\s*")


class GrammarError(KgEtlError):
    """Raised when a model's JSON schema uses a feature the grammar cannot enforce, or is unbounded."""


class TruncatedReplyError(ExtractionError):
    """Raised when a reply stopped at ``max_tokens`` (finish_reason "length"): it is half a document."""


@dataclass(frozen=True)
class _Piece:
    """A grammar symbol (rule name or literal) and the most UTF-8 bytes it can emit."""

    symbol: str
    max_bytes: int


@dataclass(frozen=True)
class _Compiled:
    gbnf: str
    max_bytes: int


def schema_grammar(model: type[BaseModel], source: str = "") -> str:
    """GBNF text (root rule ``root``) admitting only JSON documents that ``model`` validates.

    ``source`` is the text that ``COPY`` fields copy from (a job's chunk); it is ignored by a model
    without such fields, whose grammar is then the same for every chunk and built once.
    """
    return _compile(model, source if _copies(model) else "").gbnf


def copy_spans(source: str, max_chars: int, min_chars: int = 1, max_words: int = SPAN_WORDS) -> list[str]:
    """The spans of ``source`` a ``COPY`` field may take: 1 to ``max_words`` consecutive words, in order.

    Words are joined as the text joins them (a run of whitespace written as one space); a span never
    crosses a bracket, quote, colon or semicolon, and fits ``min_chars..max_chars``.
    """
    return [span for _, span in _span_runs(source, max_chars, min_chars, max_words)]


def not_copied(result: BaseModel, source: str) -> list[str]:
    """The values of ``result``'s ``COPY`` fields that are not in ``source``, for backends without a grammar.

    A server model cannot be held to the text's spans while it writes; its reply is checked instead. The
    check is looser than the grammar: the value's words must occur in the text in a row, whatever the case,
    spacing and punctuation between them.
    """
    if not source:
        return []
    text = " " + " ".join(_WORD.findall(source.casefold())) + " "
    missing = []
    for value in _copied_values(result, result.model_json_schema()):
        words = " ".join(_WORD.findall(value.casefold()))
        if words and f" {words} " not in text:
            missing.append(value)
    return missing


def _copied_values(value: Any, schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None) -> list[str]:
    """The strings of ``value`` (a model, list or scalar) where ``schema`` marks them ``COPY``."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return _copied_values(value, defs[schema["$ref"].removeprefix("#/$defs/")], defs)
    if isinstance(value, BaseModel):
        props = schema.get("properties", {})
        return [v for name, sub in props.items() for v in _copied_values(getattr(value, name, None), sub, defs)]
    if isinstance(value, list):
        return [v for item in value for v in _copied_values(item, schema.get("items", {}), defs)]
    if isinstance(value, str) and schema.get(COPY):
        return [value]
    options = [*schema.get("anyOf", []), *schema.get("oneOf", [])]
    if value is None or not options:
        return []
    if isinstance(value, BaseModel):  # a union of models: the option this value is an instance of
        resolved = [defs.get(o.get("$ref", "").removeprefix("#/$defs/"), o) for o in options]
        options = [o for o in resolved if o.get("title") == type(value).__name__] or options[:1]
    return [v for option in options for v in _copied_values(value, option, defs)]


def never_null(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` for an optional field that a reply must still fill: the grammar admits no null.

    The Python type keeps ``None`` (a validator may drop a value that says nothing), but a model offered
    ``null`` takes it: SmolLM2-135M left 21 of 24 facts without a triple when it could.
    """
    options = [option for option in schema.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) != 1:
        raise GrammarError(f"never_null needs an optional of one type, not {options!r}")
    schema.update(options[0])
    schema[STORED_MAY_BE_NULL] = True  # for checks of stored results: a validator may still make it null


def max_tokens_for(model: type[BaseModel], limit: int = MAX_REPLY_TOKENS) -> int:
    """The ``max_tokens`` that lets any reply the grammar admits finish with "stop".

    Every token carries at least one byte, so the longest document in UTF-8 bytes bounds its tokens;
    one more token is needed because llama-cpp-python reports "length" when the count reaches the limit.
    A copied span is never longer than the field's ``maxLength`` allows, so the bound holds for any source.

    Raises:
        GrammarError: the bound exceeds ``limit``: tighten ``max_length`` on strings and lists.
    """
    bound = _compile(model, "").max_bytes + 1
    if bound > limit:
        raise GrammarError(
            f"{model.__name__}: a reply may take up to {bound} tokens (limit {limit}); "
            "lower max_length on its strings and lists"
        )
    return bound


@functools.cache
def llama_grammar(model: type[BaseModel]) -> LlamaGrammar:
    """The ``LlamaGrammar`` for ``model``, checked with llama.cpp's own GBNF parser, built once."""
    from llama_cpp.llama_grammar import LlamaGrammar

    gbnf = schema_grammar(model)
    _check_with_llama_cpp(model, gbnf)
    return LlamaGrammar.from_string(gbnf, verbose=False)


def parse_reply(model: type[M], text: str, finish_reason: str | None) -> M:
    """Validate one completion against ``model``.

    Raises:
        TruncatedReplyError: the reply hit ``max_tokens``.
        ExtractionError: the text is not a valid ``model`` document; ``raw`` holds it.
    """
    name = model.__name__
    if finish_reason == TOO_LONG:
        raise ExtractionError(
            f"{name}: the prompt and the longest reply the schema admits do not fit the context ({text}); "
            "raise --n-ctx or lower --chunk-tokens",
            raw="",
            attempts=1,
        )
    if finish_reason == "length":
        raise TruncatedReplyError(
            f"{name} reply was cut off at max_tokens after {len(text)} characters; "
            f"pass max_tokens=max_tokens_for({name})",
            raw=text,
            attempts=1,
        )
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        raise ExtractionError(
            f"{name} reply does not validate ({e.error_count()} errors; {where}: {first['msg']})",
            raw=text,
            attempts=1,
        ) from e


def _compile(model: type[BaseModel], source: str) -> _Compiled:
    return _for_source(model, source) if source else _static(model)


@functools.cache
def _static(model: type[BaseModel]) -> _Compiled:
    return _build(model, "")


# A source's grammar serves one chunk: keep the last few (a batch's chunks, asked again on a retry).
@functools.lru_cache(maxsize=64)
def _for_source(model: type[BaseModel], source: str) -> _Compiled:
    return _build(model, source)


def _build(model: type[BaseModel], source: str) -> _Compiled:
    schema = _json_schema(model)
    builder = _Builder(model.__name__, schema.pop("$defs", {}), source)
    root = builder.node(schema, "")
    return _Compiled(builder.render(root.symbol), root.max_bytes)


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    try:
        return dict(model.model_json_schema())
    except PydanticInvalidForJsonSchema as e:
        raise GrammarError(f"{model.__name__}: has no JSON schema: {e}") from e


@functools.cache
def _copies(model: type[BaseModel]) -> bool:
    """Whether any field of ``model`` (or of the models it holds) is marked ``COPY``."""
    return f'"{COPY}"' in json.dumps(_json_schema(model))


def _span_runs(source: str, max_chars: int, min_chars: int, max_words: int) -> list[tuple[list[str], str]]:
    """Each span as its pieces (first word, then joiner + word each) and as its text, without repeats."""
    words = [w for w in _WORD.finditer(source) if max(map(ord, w.group())) <= 0xFFFF]
    runs: dict[str, list[str]] = {}
    for i, first in enumerate(words):
        pieces, text = [first.group()], first.group()
        for j in range(i, min(i + max_words, len(words))):
            if j > i:
                gap = source[words[j - 1].end() : words[j].start()]
                if not _JOIN.fullmatch(gap):
                    break
                piece = re.sub(r"\s+", " ", gap) + words[j].group()
                pieces, text = [*pieces, piece], text + piece
            if len(text) > max_chars:
                break
            # A capital "The" may begin a name; no name ends with "the", "is" or "He", whatever its case.
            edges = first.group() in _SPAN_EDGE_WORDS or words[j].group().casefold() in _SPAN_EDGE_WORDS
            if len(text) >= min_chars and not edges:
                runs.setdefault(text, pieces)
    return [(pieces, text) for text, pieces in runs.items()]


def _check_with_llama_cpp(model: type[BaseModel], gbnf: str) -> None:
    """Parse ``gbnf`` with llama.cpp (no vocabulary needed) so a bad grammar fails here, not mid-run."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(None, gbnf.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarError(f"{model.__name__}: llama.cpp rejected the generated grammar:\n{gbnf}")
    llama_cpp.llama_sampler_free(sampler)


@dataclass
class _Trie:
    """A node of the span trie: the pieces that may follow, and whether a span may end here."""

    children: dict[str, _Trie] = field(default_factory=dict)
    ends: bool = False


class _Builder:
    """Turns one JSON schema into named GBNF rules, sharing identical rule bodies."""

    def __init__(self, model_name: str, defs: Mapping[str, Schema], source: str = "") -> None:
        self.model_name = model_name
        self.defs = defs
        self.source = source
        self.rules: dict[str, str] = dict(_BASE_RULES)
        self.names_by_body: dict[str, str] = {body: name for name, body in _BASE_RULES.items()}
        self.refs: dict[str, _Piece] = {}
        self.resolving: list[str] = []

    def render(self, root_symbol: str) -> str:
        lines = [f"root ::= {root_symbol}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    def fail(self, path: str, message: str) -> GrammarError:
        return GrammarError(f"{self.model_name}: {path or 'the model'}: {message}")

    def rule(self, hint: str, body: str) -> str:
        """Name for a rule with this body: an existing one with the same body, or a new one."""
        if body in self.names_by_body:
            return self.names_by_body[body]
        base = re.sub(r"[^A-Za-z0-9]+", "-", hint).strip("-") or "value"
        name, n = base, 1
        while name in self.rules or name == "root":
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        self.names_by_body[body] = name
        return name

    def node(self, schema: Schema, path: str) -> _Piece:
        """Grammar piece for one schema node at ``path`` (used in error messages)."""
        if "$ref" in schema:
            return self.ref(schema, path)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return self.union(schema, combinator, path)
        if "allOf" in schema:
            self.check_keys(schema, {"allOf"}, path)
            if len(schema["allOf"]) != 1:
                raise self.fail(path, "allOf with more than one schema is not supported")
            return self.node(schema["allOf"][0], path)
        if "const" in schema or "enum" in schema:
            return self.literals(schema, path)
        kind = schema.get("type")
        handler = _TYPE_HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise self.fail(path, f"unsupported schema {dict(schema)!r} (needs a single 'type')")
        return handler(self, schema, path)

    def check_keys(self, schema: Schema, allowed: set[str], path: str) -> None:
        unknown = set(schema) - allowed - _ANNOTATIONS
        if unknown:
            raise self.fail(path, f"unsupported JSON schema keyword(s) {sorted(unknown)}")

    def ref(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"$ref"}, path)
        ref: str = schema["$ref"]
        name = ref.removeprefix("#/$defs/")
        if name not in self.defs:
            raise self.fail(path, f"cannot resolve $ref {ref!r}")
        if name in self.resolving:
            raise self.fail(path, f"{name} refers to itself: a recursive model has no length bound")
        if name not in self.refs:
            self.resolving.append(name)
            piece = self.node(self.defs[name], name)
            self.resolving.pop()
            self.refs[name] = piece
        return self.refs[name]

    def union(self, schema: Schema, combinator: str, path: str) -> _Piece:
        self.check_keys(schema, {combinator, "discriminator"}, path)
        options = [self.node(s, path) for s in schema[combinator]]
        if not options:
            raise self.fail(path, f"empty {combinator}")
        body = " | ".join(o.symbol for o in options)
        return _Piece(self.rule(f"{path}-union", body), max(o.max_bytes for o in options))

    def literals(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"const", "enum", "type"}, path)
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        if not values:
            raise self.fail(path, "empty enum admits no value")
        texts = [json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values]
        body = " | ".join(_gbnf_literal(t) for t in texts)
        width = max(len(t.encode("utf-8")) for t in texts)
        return _Piece(self.rule(f"{path}-enum", body), width)

    def string(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"type", "minLength", "maxLength"}, path)
        if "maxLength" not in schema:
            raise self.fail(path, "string without maxLength: give it Field(max_length=...)")
        low, high = int(schema.get("minLength", 0)), int(schema["maxLength"])
        self.check_repeat(high, path)
        if low > high:
            raise self.fail(path, f"minLength {low} > maxLength {high} admits no string")
        if schema.get(COPY) and self.source:
            copy = schema[COPY]
            spans = self.spans(low, high, SPAN_WORDS if copy is True else int(copy))
            if spans is not None:
                return spans
        char = self.rule("lower-char", _LOWER_CHAR) if schema.get(LOWER) else "char"
        body = f'"\\"" {char}{{{low},{high}}} "\\""'
        return _Piece(self.rule(f"string-{low}-{high}", body), 2 + _CHAR_BYTES * high)

    def spans(self, low: int, high: int, max_words: int) -> _Piece | None:
        """A JSON string holding one span of the source, or None where the source has no span that fits.

        The spans form a word trie, one rule per node, so the grammar grows with the text, not with the
        number of spans, and a model choosing the first word faces one alternative per distinct word.
        Words and joiners hold no quote, backslash or control character: no JSON escape is needed.
        """
        runs = _span_runs(self.source, high, low, max_words)
        if not runs:
            return None
        trie = _Trie()
        for pieces, _ in runs:
            node = trie
            for piece in pieces:
                node = node.children.setdefault(piece, _Trie())
            node.ends = True
        body = f'"\\"" {self.span_node(trie)} "\\""'
        width = 2 + max(len(text.encode("utf-8")) for _, text in runs)
        return _Piece(self.rule(f"span-{low}-{high}", body), width)

    def span_node(self, node: _Trie) -> str:
        """The rule for one trie node: each next piece, then one of its continuations (optional where a
        span may end after that piece).

        Rules are built leaves first and shared by body, so identical continuations are one rule.
        """
        options = []
        for piece, child in node.children.items():
            if not child.children:
                options.append(_gbnf_literal(piece))
            else:
                options.append(f"{_gbnf_literal(piece)} {self.span_node(child)}{'?' if child.ends else ''}")
        return self.rule("span", " | ".join(options))

    def integer(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"type", *_BOUND_KEYS}, path)
        low, high = self.bounds(schema, path, integral=True)
        if high - low + 1 <= SMALL_INT_RANGE:
            body = " | ".join(f'"{v}"' for v in range(low, high + 1))
        else:
            body = " | ".join(_int_range(low, high))
        return _Piece(self.rule(f"int-{_signed(low)}-{_signed(high)}", body), _int_width(low, high))

    def number(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"type", *_BOUND_KEYS}, path)
        low, high = self.bounds(schema, path, integral=False)
        body = " | ".join(_float_range(low, high))
        width = _int_width(low, high) + 1 + FLOAT_DECIMALS
        return _Piece(self.rule(f"number-{_signed(low)}-{_signed(high)}", body), width)

    def bounds(self, schema: Schema, path: str, *, integral: bool) -> tuple[int, int]:
        """Inclusive integer bounds; exclusive ones only for integers, where they shift by one."""
        if integral:
            low = _bound(schema, "minimum", "exclusiveMinimum", math.ceil, 1)
            high = _bound(schema, "maximum", "exclusiveMaximum", math.floor, -1)
        else:
            if "exclusiveMinimum" in schema or "exclusiveMaximum" in schema:
                raise self.fail(path, "exclusive bounds (gt/lt) on floats are not supported: use ge/le")
            given = [schema[k] for k in ("minimum", "maximum") if k in schema]
            if not all(float(b).is_integer() for b in given):
                raise self.fail(path, f"float bounds must be whole numbers, not {given}")
            low = _bound(schema, "minimum", "exclusiveMinimum", math.ceil, 1)
            high = _bound(schema, "maximum", "exclusiveMaximum", math.floor, -1)
        if low is None or high is None:
            raise self.fail(path, "numbers need both bounds: give them Field(ge=..., le=...)")
        if low > high:
            raise self.fail(path, f"empty range {low}..{high}")
        return low, high

    def boolean(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"type"}, path)
        return _Piece(self.rule("boolean", '"true" | "false"'), len("false"))

    def null(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"type"}, path)
        return _Piece('"null"', len("null"))

    def array(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"type", "items", "prefixItems", "minItems", "maxItems", "uniqueItems"}, path)
        # uniqueItems comes from set/frozenset, which pydantic fills from duplicates without complaint.
        if "prefixItems" in schema:
            return self.tuple(schema, path)
        if "items" not in schema or "maxItems" not in schema:
            raise self.fail(path, "arrays need items and maxItems: give them Field(max_length=...)")
        low, high = int(schema.get("minItems", 0)), int(schema["maxItems"])
        self.check_repeat(high, path)
        if low > high:
            raise self.fail(path, f"minItems {low} > maxItems {high} admits no array")
        item = self.node(schema["items"], f"{path}[]")
        if high == 0:
            return _Piece(self.rule("empty-array", '"[" ws "]"'), 2 + _WS_BYTES)
        # Repeat rule references only: llama.cpp multiplies the rules inside a repeated group.
        tail = self.rule(f"{path}-next", f'"," ws {item.symbol}')
        items = self.rule(f"{path}-items", f"{item.symbol} {tail}{{{max(low - 1, 0)},{high - 1}}}")
        body = f'"[" ws {items}{"" if low else "?"} ws "]"'
        width = 2 + 2 * _WS_BYTES + high * item.max_bytes + (high - 1) * (1 + _WS_BYTES)
        return _Piece(self.rule(f"{path}-array", body), width)

    def tuple(self, schema: Schema, path: str) -> _Piece:
        if "items" in schema:
            raise self.fail(path, "tuples with extra items (prefixItems plus items) are not supported")
        items = [self.node(s, f"{path}[{i}]") for i, s in enumerate(schema["prefixItems"])]
        if not items:
            return _Piece(self.rule("empty-array", '"[" ws "]"'), 2 + _WS_BYTES)
        body = '"[" ws ' + ' "," ws '.join(i.symbol for i in items) + ' ws "]"'
        width = 2 + 2 * _WS_BYTES + sum(i.max_bytes for i in items) + (len(items) - 1) * (1 + _WS_BYTES)
        return _Piece(self.rule(f"{path}-tuple", body), width)

    def object(self, schema: Schema, path: str) -> _Piece:
        self.check_keys(schema, {"type", "properties", "required", "additionalProperties"}, path)
        if schema.get("additionalProperties", False) not in (True, False):
            raise self.fail(path, "objects with typed additionalProperties (dicts) are not supported")
        if "properties" not in schema:
            raise self.fail(path, "free-form objects (dict, Any) are not supported")
        properties: Mapping[str, Schema] = schema["properties"]
        members = []
        width = 2 + 2 * _WS_BYTES
        for key, sub in properties.items():
            value = self.node(sub, f"{path}.{key}" if path else key)
            name = json.dumps(key, ensure_ascii=False)
            members.append(f'{_gbnf_literal(name)} ":" ws {value.symbol}')
            width += len(name.encode("utf-8")) + 1 + _WS_BYTES + value.max_bytes
        width += max(len(members) - 1, 0) * (1 + _WS_BYTES)
        inner = ' "," ws '.join(members)
        body = f'"{{" ws {inner} ws "}}"' if members else '"{" ws "}"'
        return _Piece(self.rule(path or "object", body), width)

    def check_repeat(self, count: int, path: str) -> None:
        if count > MAX_REPEAT:
            raise self.fail(path, f"bound {count} exceeds llama.cpp's repetition limit {MAX_REPEAT}")


_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")

_TYPE_HANDLERS: dict[str, Callable[[_Builder, Schema, str], _Piece]] = {
    "string": _Builder.string,
    "integer": _Builder.integer,
    "number": _Builder.number,
    "boolean": _Builder.boolean,
    "null": _Builder.null,
    "array": _Builder.array,
    "object": _Builder.object,
}


def _bound(schema: Schema, inclusive: str, exclusive: str, rounding: Callable[[float], int], step: int) -> int | None:
    """The tighter of an inclusive and an exclusive integer bound, as an inclusive one."""
    candidates = []
    if inclusive in schema:
        candidates.append(rounding(schema[inclusive]))
    if exclusive in schema:
        value = schema[exclusive]
        candidates.append(int(value) + step if float(value).is_integer() else rounding(value))
    if not candidates:
        return None
    return max(candidates) if step > 0 else min(candidates)


def _gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (llama.cpp knows \\\\, \\", \\n, \\r, \\t and \\xHH)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _signed(value: int) -> str:
    """A number for a rule name, where '-' separates words: -5 -> m5."""
    return f"m{-value}" if value < 0 else str(value)


def _group(sequence: str) -> str:
    return f"({sequence})" if " " in sequence else sequence


def _int_width(low: int, high: int) -> int:
    """Most characters of a decimal integer in ``low..high`` (the longest is at an end)."""
    return max(len(str(low)), len(str(high)))


def _int_range(low: int, high: int) -> list[str]:
    """GBNF alternatives spelling exactly the decimal integers ``low..high`` (no leading zeros)."""
    alternatives = []
    if low < 0:
        magnitudes = _natural_range(max(-high, 1), -low)
        alternatives += [f'"-" {seq}' for seq in magnitudes]
    if high >= 0:
        alternatives += _natural_range(max(low, 0), high)
    return alternatives


def _natural_range(low: int, high: int) -> list[str]:
    """Alternatives for ``low..high`` with ``0 <= low``, split into runs of equal digit count."""
    alternatives = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = min(high, 10**digits - 1)
        if start <= end:
            # adjacent digit literals merge: "1" "0" -> "10"
            alternatives += [" ".join(seq).replace('" "', "") for seq in _same_length(str(start), str(end))]
    return alternatives


def _same_length(low: str, high: str) -> list[list[str]]:
    """Sequences of digit classes matching the numerals ``low..high`` of one length."""
    if not low:
        return [[]]
    head_low, head_high, rest = int(low[0]), int(high[0]), len(low) - 1
    if head_low == head_high:
        return [[f'"{low[0]}"', *seq] for seq in _same_length(low[1:], high[1:])]
    out: list[list[str]] = []
    first_full, last_full = head_low, head_high
    if low[1:] != "0" * rest:
        out += [[f'"{low[0]}"', *seq] for seq in _same_length(low[1:], "9" * rest)]
        first_full += 1
    if high[1:] != "9" * rest:
        last_full -= 1
    if first_full <= last_full:
        out.append([_digit_class(first_full, last_full)] + ["[0-9]"] * rest)
    if high[1:] != "9" * rest:
        out += [[f'"{high[0]}"', *seq] for seq in _same_length("0" * rest, high[1:])]
    return out


def _digit_class(low: int, high: int) -> str:
    return f'"{low}"' if low == high else f"[{low}-{high}]"


def _float_range(low: int, high: int) -> list[str]:
    """Alternatives for numbers in ``[low, high]`` (integer bounds) with up to FLOAT_DECIMALS decimals.

    Below the upper end any fraction fits; at the end itself only a zero fraction does.
    """
    alternatives = []
    if low < 0:  # negative side: magnitudes in [max(-high, 0), -low]
        alternatives += [f'"-" {seq}' for seq in _fraction_range(max(-high, 0), -low)]
    if high >= 0:
        alternatives += _fraction_range(max(low, 0), high)
    return alternatives


def _fraction_range(low: int, high: int) -> list[str]:
    """Non-negative decimals ``d`` with ``low <= d <= high``, for integers ``0 <= low <= high``."""
    whole = [f"{_group(seq)} frac?" for seq in _natural_range(low, high - 1)] if low < high else []
    return [*whole, f'"{high}" zero-frac?']

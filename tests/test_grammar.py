"""The schema grammar admits every compact document of its model, nothing invalid, and never truncates.

Two recognisers judge the GBNF text: a small GBNF-to-regex translator written here (fast, used for the
property tests) and llama.cpp's own grammar sampler over the tiny LFM2 model's vocabulary (the ground
truth). Generation from the random-weight tiny model checks the end-to-end promise.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import llama_cpp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_cpp import Llama
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg_etl.errors import ExtractionError, KgEtlError
from kg_etl.extract.facts import Facts as ChunkFacts
from kg_etl.llm.grammar import (
    COPY,
    LOWER,
    MAX_REPEAT,
    SPAN_WORDS,
    GrammarError,
    TruncatedReplyError,
    _check_with_llama_cpp,
    _compile,
    copy_spans,
    llama_grammar,
    max_tokens_for,
    never_null,
    parse_reply,
    schema_grammar,
)

# --- models under test ---------------------------------------------------------------------------------


class Flat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=12)
    count: int = Field(ge=0, le=20)
    year: int = Field(ge=-500, le=2100)
    big: int = Field(gt=-100_000, lt=1_000_000)
    ok: bool


class Color(StrEnum):
    RED = "red"
    DARK_BLUE = "dark blue"


class Relation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["is_a", "part_of", "causes"]
    confidence: float = Field(ge=0, le=1)


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=20, description="as written in the text")
    relation: Relation
    note: str | None = Field(default=None, max_length=8)


class Nested(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entities: list[Entity] = Field(min_length=1, max_length=3)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=4)
    keywords: set[Annotated[str, Field(min_length=1, max_length=3)]] = Field(max_length=2)
    best: Entity | None = None
    score: float = Field(ge=-5, le=5)
    color: Color = Color.RED
    pair: tuple[Literal[1, 2, 3], bool]
    version: Literal["v1"] = "v1"


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool = True


class Pet(BaseModel):
    """A discriminated union (JSON schema oneOf) and an aliased field."""

    pet: Cat | Dog = Field(discriminator="kind")
    owner_name: str = Field(alias="owner", max_length=5)


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fact(BaseModel):
    """An extraction-shaped reply for the generation tests."""

    model_config = ConfigDict(extra="forbid")
    subject: str = Field(min_length=1, max_length=24)
    predicate: Literal["is_a", "part_of", "located_in", "founded_by"]
    object: str = Field(min_length=1, max_length=24)
    confidence: float = Field(ge=0, le=1)
    page: int = Field(ge=1, le=300)


class Facts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    facts: list[Fact] = Field(min_length=1, max_length=3)
    note: str | None = Field(default=None, max_length=16)


MODELS: list[type[BaseModel]] = [Flat, Relation, Entity, Nested, Pet, Empty, Facts]


# --- recogniser 1: GBNF -> Python regex (our grammars are not recursive, so they are regular) ---------
# The same parse also yields a hypothesis strategy that draws strings the grammar admits.

_GBNF_TOKEN = re.compile(
    r'\s*(?:(?P<lit>"(?:[^"\\]|\\.)*")|(?P<cls>\[(?:[^\]\\]|\\.)*\])|(?P<name>[A-Za-z0-9-]+)'
    r"|(?P<rep>\{\d+(?:,\d*)?\})|(?P<op>[()|?*+]))"
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
Node = tuple[
    Any, ...
]  # ("lit", text) ("cls", negated, chars) ("ref", name) ("alt", [..]) ("seq", [..]) ("rep", node, lo, hi)


def _gbnf_chars(text: str) -> Iterator[str]:
    """Decode the characters of a GBNF literal or class body as llama.cpp's ``parse_char`` does."""
    i = 0
    while i < len(text):
        if text[i] != "\\":
            yield text[i]
            i += 1
            continue
        kind = text[i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(kind)
        if width:
            yield chr(int(text[i + 2 : i + 2 + width], 16))
            i += 2 + width
        else:
            yield _ESCAPES.get(kind, kind)
            i += 2


def _class_node(body: str) -> Node:
    """A character class as the explicit set of characters it lists (ours list few)."""
    negated = body.startswith("^")
    chars = list(_gbnf_chars(body[1:] if negated else body))
    members, i = [], 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-":
            members += [chr(c) for c in range(ord(chars[i]), ord(chars[i + 2]) + 1)]
            i += 3
        else:
            members.append(chars[i])
            i += 1
    return ("cls", negated, "".join(members))


def _gbnf_tokens(body: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while body[pos:].strip():
        match = _GBNF_TOKEN.match(body, pos)
        assert match and match.lastgroup, f"cannot read GBNF at {body[pos:]!r}"
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return tokens


class Gbnf:
    """GBNF text (one rule per line) parsed into small tuples, for the subset llama.cpp reads."""

    def __init__(self, text: str) -> None:
        self.rules: dict[str, Node] = {}
        for line in filter(str.strip, text.splitlines()):
            name, body = line.split(" ::= ", 1)
            tokens = _gbnf_tokens(body)
            node, end = self.alternatives(tokens, 0)
            assert end == len(tokens), f"trailing tokens in {name}: {tokens[end:]}"
            self.rules[name] = node

    def alternatives(self, tokens: list[tuple[str, str]], i: int) -> tuple[Node, int]:
        options = []
        while True:
            seq, i = self.sequence(tokens, i)
            options.append(seq)
            if i < len(tokens) and tokens[i] == ("op", "|"):
                i += 1
                continue
            return ("alt", options), i

    def sequence(self, tokens: list[tuple[str, str]], i: int) -> tuple[Node, int]:
        items: list[Node] = []
        while i < len(tokens) and tokens[i] not in (("op", "|"), ("op", ")")):
            kind, text = tokens[i]
            if kind == "lit":
                items.append(("lit", "".join(_gbnf_chars(text[1:-1]))))
            elif kind == "cls":
                items.append(_class_node(text[1:-1]))
            elif kind == "name":
                items.append(("ref", text))
            elif text == "(":
                inner, i = self.alternatives(tokens, i + 1)
                assert tokens[i] == ("op", ")")
                items.append(inner)
            else:  # a postfix operator applies to the previous item
                low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}.get(text) or _braces(text)
                items[-1] = ("rep", items[-1], low, high)
            i += 1
        return ("seq", items), i

    def regex(self) -> re.Pattern[str]:
        done: dict[str, str] = {}

        def walk(node: Node, active: frozenset[str]) -> str:
            kind = node[0]
            if kind == "lit":
                return "(?:" + re.escape(str(node[1])) + ")"
            if kind == "cls":
                return "[" + ("^" if node[1] else "") + "".join(f"\\U{ord(c):08x}" for c in node[2]) + "]"
            if kind == "ref":
                assert node[1] not in active, f"recursive rule {node[1]}"
                if node[1] not in done:
                    done[node[1]] = "(?:" + walk(self.rules[node[1]], active | {node[1]}) + ")"
                return done[node[1]]
            if kind == "alt":
                return "(?:" + "|".join(walk(n, active) for n in node[1]) + ")"
            if kind == "seq":
                return "".join(walk(n, active) for n in node[1])
            high = "" if node[3] is None else node[3]
            return f"(?:{walk(node[1], active)}){{{node[2]},{high}}}"

        return re.compile(walk(("ref", "root"), frozenset()), re.DOTALL)

    def strings(self) -> st.SearchStrategy[str]:
        """Strings the grammar admits, drawn by random derivation from ``root``."""

        def walk(node: Node) -> st.SearchStrategy[str]:
            kind = node[0]
            if kind == "lit":
                return st.just(node[1])
            if kind == "cls" and node[1]:
                return st.characters(exclude_characters=node[2], exclude_categories=["Cs"])
            if kind == "cls":
                return st.sampled_from(node[2])
            if kind == "ref":
                return st.deferred(lambda: walk(self.rules[node[1]]))
            if kind == "alt":
                return st.one_of([walk(n) for n in node[1]])
            if kind == "seq":
                return st.tuples(*(walk(n) for n in node[1])).map("".join)
            high = node[2] + 3 if node[3] is None else node[3]
            return st.lists(walk(node[1]), min_size=node[2], max_size=high).map("".join)

        return walk(("ref", "root"))


def _braces(text: str) -> tuple[int, int | None]:
    low, _, high = text[1:-1].partition(",")
    if "," not in text:
        return int(low), int(low)
    return int(low), int(high) if high else None


@functools.cache
def regex_for(model: type[BaseModel]) -> re.Pattern[str]:
    return Gbnf(schema_grammar(model)).regex()


@functools.cache
def strings_for(model: type[BaseModel]) -> st.SearchStrategy[str]:
    return Gbnf(schema_grammar(model)).strings()


def test_regex_translator_reads_gbnf_like_llama_cpp() -> None:
    pattern = Gbnf('root ::= "a\\x41" [^b-d\\n] x{1,2} ("y" | "z")?\nx ::= [0-9]\n').regex()
    assert pattern.fullmatch("aAe1") and pattern.fullmatch("aAe12z")
    assert not pattern.fullmatch("aAc1") and not pattern.fullmatch("aA\n1") and not pattern.fullmatch("aAe123")


# --- recogniser 2: llama.cpp's grammar sampler over the tiny model's vocabulary ------------------------
# (``tiny_model_path`` is the session fixture in conftest.py: a random-weight LFM2 GGUF.)


@pytest.fixture(scope="module")
def vocab_llm(tiny_model_path: Path) -> Iterator[Llama]:
    llm = Llama(str(tiny_model_path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def llama_accepts(llm: Llama, gbnf: str, text: str) -> bool:
    """Feed ``text``'s tokens through llama.cpp's grammar sampler; True if each and then EOS is allowed."""
    vocab = llm._model.vocab
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    assert sampler, "llama.cpp could not parse the grammar"
    data = (llama_cpp.llama_token_data * 1)()
    candidates = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)

    def allowed(token: int) -> bool:
        data[0] = llama_cpp.llama_token_data(id=token, logit=0.0, p=0.0)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return bool(data[0].logit != -math.inf)

    try:
        for token in llm.tokenize(text.encode("utf-8"), add_bos=False, special=False):
            if not allowed(token):  # accepting a rejected token would abort inside llama.cpp
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return allowed(llama_cpp.llama_vocab_eos(vocab))
    finally:
        llama_cpp.llama_sampler_free(sampler)


# --- instances of a model, drawn from its JSON schema ----------------------------------------------------

# U+007F is legal raw JSON and pydantic writes it raw, but the grammar leaves it out (llama.cpp's C++
# converter does too); surrogates cannot be encoded at all; characters beyond the BMP are left out so that
# a character is at most three bytes.
# Other control characters only have \uXXXX escapes, which the grammar leaves out too.
_TEXT = st.characters(exclude_categories=["Cs", "Cc"], include_characters="\t\n\r\b\f", max_codepoint=0xFFFF)


def instances(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Python values valid for ``schema`` (the subset the grammar supports), floats with 3 decimals."""
    if "$ref" in schema:
        return instances(defs[schema["$ref"].removeprefix("#/$defs/")], defs)
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([instances(s, defs) for s in schema.get("anyOf") or schema["oneOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "string":
        return st.text(_TEXT, min_size=schema.get("minLength", 0), max_size=schema["maxLength"])
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", 0) - 1)
        return st.integers(low, high)
    if kind == "number":
        return st.integers(schema["minimum"] * 1000, schema["maximum"] * 1000).map(lambda k: k / 1000)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array" and "prefixItems" in schema:
        return st.tuples(*(instances(s, defs) for s in schema["prefixItems"])).map(list)
    if kind == "array":
        item = instances(schema["items"], defs)
        unique = bool(schema.get("uniqueItems"))
        return st.lists(item, min_size=schema.get("minItems", 0), max_size=schema["maxItems"], unique=unique)
    assert kind == "object", schema
    return st.fixed_dictionaries({k: instances(v, defs) for k, v in schema["properties"].items()})


def documents(model: type[BaseModel]) -> st.SearchStrategy[str]:
    schema = model.model_json_schema()
    values = instances(schema, schema.get("$defs", {}))
    return values.map(lambda v: model.model_validate(v).model_dump_json(by_alias=True))


# --- unit tests: what the grammar admits ----------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_llama_cpp_parses_every_grammar(model: type[BaseModel]) -> None:
    grammar = llama_grammar(model)
    assert grammar._grammar == schema_grammar(model)
    assert llama_grammar(model) is grammar  # built once per model class
    for line in schema_grammar(model).splitlines():
        assert re.fullmatch(r"[A-Za-z0-9-]+ ::= .+", line), line


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
# 30 instances per schema: the regex match of nested documents backtracks (~1.5 s each for Nested), and
# the CI budget is shared with the real-model tiers; the llama.cpp recogniser below checks 25 more.
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_grammar_admits_every_instance(model: type[BaseModel], data: st.DataObject) -> None:
    text = data.draw(documents(model))
    assert regex_for(model).fullmatch(text), text
    assert len(text.encode("utf-8")) < max_tokens_for(model)


@pytest.mark.parametrize("model", [Flat, Nested, Facts], ids=lambda m: m.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_llama_cpp_agrees(model: type[BaseModel], data: st.DataObject, vocab_llm: Llama) -> None:
    """llama.cpp admits model instances, and the strings our GBNF reading derives (translator fidelity)."""
    for text in (data.draw(documents(model)), data.draw(strings_for(model))):
        assert llama_accepts(vocab_llm, schema_grammar(model), text), text


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_everything_the_grammar_admits_validates(model: type[BaseModel], data: st.DataObject) -> None:
    text = data.draw(strings_for(model))
    assert regex_for(model).fullmatch(text), text  # the two readings of the GBNF agree
    model.model_validate_json(text)
    assert len(text.encode("utf-8")) < max_tokens_for(model)


def _flat(**changes: Any) -> str:
    doc = {"name": "Ada", "count": 3, "year": 1843, "big": -99_999, "ok": True} | changes
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


ACCEPTED_FLAT = [
    _flat(),
    _flat(name='\té\\"\u2028☃東'),  # json.dumps escapes the tab, quote and backslash; the rest is raw
    '{ "name": "é\\n\\/x", "count": 20, "year": -500, "big": 999999, "ok": false }',
    _flat(count=0, year=2100, big=0),
    _flat(name="x" * 12),
]
REJECTED_FLAT = {
    "raw newline in a string": _flat(name="a\nb").replace("\\n", "\n"),
    "raw tab": _flat(name="a\tb").replace("\\t", "\t"),
    "raw DEL": _flat(name="a\x7fb"),
    "lone surrogate escape": _flat(name="XX").replace("XX", "\\ud800"),
    "unicode escape": _flat(name="XX").replace("XX", "\\u00e9"),
    "beyond the BMP": _flat(name="a😀b"),
    "bad escape": _flat(name="XX").replace("XX", "\\x41"),
    "string too long": _flat(name="x" * 13),
    "string too short": _flat(name=""),
    "int above maximum": _flat(count=21),
    "int below minimum": _flat(year=-501),
    "exclusive bound": _flat(big=1_000_000),
    "leading zero": _flat(count=3).replace(":3,", ":03,"),
    "float for int": _flat(count=3).replace(":3,", ":3.0,"),
    "missing field": _flat().replace(',"ok":true', ""),
    "extra field": _flat().replace("}", ',"x":1}'),
    "two spaces": _flat().replace(":", ":  ", 1),
    "newline as whitespace": _flat().replace(",", ",\n", 1),
    "trailing whitespace": _flat() + " ",
    "truncated": _flat()[:-1],
}
ACCEPTED_NESTED = [
    '{"entities":[{"name":"A","relation":{"kind":"is_a","confidence":0.5},"note":null}],"tags":[],'
    '"keywords":["ab"],"best":null,"score":-4.999,"color":"dark blue","pair":[3,false],"version":"v1"}',
    '{"entities":[{"name":"A","relation":{"kind":"causes","confidence":1.000},"note":"n"}],"tags":["a","b"],'
    '"keywords":[],"best":{"name":"","relation":{"kind":"part_of","confidence":0},"note":null},'
    '"score":5,"color":"red","pair":[1,true],"version":"v1"}',
]
_ONE_ENTITY = '{"name":"A","relation":{"kind":"is_a","confidence":0.5},"note":null}'
REJECTED_NESTED = {
    "too few items": ACCEPTED_NESTED[0].replace(f"[{_ONE_ENTITY}]", "[]"),
    "too many items": ACCEPTED_NESTED[0].replace(_ONE_ENTITY, ",".join([_ONE_ENTITY] * 4)),
    "float above 1": ACCEPTED_NESTED[0].replace('"confidence":0.5', '"confidence":1.5'),
    "1 with a fraction": ACCEPTED_NESTED[0].replace('"confidence":0.5', '"confidence":1.001'),
    "four decimals": ACCEPTED_NESTED[0].replace('"confidence":0.5', '"confidence":0.1234'),
    "exponent": ACCEPTED_NESTED[0].replace('"confidence":0.5', '"confidence":5e-1'),
    "score below -5": ACCEPTED_NESTED[0].replace('"score":-4.999', '"score":-5.001'),
    "unknown literal": ACCEPTED_NESTED[0].replace('"is_a"', '"likes"'),
    "enum by name": ACCEPTED_NESTED[0].replace('"dark blue"', '"DARK_BLUE"'),
    "tuple too long": ACCEPTED_NESTED[0].replace("[3,false]", "[3,false,true]"),
    "wrong const": ACCEPTED_NESTED[0].replace('"v1"', '"v2"'),
    "object where null": ACCEPTED_NESTED[0].replace('"note":null', '"note":{}'),
}


@pytest.mark.parametrize("text", ACCEPTED_FLAT)
def test_flat_accepts(text: str, vocab_llm: Llama) -> None:
    assert regex_for(Flat).fullmatch(text)
    assert llama_accepts(vocab_llm, schema_grammar(Flat), text)
    Flat.model_validate_json(text)


@pytest.mark.parametrize("text", list(REJECTED_FLAT.values()), ids=list(REJECTED_FLAT))
def test_flat_rejects(text: str, vocab_llm: Llama) -> None:
    assert not regex_for(Flat).fullmatch(text)
    assert not llama_accepts(vocab_llm, schema_grammar(Flat), text)


@pytest.mark.parametrize("text", ACCEPTED_NESTED)
def test_nested_accepts(text: str, vocab_llm: Llama) -> None:
    assert regex_for(Nested).fullmatch(text)
    assert llama_accepts(vocab_llm, schema_grammar(Nested), text)
    Nested.model_validate_json(text)


@pytest.mark.parametrize("text", list(REJECTED_NESTED.values()), ids=list(REJECTED_NESTED))
def test_nested_rejects(text: str, vocab_llm: Llama) -> None:
    assert not regex_for(Nested).fullmatch(text)
    assert not llama_accepts(vocab_llm, schema_grammar(Nested), text)


# Rejected although pydantic would accept them: layout and spelling the grammar fixes on purpose.
STRICTER_THAN_PYDANTIC = {
    "raw DEL", "float for int", "two spaces", "newline as whitespace", "trailing whitespace",
    "four decimals", "exponent",
    # Left out so that a character is at most 3 bytes, which bounds the reply (see grammar.py).
    "unicode escape", "beyond the BMP",
}  # fmt: skip


def test_rejected_examples_are_invalid_unless_only_stricter() -> None:
    for name, text in [*REJECTED_FLAT.items(), *REJECTED_NESTED.items()]:
        model = Flat if name in REJECTED_FLAT else Nested
        if name in STRICTER_THAN_PYDANTIC:
            model.model_validate_json(text)
        else:
            with pytest.raises(ValidationError):
                model.model_validate_json(text)


def test_integer_ranges_are_exact() -> None:
    class Wide(BaseModel):
        n: int = Field(ge=-1234, le=56789)

    pattern = regex_for(Wide)
    admitted = {n for n in range(-20_000, 100_000) if pattern.fullmatch(f'{{"n":{n}}}')}
    assert admitted == set(range(-1234, 56790))


def test_small_integer_range_is_an_alternation() -> None:
    assert '"0" | "1" | "2"' in schema_grammar(Flat)


def test_float_in_unit_interval_matches_the_documented_grammar() -> None:
    assert 'number-0-1 ::= "0" frac? | "1" zero-frac?' in schema_grammar(Relation)
    assert 'frac ::= "." [0-9]{1,3}' in schema_grammar(Relation)


def test_whitespace_is_at_most_one_space() -> None:
    gbnf = schema_grammar(Nested)
    assert 'ws ::= " "?' in gbnf
    assert not re.search(r"[*+]", gbnf.replace('"*"', "").replace('"+"', ""))  # no unbounded loops


# --- unit tests: schemas the grammar cannot enforce fail at build time -------------------------------------


class _Node(BaseModel):
    children: list[_Node] = Field(max_length=2)


def _model(annotation: Any, **field: Any) -> type[BaseModel]:
    from pydantic import create_model

    return create_model("Probe", x=(annotation, Field(**field)))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_model(str), "string without maxLength"),
        (_model(list[Annotated[str, Field(max_length=3)]]), "arrays need items and maxItems"),
        (_model(int, ge=0), "numbers need both bounds"),
        (_model(float, le=3), "numbers need both bounds"),
        (_model(float, gt=0, le=1), "exclusive bounds"),
        (_model(float, ge=0, le=0.5), "whole numbers"),
        (_model(str, max_length=5, pattern="^a+$"), "'pattern'"),
        (_model(dict[str, int]), "dicts"),
        (_model(Any), "needs a single 'type'"),
        (_model(str, max_length=MAX_REPEAT + 1), "repetition limit"),
        (_model(int, ge=0, le=10, multiple_of=2), "'multipleOf'"),
        (_Node, "recursive model"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unsupported_schemas_fail_when_the_grammar_is_built(model: type[BaseModel], message: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(message)) as caught:
        schema_grammar(model)
    assert isinstance(caught.value, KgEtlError)


def test_max_tokens_refuses_an_absurd_bound() -> None:
    huge = _model(list[Annotated[str, Field(max_length=2000)]], max_length=100)
    with pytest.raises(GrammarError, match="lower max_length"):
        max_tokens_for(huge)
    assert max_tokens_for(huge, limit=10**9) > 100 * 2000


def test_max_tokens_counts_the_longest_document_in_bytes() -> None:
    # {"x":"<3 chars, each up to 3 bytes>"} with one optional space after {, : and before }
    assert max_tokens_for(_model(str, max_length=3)) == len('{ "x": "" }') + 3 * 3 + 1


def test_llama_cpp_rejection_is_a_grammar_error() -> None:
    with pytest.raises(GrammarError, match="rejected"):
        _check_with_llama_cpp(Flat, 'root ::= "a" missing-rule\n')


# --- parse_reply ------------------------------------------------------------------------------------------


def test_parse_reply_returns_the_model() -> None:
    assert parse_reply(Flat, _flat(), "stop") == Flat.model_validate_json(_flat())


def test_parse_reply_flags_truncation() -> None:
    with pytest.raises(TruncatedReplyError, match="max_tokens") as caught:
        parse_reply(Flat, _flat()[:10], "length")
    assert isinstance(caught.value, ExtractionError)
    assert caught.value.raw == _flat()[:10]


def test_parse_reply_carries_the_raw_text_of_an_invalid_reply() -> None:
    text = _flat(count=99)
    with pytest.raises(ExtractionError, match="count") as caught:
        parse_reply(Flat, text, "stop")
    assert caught.value.raw == text
    assert isinstance(caught.value.__cause__, ValidationError)


# --- generation with the random-weight tiny LFM2 model ------------------------------------------------------

MESSAGES: list[Any] = [
    {"role": "system", "content": "Extract facts from the text as JSON."},
    {"role": "user", "content": "Ada Lovelace was born in London. Babbage designed the Analytical Engine."},
]


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_path: Path) -> Iterator[Llama]:
    # One thread: the model is tiny, and spinning thread pools stall when other processes hold the cores.
    llm = Llama(str(tiny_model_path), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False)
    yield llm
    llm.close()


def _sample(llm: Llama, seed: int, temperature: float, **kwargs: Any) -> tuple[str, str | None]:
    reply: Any = llm.create_chat_completion(
        messages=MESSAGES, temperature=temperature, max_tokens=max_tokens_for(Facts), seed=seed, **kwargs
    )
    choice = reply["choices"][0]
    return choice["message"]["content"] or "", choice["finish_reason"]


SAMPLES = [(seed, temperature) for temperature in (0.3, 0.8, 1.5) for seed in range(12)]


def test_every_grammar_constrained_reply_fits(tiny_llm: Llama) -> None:
    grammar = llama_grammar(Facts)
    facts = 0
    for seed, temperature in SAMPLES:
        text, finish = _sample(tiny_llm, seed, temperature, grammar=grammar)
        assert finish == "stop", (seed, temperature, text)
        facts += len(parse_reply(Facts, text, finish).facts)
    assert facts > len(SAMPLES)  # replies vary in size, not all minimal


def test_llama_cpp_python_converter_for_contrast(tiny_llm: Llama) -> None:
    """Not an assertion on llama-cpp-python: prints how its own schema path fares on the same samples."""
    response_format = {"type": "json_object", "schema": Facts.model_json_schema()}
    counts = {"ok": 0, "truncated": 0, "invalid": 0}
    for seed, temperature in SAMPLES:
        text, finish = _sample(tiny_llm, seed, temperature, response_format=response_format)
        try:
            parse_reply(Facts, text, finish)
            counts["ok"] += 1
        except TruncatedReplyError:
            counts["truncated"] += 1
        except ExtractionError:
            counts["invalid"] += 1
    print(f"llama-cpp-python response_format on {len(SAMPLES)} samples: {counts}")
    assert sum(counts.values()) == len(SAMPLES)


# --- copied spans: fields marked COPY take only words of the job's source ------------------------------

SOURCE = (
    "Alan Bean (born March 15, 1932) flew on Apollo 12. He was born in Wheeler, Texas and later lived in "
    'St. Louis; he worked for NASA & the U.S. Navy as a test-pilot, "a quiet man" by 1,200 accounts.'
)


class Said(BaseModel):
    model_config = ConfigDict(extra="forbid")
    who: str = Field(min_length=1, max_length=20, json_schema_extra={COPY: True})
    what: str = Field(min_length=1, max_length=30)
    whom: list[Annotated[str, Field(min_length=1, max_length=20, json_schema_extra={COPY: True})]] = Field(max_length=2)


def test_spans_are_runs_of_words_as_the_text_joins_them() -> None:
    spans = copy_spans(SOURCE, 60)
    for expected in ("Alan Bean", "March 15, 1932", "Wheeler, Texas", "St. Louis", "NASA & the U.S",
                     "test-pilot", "1,200 accounts", "Apollo 12. He was born in Wheeler"):  # fmt: skip
        assert expected in spans, expected
    for absent in ("Bean (born", "1932) flew", "Louis; he", 'pilot, "a', "U.S."):  # brackets, ; and quotes end a span
        assert absent not in spans, absent
    assert len(spans) == len(set(spans))
    assert all(len(re.findall(r"\w+(?:[^\w\s]\w+)*", s)) <= SPAN_WORDS and len(s) <= 60 for s in spans)
    assert max(len(s) for s in copy_spans(SOURCE, 12)) <= 12
    assert copy_spans("  ... ;; ", 60) == []


def test_a_copied_field_admits_only_spans_of_its_source(vocab_llm: Llama) -> None:
    gbnf = schema_grammar(Said, SOURCE)
    regex = Gbnf(gbnf).regex()
    ok = '{"who":"Alan Bean","what":"was born in","whom":["Wheeler, Texas","NASA"]}'
    assert regex.fullmatch(ok) and llama_accepts(vocab_llm, gbnf, ok)
    free = '{"who":"Alan Bean","what":"anything at all","whom":[]}'  # an unmarked field stays free
    assert regex.fullmatch(free) and llama_accepts(vocab_llm, gbnf, free)
    for bad in ("Alan B.", "alan bean", "Bean (born", "Buzz Aldrin", "Alan  Bean"):
        doc = ok.replace("Alan Bean", bad)
        assert not regex.fullmatch(doc) and not llama_accepts(vocab_llm, gbnf, doc), bad
    assert not regex.fullmatch(ok.replace('"NASA"', '"NASA Houston"'))  # in a list too


def test_without_a_source_a_copied_field_is_an_ordinary_string(vocab_llm: Llama) -> None:
    assert schema_grammar(Said) == schema_grammar(Said, "")
    assert llama_accepts(vocab_llm, schema_grammar(Said), '{"who":"Buzz Aldrin","what":"x","whom":[]}')
    assert schema_grammar(Said, "...") == schema_grammar(Said)  # no word fits: the field stays free
    assert schema_grammar(Flat, SOURCE) == schema_grammar(Flat)  # nothing to copy: one grammar for every chunk


@functools.cache
def said_strings() -> st.SearchStrategy[str]:
    return Gbnf(schema_grammar(Said, SOURCE)).strings()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_everything_a_span_grammar_admits_copies_and_validates(data: st.DataObject) -> None:
    said = Said.model_validate_json(data.draw(said_strings()))
    assert {said.who, *said.whom} <= set(copy_spans(SOURCE, 20))


def test_the_source_free_bound_bounds_every_span_grammar() -> None:
    """``max_tokens_for`` ignores the source: no span grammar admits a longer reply than the free one."""
    free = _compile(ChunkFacts, "").max_bytes
    for source in (SOURCE, SOURCE * 5, "é" * 70 + " " + "ü" * 59, "a"):
        assert _compile(ChunkFacts, source).max_bytes <= free


@settings(max_examples=30, deadline=None)
@given(source=st.text(min_size=0, max_size=400))
def test_llama_cpp_parses_the_span_grammar_of_any_text(source: str) -> None:
    _check_with_llama_cpp(ChunkFacts, schema_grammar(ChunkFacts, source))


def test_sampled_replies_name_only_what_the_text_says(tiny_llm: Llama) -> None:
    from llama_cpp.llama_grammar import LlamaGrammar

    messages = [MESSAGES[0], {"role": "user", "content": SOURCE}]
    grammar = LlamaGrammar.from_string(schema_grammar(Said, SOURCE), verbose=False)
    spans, named = set(copy_spans(SOURCE, 20)), []
    for seed, temperature in SAMPLES[:12]:
        reply: Any = tiny_llm.create_chat_completion(
            messages=messages, temperature=temperature, max_tokens=max_tokens_for(Said), seed=seed, grammar=grammar
        )
        choice = reply["choices"][0]
        said = parse_reply(Said, choice["message"]["content"], choice["finish_reason"])
        named += [said.who, *said.whom]
    assert set(named) <= spans
    assert len(set(named)) > 3  # sampling explores the spans, not one fixed answer


def test_a_span_neither_begins_nor_ends_with_a_lower_case_function_word() -> None:
    spans = copy_spans(SOURCE, 60)
    for name in ("Wheeler, Texas", "Alan Bean", "St. Louis", "Apollo 12", "NASA & the U.S"):
        assert name in spans, name
    for clause in ("in Wheeler", "was born in", "born in", "NASA & the", "the U.S", "He was", "flew on Apollo 12. He"):
        assert clause not in spans, clause
    # Inside a span such words stay ("NASA & the U.S"); "The" that starts a sentence may start a name.
    assert "The Beatles" in copy_spans("The Beatles played in the Cavern.", 60)


def test_a_span_may_be_as_long_as_its_field_allows() -> None:
    quotes = copy_spans(SOURCE, 300, max_words=40)
    assert "Alan Bean" in quotes and max(len(q.split()) for q in quotes) > SPAN_WORDS
    assert all(len(q.split()) <= 40 for q in quotes)


class Said2(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verb: str = Field(min_length=1, max_length=20, json_schema_extra={LOWER: True})
    note: Said | None = Field(json_schema_extra=never_null)


def test_a_lower_case_field_admits_no_capital_and_never_null_admits_no_null(vocab_llm: Llama) -> None:
    gbnf = schema_grammar(Said2)
    regex = Gbnf(gbnf).regex()
    said = '{"who":"Alan","what":"x","whom":[]}'
    ok = '{"verb":"was born in","note":' + said + "}"
    assert regex.fullmatch(ok) and llama_accepts(vocab_llm, gbnf, ok)
    for bad in ('{"verb":"Alan Bean","note":' + said + "}", '{"verb":"was born in","note":null}'):
        assert not regex.fullmatch(bad) and not llama_accepts(vocab_llm, gbnf, bad), bad
    assert Said2.model_validate({"verb": "x", "note": None}).note is None  # the Python type keeps None
    with pytest.raises(GrammarError, match="one type"):
        never_null({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]})


def test_facts_ask_every_fact_for_a_triple_with_a_lower_case_predicate() -> None:
    gbnf = schema_grammar(ChunkFacts, SOURCE)
    regex = Gbnf(gbnf).regex()
    triple = (
        '{"subject":"Alan Bean","subject_type":"person","predicate":"flew on","object":"Apollo 12",'
        '"object_type":"event"}'
    )
    fact = '{"statement":"Alan Bean flew on Apollo 12.","triple":' + triple + "}"
    assert regex.fullmatch('{"facts":[' + fact + "]}")
    assert not regex.fullmatch('{"facts":[{"statement":"Alan Bean flew on Apollo 12.","triple":null}]}')
    assert not regex.fullmatch('{"facts":[' + fact.replace('"flew on"', '"Apollo 12"') + "]}")
    facts = ChunkFacts.model_validate_json('{"facts":[' + fact + "," + fact + "]}")
    assert len(facts.facts) == 1  # a repeated statement is kept once

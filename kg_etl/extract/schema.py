"""The user's own schema: node types with properties, the relationships allowed between them, as an extractor.

A ``GraphSchema`` comes from a TOML file (``kg-etl ingest --schema papers.toml``, or a shipped example by
name: ``--schema papers``) or from Python (``--schema pkg.module:NAME``: a ``GraphSchema``, or a pydantic
model whose fields are lists of node models, see ``from_pydantic``). It compiles to a reply schema that the
grammar enforces like any built-in one: a reply can only name declared node types, declared relationship
types, and the properties each type declares, within the bounds given. String keys are copied from the
chunk (``grammar.COPY``), so a node is named as the text names it.

What the model says is checked again after the grammar: a relationship must join two nodes of the same
reply whose types the declaration allows, or it is dropped (counted in ``SchemaReply.dropped``).

Node types become graph labels (``SchemaNode`` plus the type), relationship types become relationship
types: both only ever from the declared set, whose names are checked here (identifiers, no clash with
kg-etl's own labels), never from model output.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from kg_etl.errors import ConfigError
from kg_etl.extract.base import Extractor
from kg_etl.llm.grammar import COPY
from kg_etl.models import content_id

__all__ = [
    "EXAMPLES",
    "RESERVED_LABELS",
    "SCHEMA_EXTRACTOR",
    "GraphSchema",
    "NodeType",
    "Property",
    "RelationshipType",
    "from_pydantic",
    "load_schema",
    "node_key",
    "schema_extractor",
]

SCHEMA_EXTRACTOR = "schema"  # the extractor's name: one user schema per run
EXAMPLES = ("papers", "contracts")  # shipped in kg_etl/data/schemas, usable by name
# kg-etl's own labels and relationship types (graph.statements): a user's type may not take one.
RESERVED_LABELS = frozenset(
    {"Document", "Chunk", "Fact", "Entity", "Topic", "Category", "Keyword", "Summary", "Question", "SchemaNode"}
)
RESERVED_TYPES = frozenset(
    {"HAS_CHUNK", "NEXT_CHUNK", "IN_CATEGORY", "FROM_CHUNK", "MENTIONS", "MENTIONED_IN", "RELATED", "HAS_TOPIC",
     "SUBTOPIC_OF", "HAS_KEYWORD", "SUMMARIZES"}
)  # fmt: skip
_LABEL = re.compile(r"^[A-Z][A-Za-z0-9]{0,39}$")
_REL_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_NOT_PROPERTIES = frozenset({"type", "id", "schema", "doc_id", "chunk_id"})  # what kg-etl itself sets


class Property(BaseModel):
    """One property of a node type, with the bounds the grammar enforces."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: Literal["string", "integer", "number", "boolean", "enum"] = "string"
    description: str = Field(default="", max_length=300)
    max_length: int = Field(default=80, ge=1, le=500, description="strings: most characters")
    minimum: float | None = Field(default=None, description="integers and numbers: the least value")
    maximum: float | None = Field(default=None, description="integers and numbers: the greatest value")
    values: tuple[str, ...] = Field(default=(), description="enums: the values allowed")
    copy_: bool = Field(default=False, alias="copy", description="strings: copied word for word from the text")

    @model_validator(mode="after")
    def _bounded(self) -> Property:
        if self.type in ("integer", "number") and (self.minimum is None or self.maximum is None):
            raise ValueError(f"a {self.type} property needs minimum and maximum (the grammar bounds every number)")
        if self.type == "enum" and not self.values:
            raise ValueError("an enum property needs values = [...]")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum is greater than maximum")
        return self


class NodeType(BaseModel):
    """A kind of node: what it is, the property that names it (its key), and its other properties."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field(default="", max_length=300)
    key: str = Field(default="name", description="the string property that identifies a node of this type")
    properties: dict[str, Property] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_key(self) -> NodeType:
        if self.key not in self.properties:
            # The key defaults to a copied name: the type's nodes are named as the text names them.
            self.properties[self.key] = Property.model_validate(
                {"max_length": 80, "copy": True, "description": "its name"}
            )
        if self.properties[self.key].type != "string":
            raise ValueError(f"the key {self.key!r} must be a string property")
        bad = [name for name in self.properties if not _PROPERTY.match(name) or name in _NOT_PROPERTIES]
        if bad:
            raise ValueError(f"property name(s) {bad} must be snake_case and not one of {sorted(_NOT_PROPERTIES)}")
        return self


class RelationshipType(BaseModel):
    """A relationship allowed from nodes of some types to nodes of others."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: str = Field(description="UPPER_SNAKE_CASE, e.g. WROTE")
    source: tuple[str, ...] = Field(alias="from", min_length=1)
    target: tuple[str, ...] = Field(alias="to", min_length=1)
    description: str = Field(default="", max_length=300)

    @field_validator("source", "target", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class GraphSchema(BaseModel):
    """What to extract: node types, relationships between them, and how many of each a chunk may give."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$", description="names the schema in the graph and cache")
    description: str = Field(default="", max_length=500, description="what the documents are; the model sees it")
    nodes: dict[str, NodeType] = Field(min_length=1)
    relationships: tuple[RelationshipType, ...] = ()
    max_nodes: int = Field(default=10, ge=1, le=30, description="most nodes one chunk's reply may hold")
    max_relationships: int = Field(default=10, ge=0, le=30, description="most relationships one reply may hold")

    @model_validator(mode="after")
    def _names(self) -> GraphSchema:
        for label in self.nodes:
            if not _LABEL.match(label) or label in RESERVED_LABELS:
                raise ValueError(
                    f"node type {label!r}: use a CamelCase name (letters and digits) that is not one of kg-etl's "
                    f"own labels ({', '.join(sorted(RESERVED_LABELS))})"
                )
        for rel in self.relationships:
            if not _REL_TYPE.match(rel.type) or rel.type in RESERVED_TYPES:
                raise ValueError(f"relationship {rel.type!r}: use UPPER_SNAKE_CASE, not one of kg-etl's own types")
            unknown = [t for t in (*rel.source, *rel.target) if t not in self.nodes]
            if unknown:
                raise ValueError(f"relationship {rel.type}: unknown node type(s) {unknown}; declare them in [nodes]")
        types = [rel.type for rel in self.relationships]
        if len(types) != len(set(types)):
            raise ValueError("a relationship type is declared twice; list all its from/to types in one declaration")
        return self

    @property
    def version(self) -> str:
        """Changes whenever the schema does: part of the cache key and the coverage of a document."""
        return "1-" + content_id(json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True))[:8]

    def labels(self) -> list[str]:
        return list(self.nodes)

    def relationship_types(self) -> list[str]:
        return [rel.type for rel in self.relationships]


def node_key(schema: GraphSchema, node: Mapping[str, Any]) -> str:
    """The value that identifies a node of the reply (its type's key property), as written."""
    return " ".join(str(node.get(schema.nodes[str(node["type"])].key) or "").split())


# -- loading ------------------------------------------------------------------------------------------------


def load_schema(ref: str) -> GraphSchema:
    """A schema from a TOML file, a shipped example's name, or ``package.module:NAME``.

    Raises:
        ConfigError: the reference cannot be read or does not describe a valid schema, in one line.
    """
    if ref in EXAMPLES:
        text = resources.files("kg_etl").joinpath("data", "schemas", f"{ref}.toml").read_text(encoding="utf-8")
        return _from_toml(text, ref)
    if ":" in ref and not Path(ref).exists():
        return _from_import(ref)
    path = Path(ref)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"--schema {ref}: cannot read it ({e}); give a TOML file, one of {', '.join(EXAMPLES)}, "
            "or package.module:NAME"
        ) from e
    return _from_toml(text, ref)


def _from_toml(text: str, ref: str) -> GraphSchema:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--schema {ref}: not valid TOML ({e})") from e
    data.setdefault("name", re.sub(r"[^a-z0-9_-]", "-", Path(ref).stem.lower()).strip("-") or "schema")
    return _validated(data, ref)


def _validated(data: object, ref: str) -> GraphSchema:
    try:
        return GraphSchema.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the schema"
        raise ConfigError(f"--schema {ref}: {where}: {first['msg']}") from e


def _from_import(ref: str) -> GraphSchema:
    module_name, _, attribute = ref.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"--schema {ref}: cannot import it ({e}); is the package on PYTHONPATH?") from e
    if isinstance(value, GraphSchema):
        return value
    if isinstance(value, type) and issubclass(value, BaseModel):
        return from_pydantic(value)
    raise ConfigError(f"--schema {ref}: is neither a kg_etl GraphSchema nor a pydantic model")


def from_pydantic(model: type[BaseModel]) -> GraphSchema:
    """A schema from a pydantic model whose fields are lists of node models (docling-graph's template shape).

    Each field ``list[NodeModel]`` declares the node type ``NodeModel.__name__`` (described by its docstring):
    its fields are the properties (str, int, float, bool or a Literal of strings, with ``Field`` bounds
    and descriptions), the first one is its key. Relationships are a class variable of the outer model,
    ``relationships: ClassVar[list[tuple[str, str, str]]]`` of (from type, RELATIONSHIP, to type).

    Raises:
        ConfigError: a field is not a list of models, or a property's type is not one of those above.
    """
    nodes: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        args = get_args(field.annotation)
        node = args[0] if get_origin(field.annotation) is list and args else None
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            raise ConfigError(f"{model.__name__}.{name}: expected list[SomeNodeModel]")
        props = {prop: _property(node, prop) for prop in node.model_fields}
        nodes[node.__name__] = {"description": (node.__doc__ or "").strip()[:300], "key": next(iter(props)),
                                "properties": props}  # fmt: skip
    declared: list[tuple[str, str, str]] = getattr(model, "relationships", [])
    relationships = [{"type": kind, "from": source, "to": target} for source, kind, target in declared]
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()[:40]
    description = (model.__doc__ or "").strip()[:500]
    return _validated(
        {"name": name, "description": description, "nodes": nodes, "relationships": relationships}, model.__name__
    )


def _property(node: type[BaseModel], name: str) -> dict[str, Any]:
    field = node.model_fields[name]
    annotation = field.annotation
    if get_origin(annotation) is not None and type(None) in get_args(annotation):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    bounds = {type(m).__name__: m for m in field.metadata}
    spec: dict[str, Any] = {"description": field.description or ""}
    if annotation is str:
        spec |= {"type": "string", "max_length": getattr(bounds.get("MaxLen"), "max_length", 80)}
    elif annotation in (int, float):
        spec |= {"type": "integer" if annotation is int else "number"}
        spec |= {"minimum": getattr(bounds.get("Ge"), "ge", None), "maximum": getattr(bounds.get("Le"), "le", None)}
    elif annotation is bool:
        spec |= {"type": "boolean"}
    elif get_origin(annotation) is Literal:
        spec |= {"type": "enum", "values": [str(v) for v in get_args(annotation)]}
    else:
        raise ConfigError(f"{node.__name__}.{name}: {annotation} is not str, int, float, bool or a Literal")
    return spec


# -- the extractor ------------------------------------------------------------------------------------------


def schema_extractor(schema: GraphSchema) -> Extractor:
    """The extractor for ``schema``: its reply model (enforced by the grammar) and its instructions."""
    return Extractor(
        name=SCHEMA_EXTRACTOR,
        version=schema.version,
        schema=_reply_model(schema),
        task=_task(schema),
        label=f"schema {schema.name}",
    )


def _task(schema: GraphSchema) -> str:
    """The instructions: the schema in words (types, what they mean, what may link to what), no examples."""
    kinds = "; ".join(f"{label}: {node.description}" if node.description else label
                      for label, node in schema.nodes.items())  # fmt: skip
    links = "; ".join(
        f"{rel.type} from {'/'.join(rel.source)} to {'/'.join(rel.target)}"
        + (f" ({rel.description})" if rel.description else "")
        for rel in schema.relationships
    )
    about = f"The documents: {schema.description.rstrip('.')}. " if schema.description else ""
    return (
        f"{about}List the things of these kinds that the excerpt names ({kinds}), each with the properties the "
        "excerpt states (null where it does not), its name copied word for word from the excerpt"
        + (f"; then the relationships between them that the excerpt states ({links}), each naming its two ends "
           "exactly as they are named in the list of things." if links else ".")
    )  # fmt: skip


class _Reply(BaseModel):
    """What every compiled reply model shares: relationships must join two of its own nodes."""

    model_config = ConfigDict(extra="forbid")
    graph_schema: ClassVar[GraphSchema]

    @model_validator(mode="after")
    def _joined(self) -> _Reply:
        """Drop a relationship whose ends are not nodes of this reply, of the types its declaration allows.

        The grammar cannot tie a relationship's ends to the names listed before it; this does. Names are
        compared as the graph compares them (case and spacing aside).
        """
        schema = type(self).graph_schema
        nodes: list[Any] = getattr(self, "nodes", [])
        named = {(str(n.type), _fold(getattr(n, schema.nodes[str(n.type)].key))) for n in nodes}
        declared = {rel.type: rel for rel in schema.relationships}
        relationships: list[Any] = getattr(self, "relationships", [])
        kept = [
            rel
            for rel in relationships
            if any((kind, _fold(rel.source)) in named for kind in declared[rel.type].source)
            and any((kind, _fold(rel.target)) in named for kind in declared[rel.type].target)
        ]
        if len(kept) != len(relationships):
            self.relationships = kept
        return self


def _fold(name: object) -> str:
    return " ".join(str(name).split()).casefold()


def _reply_model(schema: GraphSchema) -> type[BaseModel]:
    """The pydantic model a reply must fit: a list of nodes (a union of one model per type), and one of
    relationships (one model per declared relationship)."""
    node_models = [_node_model(label, node) for label, node in schema.nodes.items()]
    rel_models = [_relationship_model(rel) for rel in schema.relationships]
    fields: dict[str, Any] = {
        "nodes": (_list_of(node_models), Field(max_length=schema.max_nodes, description="the things named")),
    }
    if rel_models:
        fields["relationships"] = (
            _list_of(rel_models),
            Field(max_length=schema.max_relationships, description="the relationships stated"),
        )
    reply: type[_Reply] = create_model(f"{_camel(schema.name)}Reply", __base__=_Reply, **fields)
    reply.graph_schema = schema
    return reply


def _node_model(label: str, node: NodeType) -> type[BaseModel]:
    fields: dict[str, Any] = {"type": (_literal(label), Field(description=node.description or label))}
    for name, prop in node.properties.items():
        annotation, spec = _field(prop)
        if name == node.key:
            fields[name] = (annotation, Field(min_length=1, **spec))
        else:
            fields[name] = (annotation | None, Field(**spec))
    model: type[BaseModel] = create_model(f"{label}Node", __config__=ConfigDict(extra="forbid"), **fields)
    return model


def _field(prop: Property) -> tuple[Any, dict[str, Any]]:
    """The Python type of a property and its Field arguments (bounds, description, copy mark)."""
    spec: dict[str, Any] = {"description": prop.description or None}
    if prop.type == "string":
        spec["max_length"] = prop.max_length
        if prop.copy_:
            spec["json_schema_extra"] = {COPY: True}
        return str, spec
    if prop.type == "boolean":
        return bool, spec
    if prop.type == "enum":
        return _literal(*prop.values), spec
    spec |= {"ge": prop.minimum, "le": prop.maximum}
    if prop.type == "integer":
        return int, spec | {"ge": int(prop.minimum or 0), "le": int(prop.maximum or 0)}
    return float, spec


def _relationship_model(rel: RelationshipType) -> type[BaseModel]:
    end = Annotated[str, Field(min_length=1, max_length=80, json_schema_extra={COPY: True})]
    fields: dict[str, Any] = {
        "type": (_literal(rel.type), Field(description=rel.description or rel.type)),
        "source": (end, Field(description=f"the {'/'.join(rel.source)} it starts from")),
        "target": (end, Field(description=f"the {'/'.join(rel.target)} it goes to")),
    }
    model: type[BaseModel] = create_model(
        f"{_camel(rel.type.lower())}Relationship", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def _literal(*values: str) -> Any:
    """``Literal[values]`` built at run time: pydantic makes it a const or an enum, the grammar a choice."""
    literal: Any = Literal[values]
    return literal


def _list_of(models: Sequence[type[BaseModel]]) -> Any:
    """``list[A | B | ...]`` built at run time."""
    return types.GenericAlias(list, (_union(models),))


def _union(models: Sequence[type[BaseModel]]) -> Any:
    if len(models) == 1:
        return models[0]
    union: Any = models[0]
    for model in models[1:]:
        union = union | model
    return union


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part) or "Schema"

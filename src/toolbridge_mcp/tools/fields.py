"""The fields of each entity as tool parameters and as result payloads, from the contract.

The contract (:data:`toolbridge_common.contract.ENTITIES`) names each entity's payload keys
(camelCase, as stored); this module gives each key a parameter (snake_case: ``dueDate`` is
``due_date``), a type and a description, and says which ones creating an item needs. Status
values, parent types and actions come from the contract too, so a tool offers exactly what
the API writes and an assistant can write back what it read.

Inputs accept what the original tools accepted: a list as a JSON string (``'["a","b"]'``)
or, for these lists, comma-separated words; an object as a JSON string. The input schema
says so (``anyOf`` list/object or string).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from toolbridge_common.contract import Entity
from toolbridge_common.contract import entity as find_entity


def to_snake(key: str) -> str:
    """``dueDate`` → ``due_date``: payload key to tool parameter name."""
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in key)


def to_camel(name: str) -> str:
    """``parent_uid`` → ``parentUid``: tool parameter name to payload key."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# --- lenient inputs -------------------------------------------------------------------------


def _string_list(name: str) -> Callable[[Any], list[str]]:
    def parse(value: Any) -> list[str]:
        if isinstance(value, list):
            return value
        text = str(value).strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"Invalid JSON string for {name}: {exc}") from None
            if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
                raise ValueError(f"{name} must be a list of strings")
            return parsed
        return [part.strip() for part in text.split(",") if part.strip()]

    return parse


def _json_object(name: str) -> Callable[[Any], dict[str, Any]]:
    def parse(value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"Invalid JSON string for {name}: {exc}") from None
        if not isinstance(parsed, dict):
            # pydantic reports a ValueError as a validation error (a TypeError would crash)
            raise ValueError(f"{name} must be a JSON object, not {type(parsed).__name__}")  # noqa: TRY004
        return parsed

    return parse


def string_list(name: str) -> Any:
    """A list of strings, or a JSON array or comma-separated words in a string."""
    return Annotated[list[str] | str, AfterValidator(_string_list(name))]


def json_object(name: str) -> Any:
    """An object, or a JSON object in a string."""
    return Annotated[dict[str, Any] | str, AfterValidator(_json_object(name))]


def _iso8601(value: str) -> str:
    """An ISO 8601 date or date-time, kept exactly as given."""
    text = value.strip()
    for parse in (date.fromisoformat, datetime.fromisoformat):
        try:
            parse(text)
        except ValueError:
            continue
        return text
    raise ValueError(
        "must be an ISO 8601 date or date-time, e.g. 2025-06-30 or 2025-06-30T17:00:00Z"
    )


IsoDate = Annotated[str, AfterValidator(_iso8601)]
Number = int | float


# --- one payload key ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload key as a tool parameter."""

    key: str
    """As stored (camelCase)."""
    annotation: Any
    """The parameter's type (without ``None``)."""
    read: Any
    """Its type in a result payload (lenient: whatever other clients stored is read)."""
    description: str

    @property
    def param(self) -> str:
        return to_snake(self.key)


_TEXT: Final = (str, str | None)
_FLAG: Final = (bool, bool | None)
_DESCRIPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "title": "Title, in a few words.",
        "content": "Text (plain text or Markdown).",
        "tags": 'Tags, e.g. ["work", "ideas"] (a list, a JSON array string or "a, b").',
        "pinned": "Pinned to the top.",
        "description": "Details.",
        "priority": "Priority: low, medium or high.",
        "dueDate": "Due date, ISO 8601: 2025-06-30 or 2025-06-30T17:00:00Z.",
        "parentUid": "uid of the item it belongs to.",
        "author": "Who wrote it.",
        "participants": "Names or ids of the participants (a list or a JSON array string).",
        "archived": "Archived (kept, but out of the way).",
        "chatUid": "uid of the chat the message belongs to.",
        "sender": "Who sent the message.",
        "messageType": "Kind of message, e.g. text.",
        "read": "Read by the recipient.",
        "delivered": "Delivered to the recipient.",
        "categoryUid": "uid of the task list category it is filed under.",
        "color": "Display colour, e.g. #ff8800.",
        "icon": "Display icon name.",
        "name": "Name.",
        "order": "Sort position among its siblings (a number).",
    }
)
_TYPES: Final[Mapping[str, tuple[Any, Any]]] = MappingProxyType(
    {
        "tags": (string_list("tags"), list[str] | None),
        "participants": (string_list("participants"), list[str] | None),
        "pinned": _FLAG,
        "archived": _FLAG,
        "read": _FLAG,
        "delivered": _FLAG,
        "dueDate": (IsoDate, str | None),
        "order": (Number, Number | None),
    }
)
_OVERRIDES: Final[Mapping[tuple[str, str], str]] = MappingProxyType(
    {
        ("task_list_categories", "parentUid"): "uid of the parent category (for nesting).",
        ("comments", "content"): "Text of the comment.",
        ("chat_messages", "content"): "Text of the message.",
    }
)

REQUIRED: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "notes": ("title",),
        "tasks": ("title",),
        "comments": ("content", "parentType", "parentUid"),
        "chats": ("title",),
        "chat_messages": ("chatUid", "content"),
        "task_lists": ("title",),
        "task_list_categories": ("name",),
    }
)
"""Payload keys that creating (and replacing) an item needs, as the original tools had it."""

CREATE_DEFAULTS: Final[Mapping[tuple[str, str], Any]] = MappingProxyType(
    {("chats", "archived"): False}
)
"""Values the original create tools always sent (``create_chat`` sent ``archived=false``)."""


def _status(entity: Entity) -> FieldSpec:
    values = entity.status_values
    writers = [
        f"{name} sets {effect.sets['status']}"
        for name, effect in {"archive": entity.archive, **entity.actions}.items()
        if "status" in effect.sets
    ]
    description = f"Status: {', '.join(values) or 'free text'}."
    if writers:
        description += f" ({'; '.join(writers)}.)"
    kind: Any = Literal.__getitem__(values) if values else str
    return FieldSpec("status", kind, str | None, description)


def _parent_type(entity: Entity) -> FieldSpec:
    parent = entity.parent
    assert parent is not None
    kinds = tuple(find_entity(name).singular for name in parent.entities)
    return FieldSpec(
        parent.type_key or "parentType",
        Literal.__getitem__(kinds),
        str | None,
        f"What it is attached to: {', '.join(kinds)}.",
    )


def field_spec(entity: Entity, key: str) -> FieldSpec:
    """The parameter for payload key ``key`` of ``entity``."""
    if key == "status":
        return _status(entity)
    if entity.parent is not None and key == entity.parent.type_key:
        return _parent_type(entity)
    annotation, read = _TYPES.get(key, _TEXT)
    description = _OVERRIDES.get((entity.name, key)) or _DESCRIPTIONS.get(key, key)
    return FieldSpec(key, annotation, read, description)


def field_specs(entity: Entity) -> tuple[FieldSpec, ...]:
    """Every payload key of ``entity`` the tools write, required ones first."""
    required = REQUIRED[entity.name]
    keys = [*required, *(key for key in entity.fields if key not in required)]
    return tuple(field_spec(entity, key) for key in keys)


# --- result payloads ------------------------------------------------------------------------


UNTYPED_KEY = "untypedFields"
"""Payload keys whose stored value does not have the documented type are kept under this."""


class Payload(BaseModel):
    """A payload as stored; keys the tools do not know (``uid``, ``sync``, ``updatedTs``,
    whatever an app stores) are kept, and a known key that is not stored stays absent
    (a stored ``null`` stays ``null``). Other sync clients may store a known key with another
    type (``"tags": "x"``), which must not fail a whole page: such keys move, unchanged,
    under :data:`UNTYPED_KEY`."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="wrap")
    @classmethod
    def _lenient(cls, value: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(value)
        except ValidationError as exc:
            if not isinstance(value, dict):
                raise
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        raw = dict(value)
        untyped = {key: raw.pop(key) for key in sorted(bad) if key in raw}
        return handler({**raw, UNTYPED_KEY: untyped})

    # No return annotation: with one, pydantic would document the payload in the output
    # schema as that type instead of as this model (its typed keys).
    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data = handler(self)
        for key in type(self).model_fields.keys() - self.model_fields_set:
            del data[key]
        return data


def payload_model(entity: Entity) -> type[Payload]:
    """The result payload of ``entity``: its known keys typed, any other key kept."""
    title = "".join(part.capitalize() for part in entity.singular.split("_"))
    fields: dict[str, Any] = {
        spec.key: (spec.read, Field(default=None, description=spec.description))
        for spec in field_specs(entity)
    }
    return create_model(f"{title}Payload", __base__=Payload, **fields)


# --- output schemas -------------------------------------------------------------------------

_COMBINATORS = frozenset({"anyOf", "oneOf", "allOf", "not", "$ref", "enum", "const"})


def compact_nullable(schema: Any) -> Any:
    """``schema`` with each ``anyOf: [{"type": T, ...}, {"type": "null"}]`` written as
    ``"type": [T, "null"]``: the same set of values, but what MCP clients check every result
    against (the MCP SDK validates each ``structuredContent`` with jsonschema) in one type
    test instead of a branch per alternative — ~5x cheaper for a typed payload."""
    if isinstance(schema, list):
        return [compact_nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    compacted = {key: compact_nullable(value) for key, value in schema.items()}
    options = compacted.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and {"type": "null"} in options):
        return compacted
    other = options[0] if options[1] == {"type": "null"} else options[1]
    kind = other.get("type") if isinstance(other, dict) else None
    rest = {key: value for key, value in compacted.items() if key != "anyOf"}
    if not isinstance(kind, str) or _COMBINATORS & other.keys() or rest.keys() & other.keys():
        return compacted
    return {**rest, **other, "type": [kind, "null"]}

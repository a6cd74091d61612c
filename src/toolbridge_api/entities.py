"""The synced entities (from the shared contract) and how the API reads an item sent to it.

Routes, storage and the info endpoint are generated from
:data:`toolbridge_common.contract.ENTITIES`. This module adds what only the API needs: reading
the sync metadata of a pushed item (uid, updated time, ``sync`` block) and the parent an
item names (a comment's note, task or chat; a message's chat), with the original API's rules
and error texts, except where ``docs/adr/0004-original-contract.md`` says we differ.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from toolbridge_common.contract import ENTITIES, ENTITY_NAMES, Entity, entity, parse_timestamp

__all__ = [
    "ENTITIES",
    "ENTITY_NAMES",
    "MAX_MS",
    "MAX_PAYLOAD_DEPTH",
    "MIN_MS",
    "TIME_KEYS",
    "Entity",
    "Incoming",
    "InvalidItem",
    "Parent",
    "canonical_uid",
    "entity",
    "extract",
    "in_range",
    "json_depth",
    "parent_of",
]

TIME_KEYS: Final = ("updatedTs", "updatedAt", "updateTime")
"""Where a pushed item's updated time is read from, first present wins (as the original)."""

MIN_MS: Final = -62_135_596_800_000
"""0001-01-01T00:00:00Z: the earliest time a timestamp can name here."""
MAX_MS: Final = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the latest."""


MAX_PAYLOAD_DEPTH: Final = 64
"""How deeply a stored payload may nest objects and arrays, the payload object being level 1.
Every way of writing an item measures the payload itself, not the body around it (a push's
``items`` array, a ``process`` body's ``metadata`` lands one level down, as it is stored), so
whatever the API stores can be written back as it is read."""


def json_depth(value: Any) -> int:
    """How many objects and arrays nest in ``value`` at most (a scalar is 0, ``{}`` is 1)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in node)
    return deepest


MAX_CLIENT_VERSION: Final = 2**30
"""A pushed ``sync.version`` at or beyond this is refused (versions are 32-bit columns)."""


class InvalidItem(ValueError):
    """An item (pushed or written through REST) that cannot be stored; the message says why
    in the original API's words where it has them."""


def canonical_uid(value: object) -> str | None:
    """The lowercase canonical form of a UUID given as a string (also uppercase, braces,
    ``urn:uuid:`` or 32 hex digits, as the original accepts), or None."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return str(parsed)


def in_range(ms: int) -> bool:
    """Whether ``ms`` names a time between the years 1 and 9999 (what dates can show)."""
    return MIN_MS <= ms <= MAX_MS


@dataclass(frozen=True, slots=True)
class Parent:
    """The live item an item must point at: ``entity`` (plural), ``uid`` (canonical)."""

    entity: str
    uid: str
    label: str
    """How errors name it: ``note``, ``task``, ``chat``."""


def parent_of(kind: Entity, payload: Mapping[str, Any]) -> Parent | None:
    """The parent ``payload`` names if ``kind`` has one; :class:`InvalidItem` when the keys
    are missing or malformed, or the parent type is not one ``kind`` may point at."""
    ref = kind.parent
    if ref is None:
        return None
    raw_uid = payload.get(ref.key)
    if ref.type_key is None:
        target = entity(ref.entities[0])
        if not isinstance(raw_uid, str):
            raise InvalidItem(f"missing {ref.key}")
        uid = canonical_uid(raw_uid)
        if uid is None:
            raise InvalidItem(f"invalid {ref.key}: {raw_uid[:64]}")
        return Parent(target.name, uid, target.singular)
    raw_type = payload.get(ref.type_key)
    if not isinstance(raw_type, str):
        raise InvalidItem(f"missing {ref.type_key}")
    if not isinstance(raw_uid, str):
        raise InvalidItem(f"missing {ref.key}")
    uid = canonical_uid(raw_uid)
    if uid is None:
        raise InvalidItem(f"invalid {ref.key}")
    allowed = {entity(name).singular: name for name in ref.entities}
    if raw_type not in allowed:
        names = [f"'{name}'" for name in allowed]
        choices = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise InvalidItem(f"invalid parent_type: {raw_type[:64]} (must be {choices})")
    return Parent(allowed[raw_type], uid, raw_type)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A pushed item once its sync metadata is read. ``problem`` is set when the item is
    readable but refused (its ack still names its uid, version and time)."""

    uid: str
    updated_ms: int
    deleted_ms: int | None
    version: int
    payload: dict[str, Any]
    parent: Parent | None = None
    problem: str | None = None


def _updated_ms(item: Mapping[str, Any], now_ms: int) -> int:
    for key in TIME_KEYS:
        value = item.get(key)
        if value is None:
            continue
        ms = parse_timestamp(value)
        if ms is None or not in_range(ms):
            shown = value[:64] if isinstance(value, str) else value
            raise InvalidItem(
                f"invalid {key}: {shown!r} (send RFC 3339 like 2025-11-03T10:00:00Z,"
                " or epoch milliseconds)"
            )
        if ms != 0:
            return ms
    return now_ms


def _deleted_ms(value: object, updated_ms: int) -> int:
    """A tombstone's time: its ``deletedAt``, else (absent) its updated time."""
    if value is None:
        return updated_ms
    ms = parse_timestamp(value)
    if ms is None or not in_range(ms):
        shown = value[:64] if isinstance(value, str) else value
        raise InvalidItem(f"invalid sync.deletedAt: {shown!r} (send RFC 3339 or epoch ms)")
    return ms or updated_ms


def extract(kind: Entity, item: dict[str, Any], now_ms: int) -> Incoming:
    """Reads a pushed item as the original does: ``uid`` (a UUID string), the updated time
    (``updatedTs``, ``updatedAt``, ``updateTime``; none: ``now_ms``), ``sync.version`` (a
    number, else 1), ``sync.isDeleted``/``sync.deletedAt`` (tombstone), and the parent of a
    comment or message. :class:`InvalidItem` for what the original refuses while reading
    (its ack names no uid); a refused parent type comes back as ``problem``.

    Differences (ADR 0004): an updated time that is present but unreadable is refused
    instead of replaced by the server's clock (``sync.deletedAt`` too), a JSON number is read
    as milliseconds, and a ``sync.version`` beyond 32 bits is refused instead of read as 1.
    """
    uid = canonical_uid(item.get("uid"))
    if uid is None:
        raise InvalidItem("missing or invalid uid")
    updated_ms = _updated_ms(item, now_ms)
    version = 1
    deleted_ms: int | None = None
    sync = item.get("sync")
    if isinstance(sync, dict):
        number = sync.get("version")
        if isinstance(number, int | float) and not isinstance(number, bool):
            if not abs(number) < MAX_CLIENT_VERSION:
                raise InvalidItem(f"invalid sync.version: {number!r} (must be below 2**30)")
            version = int(number)
        if sync.get("isDeleted") is True:
            deleted_ms = _deleted_ms(sync.get("deletedAt"), updated_ms)
    version = version or 1
    parent: Parent | None = None
    problem: str | None = None
    if kind.parent is not None:
        try:
            parent = parent_of(kind, item)
        except InvalidItem as refused:
            if not str(refused).startswith("invalid parent_type"):
                raise
            problem = str(refused)
    return Incoming(uid, updated_ms, deleted_ms, version, item, parent, problem)

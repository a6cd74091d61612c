"""The ToolBridge wire contract, written once: what the API and its clients must agree on.

The original system (the Go API of ``erauner12/toolbridge-api``) defines it; the API routes,
the MCP tools and the tests are generated from or checked against this module. No web
framework, database or MCP import here: the API, the MCP server and the dev tools all use it.

Where this project differs from the original on purpose, ``docs/adr/0004-original-contract.md``
lists the difference and why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

# --- versions and limits -------------------------------------------------------------------

API_VERSION: Final = "1.1"
MIN_CLIENT_VERSION: Final = "0.1.0"
DEFAULT_LIST_LIMIT: Final = 500
"""Page size of list and pull when the client names none."""
MAX_LIST_LIMIT: Final = 1000
"""Larger ``limit`` values are clamped to this (as the original does)."""
RECOMMENDED_BATCH: Final = 500
BACKOFF_MS_ON_429: Final = 1500
SESSION_TTL_SECONDS: Final = 30 * 60
TENANT_MAX_SKEW_SECONDS: Final = 300
WIPE_CONFIRMATION: Final = "WIPE"
MCP_LIST_LIMIT: Final = 100
"""The original MCP tools' default page size."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``burst`` requests at once, refilled at ``max_requests`` per window."""

    window_seconds: int
    max_requests: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.max_requests / self.window_seconds


ENTITY_RATE_LIMIT: Final = RateLimit(window_seconds=60, max_requests=600, burst=120)
"""Per user, one bucket for the REST routes and another for push/pull."""
AUTH_RATE_LIMIT: Final = RateLimit(window_seconds=60, max_requests=60, burst=20)
"""Per user, one more bucket for sync sessions, wipe and state (the original's newer
"auth" limiter)."""

# --- headers -------------------------------------------------------------------------------

HEADER_CORRELATION_ID: Final = "X-Correlation-ID"
HEADER_TENANT_ID: Final = "X-TB-Tenant-ID"
HEADER_TIMESTAMP: Final = "X-TB-Timestamp"
HEADER_SIGNATURE: Final = "X-TB-Signature"
HEADER_SYNC_SESSION: Final = "X-Sync-Session"
HEADER_SYNC_EPOCH: Final = "X-Sync-Epoch"
HEADER_IF_MATCH: Final = "If-Match"
HEADER_RATE_LIMIT: Final = "X-RateLimit-Limit"
HEADER_RATE_REMAINING: Final = "X-RateLimit-Remaining"
HEADER_RATE_RESET: Final = "X-RateLimit-Reset"
HEADER_RATE_BURST: Final = "X-RateLimit-Burst"
HEADER_DEBUG_SUB: Final = "X-Debug-Sub"
HEADER_IDEMPOTENCY_KEY: Final = "Idempotency-Key"
"""A write sent again with the same key is not applied twice; the first answer is replayed."""
HEADER_IDEMPOTENT_REPLAYED: Final = "Idempotent-Replayed"

EPOCH_MISMATCH: Final = "epoch_mismatch"
"""The ``error`` of a 409 whose body also carries the server's ``epoch``."""


def tenant_signature(secret: str, tenant_id: str, timestamp_ms: str) -> str:
    """``X-TB-Signature``: lowercase hex HMAC-SHA256 of ``"{tenant_id}:{timestamp_ms}"``."""
    message = f"{tenant_id}:{timestamp_ms}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def tenant_headers(secret: str, tenant_id: str, now_ms: int) -> dict[str, str]:
    """The three tenant headers for one request sent at ``now_ms`` (sign every attempt)."""
    stamp = str(now_ms)
    return {
        HEADER_TENANT_ID: tenant_id,
        HEADER_TIMESTAMP: stamp,
        HEADER_SIGNATURE: tenant_signature(secret, tenant_id, stamp),
    }


def error_body(message: str, correlation_id: str, **extra: Any) -> dict[str, Any]:
    """Every JSON error: ``{"error": ..., "correlation_id": ...}`` plus named extras."""
    return {"error": message, "correlation_id": correlation_id, **extra}


# --- time and cursors ----------------------------------------------------------------------

_MS_TEXT = re.compile(r"-?\d{1,19}")


def format_ms(ms: int) -> str:
    """RFC 3339 in UTC with at most millisecond precision and no trailing zeros, as the
    original writes every ``updatedAt``: ``2024-11-03T12:00:00Z``, ``...00.12Z``."""
    seconds, millis = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += "." + f"{millis:03d}".rstrip("0")
    return text + "Z"


def parse_timestamp(value: object) -> int | None:
    """Milliseconds since the epoch from an RFC 3339 string, a string of milliseconds or a
    JSON number of milliseconds; ``None`` if ``value`` is none of those."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 2**63 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _MS_TEXT.fullmatch(text):
        return int(text)
    if "T" not in text and "t" not in text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    whole = int(parsed.replace(microsecond=0).timestamp())
    return whole * 1000 + parsed.microsecond // 1000


def encode_cursor(updated_ms: int, uid: str) -> str:
    """A position in (updated time, uid) order: base64url without padding of
    ``"{ms}|{uid}"``, so a cursor of the original API resumes here and the other way round."""
    raw = f"{updated_ms}|{uid.lower()}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str] | None:
    """``(updated_ms, uid)`` of a cursor, or ``None`` when it is not one."""
    if not cursor or len(cursor) > 200 or "=" in cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    ms_text, sep, uid_text = raw.partition("|")
    if not sep or not _MS_TEXT.fullmatch(ms_text):
        return None
    try:
        uid = str(uuid.UUID(uid_text))
    except ValueError:
        return None
    return int(ms_text), uid


# --- entities ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Effect:
    """What an ``archive`` or ``process`` action writes into the payload."""

    sets: Mapping[str, Any]
    about: str

    def apply(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A new payload with the effect applied; the input is left untouched."""
        return {**payload, **self.sets}


def _effect(about: str = "", **sets: Any) -> Effect:
    shown = ", ".join(f"{key}={_show(value)}" for key, value in sets.items())
    return Effect(MappingProxyType(sets), about or shown)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class ParentRef:
    """A payload key that must name a live item of another entity (comments, messages)."""

    key: str
    """The uid key in the payload, e.g. ``parentUid``."""
    entities: tuple[str, ...]
    """The entities it may point at."""
    type_key: str | None = None
    """The payload key naming which entity (``parentType``: ``note``/``task``), if any."""


@dataclass(frozen=True, slots=True)
class Entity:
    """One synced collection, served at ``/v1/{name}`` and ``/v1/sync/{name}/push|pull``."""

    name: str
    singular: str
    label: str
    """How messages name one item (``chat message``)."""
    table: str
    """The key of this entity in wipe's ``deleted`` counts (the original's table name)."""
    archive: Effect
    actions: Mapping[str, Effect]
    parent: ParentRef | None = None
    status_values: tuple[str, ...] = ()
    """Values of ``status`` that this entity's actions write (what apps understand)."""
    about: str = ""
    unknown_action: str = "invalid action: {action}"
    fields: tuple[str, ...] = field(default=())
    """Payload keys the original tools write (camelCase), besides ``uid``/``sync``."""

    @property
    def path(self) -> str:
        return f"/v1/{self.name}"

    @property
    def sync_path(self) -> str:
        return f"/v1/sync/{self.name}"

    def action_help(self) -> str:
        """``pin (pinned=true), unpin (pinned=false)``: for descriptions and errors."""
        return ", ".join(f"{name} ({effect.about})" for name, effect in self.actions.items())


_ARCHIVED_STATUS = _effect(status="archived")
_ARCHIVED_FLAG = _effect(archived=True)

ENTITIES: Final[tuple[Entity, ...]] = (
    Entity(
        name="notes",
        singular="note",
        label="note",
        table="note",
        archive=_ARCHIVED_STATUS,
        actions=MappingProxyType(
            {
                "pin": _effect(pinned=True),
                "unpin": _effect(pinned=False),
                "archive": _effect(status="archived"),
                "unarchive": _effect(status="active"),
            }
        ),
        status_values=("active", "archived"),
        about="Notes are titled texts with tags.",
        fields=("title", "content", "tags", "pinned", "status"),
    ),
    Entity(
        name="tasks",
        singular="task",
        label="task",
        table="task",
        archive=_ARCHIVED_STATUS,
        actions=MappingProxyType(
            {
                "start": _effect(status="in_progress"),
                "complete": _effect(status="completed"),
                "reopen": _effect(status="open"),
            }
        ),
        status_values=("open", "in_progress", "completed", "archived"),
        about="Tasks have a title, description, status, priority and due date.",
        fields=("title", "description", "status", "priority", "dueDate", "tags"),
    ),
    Entity(
        name="comments",
        singular="comment",
        label="comment",
        table="comment",
        archive=_ARCHIVED_STATUS,
        actions=MappingProxyType(
            {"resolve": _effect(status="resolved"), "reopen": _effect(status="open")}
        ),
        parent=ParentRef("parentUid", ("notes", "tasks", "chats"), type_key="parentType"),
        status_values=("open", "resolved", "archived"),
        about="Comments are attached to a note, a task or a chat.",
        fields=("content", "parentType", "parentUid", "author", "tags", "status"),
    ),
    Entity(
        name="chats",
        singular="chat",
        label="chat",
        table="chat",
        archive=_ARCHIVED_FLAG,
        actions=MappingProxyType(
            {"resolve": _effect(status="resolved"), "reopen": _effect(status="active")}
        ),
        status_values=("active", "resolved"),
        about="Chats are conversations with participants; their messages are chat_messages.",
        fields=("title", "description", "participants", "archived", "tags", "status"),
    ),
    Entity(
        name="chat_messages",
        singular="chat_message",
        label="chat message",
        table="chat_message",
        archive=_ARCHIVED_FLAG,
        actions=MappingProxyType(
            {"mark_read": _effect(read=True), "mark_delivered": _effect(delivered=True)}
        ),
        parent=ParentRef("chatUid", ("chats",)),
        about="Chat messages belong to a chat (chat_uid).",
        fields=("chatUid", "content", "sender", "messageType", "tags", "read", "delivered"),
    ),
    Entity(
        name="task_lists",
        singular="task_list",
        label="task_list",
        table="task_list",
        archive=_ARCHIVED_FLAG,
        actions=MappingProxyType({"unarchive": _effect(archived=False)}),
        about="Task lists group tasks (a task names its list in taskListUid).",
        unknown_action="unknown action: {action}",
        fields=("title", "description", "categoryUid", "color", "icon"),
    ),
    Entity(
        name="task_list_categories",
        singular="task_list_category",
        label="task_list_category",
        table="task_list_category",
        archive=_ARCHIVED_FLAG,
        actions=MappingProxyType({"unarchive": _effect(archived=False)}),
        about="Task list categories organise task lists (parentUid nests them, order sorts).",
        unknown_action="unknown action: {action}",
        fields=("name", "parentUid", "order"),
    ),
)

ENTITY_NAMES: Final[tuple[str, ...]] = tuple(entity.name for entity in ENTITIES)
_BY_NAME: Final[Mapping[str, Entity]] = MappingProxyType({e.name: e for e in ENTITIES})
_BY_SINGULAR: Final[Mapping[str, Entity]] = MappingProxyType({e.singular: e for e in ENTITIES})


def entity(name: str) -> Entity:
    """The entity called ``name`` (plural, as in its path) or its singular."""
    found = _BY_NAME.get(name) or _BY_SINGULAR.get(name)
    if found is None:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITY_NAMES)}")
    return found


# --- payload sync metadata -----------------------------------------------------------------


def stamp_payload(
    payload: Mapping[str, Any], *, uid: str, updated_ms: int, version: int, deleted_ms: int | None
) -> dict[str, Any]:
    """The payload as a REST write stores it: ``uid``, ``updatedTs`` and a fresh ``sync``
    object (``version``, ``isDeleted``, ``deletedAt`` when deleted), as the original does."""
    sync: dict[str, Any] = {"version": version, "isDeleted": deleted_ms is not None}
    if deleted_ms is not None:
        sync["deletedAt"] = format_ms(deleted_ms)
    return {**payload, "uid": uid, "updatedTs": format_ms(updated_ms), "sync": sync}


def info(server_time: datetime) -> dict[str, Any]:
    """The body of ``GET /v1/sync/info``."""
    return {
        "apiVersion": API_VERSION,
        "serverTime": server_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "entities": {
            name: {"maxLimit": MAX_LIST_LIMIT, "push": True, "pull": True}
            for name in sorted(ENTITY_NAMES)
        },
        "locking": {"supported": True, "mode": "session"},
        "minClientVersion": MIN_CLIENT_VERSION,
        "rateLimit": {
            "windowSeconds": ENTITY_RATE_LIMIT.window_seconds,
            "maxRequests": ENTITY_RATE_LIMIT.max_requests,
            "burst": ENTITY_RATE_LIMIT.burst,
        },
        "hints": {"recommendedBatch": RECOMMENDED_BATCH, "backoffMsOn429": BACKOFF_MS_ON_429},
    }

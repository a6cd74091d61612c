"""Request and response bodies, as documented in the OpenAPI schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from toolbridge_api.db.sync_state import EpochState, Session


class ErrorOut(BaseModel):
    """Every error answer. Some carry more fields: ``epoch`` (409 epoch_mismatch), ``version``
    (412, the item's current version)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="What went wrong and, where possible, what to fix.")
    correlation_id: str = Field(description="Also in the X-Correlation-ID response header.")


_ERROR_MEANINGS = {
    400: "Malformed request: bad JSON, wrong types, bad UUID, cursor, limit or header.",
    401: "Missing or invalid access token (or tenant headers).",
    403: "Authenticated, but not allowed (e.g. someone else's sync session).",
    404: "No such item or session for this caller, or the parent an item names (the body's"
    " parent field says which).",
    409: "epoch_mismatch: the caller's epoch changed (wipe); resynchronise.",
    410: "The item was deleted (GET with includeDeleted=true still shows it).",
    412: "If-Match does not name the item's current version.",
    408: "The request's body did not arrive in time (TOOLBRIDGE_API_BODY_TIMEOUT_SECONDS).",
    413: "Request body larger than the server's limit.",
    422: "Idempotency-Key already used for a different request: send a new key.",
    428: "Missing, unknown or expired X-Sync-Session: create one with POST /v1/sync/sessions.",
    429: "Rate limit exceeded; see Retry-After.",
    431: "Too many request headers (TOOLBRIDGE_API_MAX_HEADER_COUNT).",
    503: "A dependency (database, identity provider keys) is unavailable or busy; see "
    "Retry-After. Nothing was written, unless the error says the write may have been applied.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error answers a route can give."""
    return {
        status: {"model": ErrorOut, "description": _ERROR_MEANINGS[status]} for status in statuses
    }


class ItemOut(BaseModel):
    """One item, as the original API answers: ``deletedAt`` only when it is soft-deleted."""

    uid: uuid.UUID
    version: int = Field(description="Grows by exactly one with every change.")
    updatedAt: datetime = Field(description="RFC 3339, UTC, millisecond precision.")
    deletedAt: datetime | None = Field(
        default=None, description="Present only when the item is soft-deleted."
    )
    payload: dict[str, Any] = Field(
        description="The item. REST writes stamp it with uid, updatedTs and sync"
        " {version, isDeleted, deletedAt}; pushed payloads are stored as sent."
    )


class ItemPage(BaseModel):
    items: list[ItemOut]
    nextCursor: str | None = Field(
        default=None,
        description="Present whenever the page has items: pass it as `cursor` for the next"
        " page. Absent on an empty page, which is the end.",
    )


class ProcessIn(BaseModel):
    """Body of ``POST /v1/{entity}/{uid}/process``; each entity documents its own actions.
    An action the entity does not have is refused with a 400 that lists the valid ones."""

    model_config = ConfigDict(extra="forbid")
    ACTION: ClassVar[str] = "One of the entity's actions (also listed by GET /v1/sync/info)."

    action: str = Field(description=ACTION)
    metadata: dict[str, Any] | None = Field(
        default=None, description="Recorded in the payload as lastActionMetadata."
    )


class PushIn(BaseModel):
    """Body of ``POST /v1/sync/{entity}/push``: items applied in order, in one transaction."""

    items: list[dict[str, Any]] | None = Field(
        default=None,
        description="Each an item payload with uid (UUID), updatedTs (RFC 3339 or epoch ms;"
        " updatedAt and updateTime are read too; none: the server's time) and optionally"
        " sync {version, isDeleted, deletedAt}. An item is stored, exactly as sent, only if"
        " its time is strictly newer than the stored one's (last writer wins).",
    )


class PushAck(BaseModel):
    """The outcome of one pushed item, in the order of the items."""

    uid: str = Field(description='The item\'s uid (lowercase), "" if it could not be read.')
    version: int = Field(description="The stored version (for a stale push: the server's).")
    updatedAt: str = Field(description='The stored time (RFC 3339), "" if unknown.')
    error: str | None = Field(default=None, description="Present when the item was refused.")


class Tombstone(BaseModel):
    uid: uuid.UUID
    deletedAt: datetime


class PullOut(BaseModel):
    """One page of changes in (updated time, uid) order."""

    upserts: list[dict[str, Any]] = Field(description="Payloads of live items, as stored.")
    deletes: list[Tombstone] = Field(description="Items deleted since the cursor.")
    nextCursor: str | None = Field(
        default=None,
        description="Present whenever the page has rows: pass it as `cursor` to continue;"
        " keep it to resume later (it is a high-water mark). Absent on an empty page.",
    )


class SessionOut(BaseModel):
    id: uuid.UUID
    userId: str
    createdAt: datetime
    expiresAt: datetime
    epoch: int

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        return cls(
            id=uuid.UUID(session.id),
            userId=session.user_id,
            createdAt=session.created_at,
            expiresAt=session.expires_at,
            epoch=session.epoch,
        )


class WipeIn(BaseModel):
    """Body of ``POST /v1/sync/wipe``: the confirmation that all data is to go."""

    confirm: Literal["WIPE"] = Field(description='Exactly "WIPE".')
    mode: Any = Field(default=None, description="Accepted and ignored (as the original).")


class WipeOut(BaseModel):
    epoch: int = Field(description="The caller's new epoch; every client must resynchronise.")
    deleted: dict[str, int] = Field(
        description="Items removed for good, per entity (the original's table names: note,"
        " task, comment, chat, chat_message, task_list, task_list_category)."
    )


class StateOut(BaseModel):
    """The caller's sync state; the wipe keys are absent until a first wipe."""

    epoch: int
    lastWipeAt: datetime | None = Field(default=None, description="When the last wipe ran.")
    lastWipeBy: str | None = Field(default=None, description="The user id that wiped.")

    @classmethod
    def of(cls, state: EpochState) -> StateOut:
        return cls(epoch=state.epoch, lastWipeAt=state.last_wipe_at, lastWipeBy=state.last_wipe_by)


class RateLimitHealthOut(BaseModel):
    backend: Literal["memory", "redis"] = Field(
        description="Where the rate-limit buckets are kept: this process's memory, or Redis."
    )
    shared: bool = Field(
        description="Whether every API process takes from the same buckets now; false without "
        "Redis, and while Redis does not answer (this process then limits on its own)."
    )


class HealthOut(BaseModel):
    status: str
    database: str
    rate_limit: RateLimitHealthOut

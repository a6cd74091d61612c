"""What the API answers, typed: items, pages, sync sessions.

Field names are the wire's (camelCase) through aliases, so a model dumps back to exactly the
shape the API sent and the original MCP tools returned: ``uid, version, updatedAt,
deletedAt, payload`` and ``items, nextCursor``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_WIRE = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class Item(BaseModel):
    """One stored item of any entity."""

    model_config = _WIRE

    uid: str
    version: int = Field(
        description="The item's version; pass it as if_match to change only this version."
    )
    updated_at: str | None = Field(
        default=None, alias="updatedAt", description="When it last changed (RFC 3339, UTC)."
    )
    deleted_at: str | None = Field(
        default=None, alias="deletedAt", description="When it was deleted; null while it is not."
    )
    payload: dict[str, Any] = Field(description="The item's fields as stored.")


class Page(BaseModel):
    """One page of a list, oldest change first."""

    model_config = _WIRE

    items: list[Item]
    next_cursor: str | None = Field(
        default=None,
        alias="nextCursor",
        description="Pass as cursor for the next page; null (or absent) when this page is empty.",
    )


class SessionInfo(BaseModel):
    """A sync session as the API describes it."""

    model_config = _WIRE

    id: str
    epoch: int = 0
    user_id: str | None = Field(default=None, alias="userId")
    created_at: str | None = Field(default=None, alias="createdAt")
    expires_at: str | None = Field(default=None, alias="expiresAt")

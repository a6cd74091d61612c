"""Request and response bodies, as documented in the OpenAPI schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from toolbridge_api.db.store import EntityState, Session


class ItemOut(BaseModel):
    """One item. ``deletedAt`` is always present: null unless the item is soft-deleted."""

    uid: uuid.UUID
    version: int
    updatedAt: datetime
    deletedAt: datetime | None
    payload: dict[str, Any]


class ItemPage(BaseModel):
    items: list[ItemOut]
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class ProcessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="One of the entity's actions (see GET /v1/sync/info).")
    metadata: dict[str, Any] | None = None


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


class WipeOut(BaseModel):
    epoch: int
    deleted: int = Field(description="How many items were removed for good.")


class EntityStateOut(BaseModel):
    count: int = Field(description="Live (not deleted) items.")
    deleted: int = Field(description="Soft-deleted items.")
    latestVersion: int
    latestUpdatedAt: datetime | None

    @classmethod
    def of(cls, state: EntityState | None) -> EntityStateOut:
        if state is None:
            return cls(count=0, deleted=0, latestVersion=0, latestUpdatedAt=None)
        return cls(
            count=state.count,
            deleted=state.deleted,
            latestVersion=state.latest_version,
            latestUpdatedAt=state.latest_updated_at,
        )


class StateOut(BaseModel):
    epoch: int
    userId: str
    entities: dict[str, EntityStateOut]


class LimitsOut(BaseModel):
    listDefaultLimit: int
    listMaxLimit: int
    maxBodyBytes: int
    sessionTtlSeconds: float
    rateLimitRequests: int
    rateLimitWindowSeconds: float
    rateLimitBurst: int


class InfoOut(BaseModel):
    name: str
    version: str
    entities: dict[str, list[str]] = Field(description="Each entity and its process actions.")
    limits: LimitsOut
    tenantHeadersRequired: bool


class HealthOut(BaseModel):
    status: str
    database: str

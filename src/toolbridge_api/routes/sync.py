"""Sync sessions, epochs, wipe and state: what a sync client sets up before touching items."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from toolbridge_api.entities import ENTITY_NAMES
from toolbridge_api.errors import ApiError
from toolbridge_api.routes.context import EPOCH_HEADER, Caller, SyncStateDep
from toolbridge_api.routes.models import (
    EntityStateOut,
    SessionOut,
    StateOut,
    WipeOut,
    error_responses,
)

router = APIRouter(
    prefix="/v1/sync", tags=["sync"], responses=error_responses(400, 401, 403, 404, 429, 503)
)


def _not_found(session_id: uuid.UUID) -> ApiError:
    return ApiError(404, f"no such live session: {session_id}")


@router.post("/sessions", status_code=201, operation_id="create_session")
async def create_session(
    caller: Caller, sync_state: SyncStateDep, response: Response
) -> SessionOut:
    """Starts a sync session (TTL from settings); the epoch is also in ``X-Sync-Epoch``."""
    session = await sync_state.create_session(caller)
    response.headers[EPOCH_HEADER] = str(session.epoch)
    return SessionOut.of(session)


@router.get("/sessions/{session_id}", operation_id="get_session")
async def get_session(
    caller: Caller, sync_state: SyncStateDep, session_id: uuid.UUID, response: Response
) -> SessionOut:
    """The caller's live session; unknown, expired and other users' sessions are all 404."""
    session = await sync_state.get_session(caller, str(session_id))
    if session is None:
        raise _not_found(session_id)
    response.headers[EPOCH_HEADER] = str(session.epoch)
    return SessionOut.of(session)


@router.delete("/sessions/{session_id}", status_code=204, operation_id="delete_session")
async def delete_session(
    caller: Caller, sync_state: SyncStateDep, session_id: uuid.UUID
) -> Response:
    """Ends the caller's session; other users' sessions are 404 and stay untouched."""
    if not await sync_state.delete_session(caller, str(session_id)):
        raise _not_found(session_id)
    return Response(status_code=204)


@router.post("/wipe", operation_id="wipe")
async def wipe(caller: Caller, sync_state: SyncStateDep, response: Response) -> WipeOut:
    """Deletes all the caller's items for good and bumps their epoch, in one transaction:
    every client then gets 409 epoch_mismatch and must resynchronise from scratch."""
    epoch, deleted = await sync_state.wipe(caller)
    response.headers[EPOCH_HEADER] = str(epoch)
    return WipeOut(epoch=epoch, deleted=deleted)


@router.get("/state", operation_id="sync_state")
async def state(caller: Caller, sync_state: SyncStateDep, response: Response) -> StateOut:
    """The caller's epoch and, per entity, item counts and the latest version."""
    epoch = await sync_state.epoch(caller)
    per_entity = await sync_state.state(caller)
    response.headers[EPOCH_HEADER] = str(epoch)
    return StateOut(
        epoch=epoch,
        userId=caller.user_id,
        entities={name: EntityStateOut.of(per_entity.get(name)) for name in ENTITY_NAMES},
    )

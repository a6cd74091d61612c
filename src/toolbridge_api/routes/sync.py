"""Sync sessions, wipe and state: what a sync client sets up before touching items, and the
way to start over. All in the "auth" rate-limit group."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from toolbridge_api.db.sync_state import Session
from toolbridge_api.errors import ApiError
from toolbridge_api.routes.context import (
    EPOCH_HEADER,
    SyncStateDep,
    rate_limited,
    session_required,
)
from toolbridge_api.routes.models import (
    SessionOut,
    StateOut,
    WipeIn,
    WipeOut,
    error_responses,
)
from toolbridge_api.security import Principal
from toolbridge_common.contract import WIPE_CONFIRMATION

router = APIRouter(prefix="/v1/sync", tags=["sync"])

SessionsCaller = Annotated[Principal, Depends(rate_limited("auth"))]
WithSessionCaller = Annotated[Principal, Depends(session_required("auth"))]

_WIPE_HOW = f'send {{"confirm": "{WIPE_CONFIRMATION}"}} to delete all your data for good'


async def _session_of(caller: Principal, sync_state: SyncStateDep, session_id: str) -> Session:
    """The live session ``session_id``: 404 if there is none, 403 if it is someone else's."""
    session = await sync_state.find_session(session_id)
    if session is None:
        raise ApiError(404, f"no such live session: {session_id[:64]!a}")
    if (session.tenant_id, session.user_id) != (caller.tenant_id, caller.user_id):
        raise ApiError(403, "this session belongs to another user")
    return session


@router.post(
    "/sessions",
    status_code=201,
    operation_id="create_session",
    responses=error_responses(401, 429, 503),
)
async def create_session(
    caller: SessionsCaller, sync_state: SyncStateDep, response: Response
) -> SessionOut:
    """Starts a sync session (30 minutes from now, not extended by use); its epoch is also
    in ``X-Sync-Epoch``."""
    session = await sync_state.create_session(caller)
    response.headers[EPOCH_HEADER] = str(session.epoch)
    return SessionOut.of(session)


@router.get(
    "/sessions/{session_id}",
    operation_id="get_session",
    responses=error_responses(401, 403, 404, 429, 503),
)
async def get_session(
    caller: SessionsCaller, sync_state: SyncStateDep, session_id: str
) -> SessionOut:
    """One of the caller's live sessions; 404 if unknown or expired, 403 if another user's."""
    return SessionOut.of(await _session_of(caller, sync_state, session_id))


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    operation_id="delete_session",
    responses=error_responses(401, 403, 404, 429, 503),
)
async def delete_session(
    caller: SessionsCaller, sync_state: SyncStateDep, session_id: str
) -> Response:
    """Ends one of the caller's sessions; 404 if unknown or expired, 403 if another user's
    (which stays untouched)."""
    await _session_of(caller, sync_state, session_id)
    if not await sync_state.delete_session(caller, session_id):
        raise ApiError(404, f"no such live session: {session_id[:64]!a}")
    return Response(status_code=204)


@router.post(
    "/wipe",
    operation_id="wipe",
    responses=error_responses(400, 401, 403, 413, 428, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WipeIn.model_json_schema()}},
        }
    },
)
async def wipe(
    caller: WithSessionCaller, sync_state: SyncStateDep, request: Request, response: Response
) -> WipeOut:
    """Deletes all the caller's items for good, bumps their epoch, records the wipe and ends
    all their sessions (this one too), in one transaction. Needs a session and the body
    ``{"confirm": "WIPE"}``. Every client then gets 428 on its old session, and 409
    epoch_mismatch until it takes the new epoch from a new session."""
    _confirmed(await request.body())
    wiped = await sync_state.wipe(caller)
    response.headers[EPOCH_HEADER] = str(wiped.epoch)
    return WipeOut(epoch=wiped.epoch, deleted=wiped.deleted)


def _confirmed(body: bytes) -> None:
    """400 unless the body is a JSON object whose ``confirm`` is exactly ``WIPE``."""
    try:
        parsed: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, f"request body is not JSON: {_WIPE_HOW}") from None
    if not isinstance(parsed, dict) or parsed.get("confirm") != WIPE_CONFIRMATION:
        raise ApiError(400, f"confirmation required: {_WIPE_HOW}")


@router.get(
    "/state",
    operation_id="sync_state",
    response_model_exclude_none=True,
    responses=error_responses(401, 403, 428, 429, 503),
)
async def state(caller: WithSessionCaller, sync_state: SyncStateDep) -> StateOut:
    """The caller's epoch and, once they have wiped, when and by whom (their user id)."""
    return StateOut.of(await sync_state.state(caller))

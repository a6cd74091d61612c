"""Request dependencies shared by the routes: the store, the caller, the sync session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from toolbridge_api.db.store import Store, utcnow
from toolbridge_api.db.sync_state import SyncState
from toolbridge_api.errors import ApiError
from toolbridge_api.security import Authenticator, Principal

SESSION_HEADER = "X-Sync-Session"
EPOCH_HEADER = "X-Sync-Epoch"


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def authenticate(request: Request) -> Principal:
    """The authenticated caller of a ``/v1/*`` route (``AuthError`` otherwise)."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(request.headers)


def get_sync_state(request: Request) -> SyncState:
    sync_state: SyncState = request.app.state.sync_state
    return sync_state


StoreDep = Annotated[Store, Depends(get_store)]
SyncStateDep = Annotated[SyncState, Depends(get_sync_state)]
Caller = Annotated[Principal, Depends(authenticate)]


def parse_epoch(value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ApiError(400, f"{EPOCH_HEADER} must be a positive integer")
    return int(text)


async def synced_caller(
    principal: Caller,
    sync_state: SyncStateDep,
    x_sync_session: Annotated[
        str | None, Header(description="Id of the caller's live sync session.")
    ] = None,
    x_sync_epoch: Annotated[
        str | None, Header(description="The caller's sync epoch, as returned by the session.")
    ] = None,
) -> Principal:
    """The caller, once their sync session and epoch are valid (428, 403, 409 otherwise).

    A missing epoch is 428 like a missing session: both are preconditions a sync client must
    establish before touching data.
    """
    if not x_sync_session or not x_sync_session.strip():
        raise ApiError(
            428, f"missing {SESSION_HEADER} header: create one with POST /v1/sync/sessions"
        )
    session = await sync_state.check_session(x_sync_session.strip())
    if session is None or session.expires_at <= utcnow():
        raise ApiError(
            428,
            f"{SESSION_HEADER} is unknown or expired: create a new one with POST /v1/sync/sessions",
        )
    if (session.tenant_id, session.user_id) != (principal.tenant_id, principal.user_id):
        raise ApiError(403, f"{SESSION_HEADER} belongs to another user")
    if x_sync_epoch is None or not x_sync_epoch.strip():
        raise ApiError(
            428, f"missing {EPOCH_HEADER} header: send the epoch returned with the session"
        )
    if parse_epoch(x_sync_epoch) != session.current_epoch:
        raise ApiError(
            409,
            "epoch_mismatch",
            extra={"epoch": session.current_epoch},
            headers={EPOCH_HEADER: str(session.current_epoch)},
        )
    return principal


SyncedCaller = Annotated[Principal, Depends(synced_caller)]

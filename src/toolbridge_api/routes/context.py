"""Request dependencies shared by the routes: the store, the caller, their sync session, the
rate limit of the route's group and the epoch check.

Which one a route takes says what it needs, in the original API's order (the first that
fails answers):

================================  ===================================================
``Caller``                        token and tenant headers (401)
``rate_limited(group)``           + the group's rate limit (429)
``session_required(group)``       + a live ``X-Sync-Session`` of the caller's (428, 403),
                                  then the group's rate limit
``synced_caller(group)``          + that, then ``X-Sync-Epoch`` not behind the server's (409)
``SyncedCaller``                  ``synced_caller("rest")``: the entity REST routes
``DeltaCaller``                   ``synced_caller("sync")``: push and pull
================================  ===================================================

A session refused (428/403) spends no request of the budget and carries no
``X-RateLimit-*`` headers; every response after the limiter does (allowed, 429, and the
route's own errors such as 409).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from toolbridge_api.db.store import Store, utcnow
from toolbridge_api.db.sync_state import SyncState
from toolbridge_api.errors import ApiError
from toolbridge_api.middleware import defer_headers
from toolbridge_api.security import (
    Authenticator,
    AuthError,
    Principal,
    RateGroup,
    RateLimitBackend,
)
from toolbridge_common.contract import EPOCH_MISMATCH, HEADER_SYNC_EPOCH, HEADER_SYNC_SESSION

SESSION_HEADER = HEADER_SYNC_SESSION
EPOCH_HEADER = HEADER_SYNC_EPOCH
_EPOCH = re.compile(r"[+-]?[0-9]{1,18}")


# async, though they never wait: FastAPI runs a plain ``def`` dependency in a worker thread,
# a thread hop on every request for a dictionary lookup.
async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_sync_state(request: Request) -> SyncState:
    sync_state: SyncState = request.app.state.sync_state
    return sync_state


async def authenticate(request: Request) -> Principal:
    """The authenticated caller of a ``/v1/*`` route (``AuthError`` otherwise)."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(request.headers)


StoreDep = Annotated[Store, Depends(get_store)]
SyncStateDep = Annotated[SyncState, Depends(get_sync_state)]
Caller = Annotated[Principal, Depends(authenticate)]

SessionHeader = Annotated[
    str | None,
    Header(
        alias=SESSION_HEADER,
        description="Id of the caller's live sync session (POST /v1/sync/sessions).",
    ),
]
EpochHeader = Annotated[
    str | None,
    Header(
        alias=EPOCH_HEADER,
        description="The caller's sync epoch, as returned with the session; missing or not "
        "a number counts as 0. Behind the server's epoch: 409 epoch_mismatch.",
    ),
]


@dataclass(frozen=True, slots=True)
class SessionCaller:
    """A caller with a live session of their own, and their epoch on the server now."""

    principal: Principal
    epoch: int


async def _session_caller(
    principal: Caller, sync_state: SyncStateDep, session_id: SessionHeader = None
) -> SessionCaller:
    """428 without a live session, 403 for someone else's (the original's SessionRequired)."""
    if session_id is None or not session_id.strip():
        raise ApiError(
            428, f"missing {SESSION_HEADER} header: create a session with POST /v1/sync/sessions"
        )
    session = await sync_state.check_session(session_id.strip())
    if session is None or session.expires_at <= utcnow():
        raise ApiError(
            428,
            f"{SESSION_HEADER} is unknown or expired: create a new one with POST /v1/sync/sessions",
        )
    if (session.tenant_id, session.user_id) != (principal.tenant_id, principal.user_id):
        raise ApiError(403, f"{SESSION_HEADER} belongs to another user")
    return SessionCaller(principal, session.current_epoch)


WithSession = Annotated[SessionCaller, Depends(_session_caller)]


async def limit_rate(request: Request, group: RateGroup, principal: Principal) -> None:
    """Spends one request of the caller's budget in ``group``: the ``X-RateLimit-*`` headers
    go on this request's response whatever it is; 429 with ``Retry-After`` when spent."""
    limits: RateLimitBackend = request.app.state.rate_limits
    authenticator: Authenticator = request.app.state.authenticator
    decision = await limits.take(group, authenticator.rate_key(principal))
    defer_headers(request, decision.headers())
    if decision.retry_after is not None:
        wait = max(1, math.ceil(decision.retry_after))
        raise AuthError(
            429,
            f"rate limit exceeded ({limits.describe(group)}); retry after {wait} s",
            retry_after=decision.retry_after,
        )


def client_epoch(value: str | None) -> int:
    """``X-Sync-Epoch`` as the original reads it: a decimal integer; anything else is 0."""
    text = (value or "").strip()
    return int(text) if _EPOCH.fullmatch(text) else 0


def rate_limited(group: RateGroup) -> Callable[..., Awaitable[Principal]]:
    """The caller, within ``group``'s rate limit (sync sessions: ``"auth"``)."""

    async def limited(request: Request, principal: Caller) -> Principal:
        await limit_rate(request, group, principal)
        return principal

    return limited


def session_required(group: RateGroup) -> Callable[..., Awaitable[Principal]]:
    """The caller with a live session of theirs, within ``group``'s rate limit; no epoch
    check (wipe and state: ``"auth"``)."""

    async def with_session(request: Request, caller: WithSession) -> Principal:
        await limit_rate(request, group, caller.principal)
        return caller.principal

    return with_session


def synced_caller(group: RateGroup) -> Callable[..., Awaitable[Principal]]:
    """The caller with a live session, within ``group``'s rate limit, and an epoch not
    behind the server's (409 ``epoch_mismatch`` with the server's epoch otherwise; a client
    ahead is let through, as in the original).

    One dependency calling the others' functions in their order, instead of FastAPI
    resolving a tree of five on every entity request (~15% of its CPU); the parameters, and
    so the OpenAPI document, are the same."""

    async def synced(
        request: Request, epoch: EpochHeader = None, session_id: SessionHeader = None
    ) -> Principal:
        caller = await _session_caller(
            await authenticate(request), await get_sync_state(request), session_id
        )
        await limit_rate(request, group, caller.principal)
        if client_epoch(epoch) < caller.epoch:
            raise ApiError(
                409,
                EPOCH_MISMATCH,
                extra={"epoch": caller.epoch},
                headers={EPOCH_HEADER: str(caller.epoch)},
            )
        return caller.principal

    return synced


SyncedCaller = Annotated[Principal, Depends(synced_caller("rest"))]
"""The caller of an entity REST route: session, "rest" rate limit, epoch."""
DeltaCaller = Annotated[Principal, Depends(synced_caller("sync"))]
"""The caller of push and pull: session, "sync" rate limit, epoch."""

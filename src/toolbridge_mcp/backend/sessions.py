"""Sync sessions, created once per principal and reused, with single-flight recovery.

The API wants ``X-Sync-Session`` and ``X-Sync-Epoch`` on every entity request. Creating a
session per tool call would double the requests, so one is kept per principal (the service,
or each per-user caller) and replaced only when the API says so: 428 (expired or unknown) →
a new session; 409 ``epoch_mismatch`` → adopt the API's epoch. Many concurrent calls that
hit the same stale session cause one recovery, not one each.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from toolbridge_common import contract
from toolbridge_common.singleflight import SingleFlight

_MAX_PRINCIPALS = 1024


@dataclass(frozen=True, slots=True)
class SyncSession:
    """A sync session id and the epoch the server is at."""

    id: str
    epoch: int

    def headers(self) -> dict[str, str]:
        """``X-Sync-Session`` and ``X-Sync-Epoch`` for a request."""
        return {
            contract.HEADER_SYNC_SESSION: self.id,
            contract.HEADER_SYNC_EPOCH: str(self.epoch),
        }


SessionOpener = Callable[[str], Awaitable[SyncSession]]


class SessionPool:
    """The current session of each principal (least recently used beyond a bound)."""

    def __init__(self, open_session: SessionOpener, *, max_principals: int = _MAX_PRINCIPALS):
        self._open = open_session
        self._max = max_principals
        self._sessions: OrderedDict[str, SyncSession] = OrderedDict()
        self._opening: SingleFlight[str, SyncSession] = SingleFlight("sync-session")

    async def get(self, principal: str) -> SyncSession:
        """The principal's session, opened on first use."""
        session = self._sessions.get(principal)
        if session is not None:
            self._sessions.move_to_end(principal)
            return session
        return await self._single_flight(principal)

    async def renew(self, principal: str, stale: SyncSession) -> SyncSession:
        """A new session after ``stale`` was refused (428), unless another call already
        replaced it."""
        current = self._sessions.get(principal)
        if current is not None and current != stale:
            return current
        if self._sessions.get(principal) == stale:
            del self._sessions[principal]
        return await self._single_flight(principal)

    def adopt_epoch(self, principal: str, stale: SyncSession, epoch: int) -> SyncSession:
        """The session moved to the API's ``epoch`` after a 409 ``epoch_mismatch``."""
        current = self._sessions.get(principal)
        if current is not None and current != stale and current.epoch >= epoch:
            return current
        adopted = SyncSession(stale.id, epoch)
        self._store(principal, adopted)
        return adopted

    def discard(self, session_id: str) -> None:
        """Forget the session ``session_id`` (it was ended), whoever it belonged to."""
        for principal, session in list(self._sessions.items()):
            if session.id == session_id:
                del self._sessions[principal]

    def forget(self) -> None:
        """Drop every session (the server is shutting down)."""
        self._sessions.clear()

    async def _single_flight(self, principal: str) -> SyncSession:
        return await self._opening.run(principal, lambda: self._open_and_store(principal))

    async def _open_and_store(self, principal: str) -> SyncSession:
        session = await self._open(principal)
        self._store(principal, session)
        return session

    def _store(self, principal: str, session: SyncSession) -> None:
        self._sessions[principal] = session
        self._sessions.move_to_end(principal)
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)

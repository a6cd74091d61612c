"""Tenant request signing: the ``X-TB-*`` headers the API checks on every request.

The signature itself is the contract's (:func:`toolbridge_common.contract.tenant_headers`);
this module holds the configured tenant and signs at the moment a request is sent. The API
client calls :meth:`TenantSigner.sign` from an httpx request hook, which runs for every
attempt — including the resend after a refreshed token — so no attempt reuses an old
timestamp or signature.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from toolbridge_common import contract

if TYPE_CHECKING:
    import httpx

    from toolbridge_mcp.config import Settings


def now_ms() -> int:
    """Unix time in milliseconds, as ``X-TB-Timestamp`` carries it."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class TenantSigner:
    """Signs ``"{tenant_id}:{timestamp_ms}"`` with the tenant secret (hex HMAC-SHA256).

    A fresh timestamp per request, because the API rejects signatures older than its skew
    window (300 s): a signature made once at startup would stop working five minutes later.
    """

    tenant_id: str
    secret: SecretStr = field(repr=False)
    clock: Callable[[], int] = field(default=now_ms, repr=False, compare=False)
    """Milliseconds since the epoch; replaceable in tests."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantSigner | None:
        """The signer for ``TOOLBRIDGE_TENANT_ID``/``_HEADER_SECRET``, or ``None`` if unset."""
        if settings.tenant_id is None or settings.tenant_header_secret is None:
            return None
        return cls(settings.tenant_id, settings.tenant_header_secret)

    def headers(self, now_ms: int | None = None) -> dict[str, str]:
        """``X-TB-Tenant-ID``, ``X-TB-Timestamp`` (Unix ms) and ``X-TB-Signature``."""
        stamp = self.clock() if now_ms is None else now_ms
        return contract.tenant_headers(self.secret.get_secret_value(), self.tenant_id, stamp)

    async def sign(self, request: httpx.Request) -> None:
        """Sets the three headers on ``request`` now (an httpx ``request`` event hook)."""
        request.headers.update(self.headers())

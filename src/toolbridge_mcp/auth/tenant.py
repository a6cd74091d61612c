"""Tenant request signing: the ``X-TB-*`` headers the API checks on every request."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from toolbridge_mcp.config import Settings


@dataclass(frozen=True, slots=True)
class TenantSigner:
    """Signs ``"{tenant_id}:{timestamp_ms}"`` with the tenant secret (hex HMAC-SHA256).

    A fresh timestamp per request, because the API rejects signatures older than its skew
    window (300 s): a signature made once at startup would stop working five minutes later.
    """

    tenant_id: str
    secret: SecretStr = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantSigner | None:
        """The signer for ``TOOLBRIDGE_TENANT_ID``/``_HEADER_SECRET``, or ``None`` if unset."""
        if settings.tenant_id is None or settings.tenant_header_secret is None:
            return None
        return cls(settings.tenant_id, settings.tenant_header_secret)

    def headers(self, now_ms: int | None = None) -> dict[str, str]:
        """``X-TB-Tenant-ID``, ``X-TB-Timestamp`` (Unix ms) and ``X-TB-Signature``."""
        timestamp = str(time.time_ns() // 1_000_000 if now_ms is None else now_ms)
        signature = hmac.new(
            self.secret.get_secret_value().encode(),
            f"{self.tenant_id}:{timestamp}".encode(),
            hashlib.sha256,
        ).hexdigest()
        return {
            "X-TB-Tenant-ID": self.tenant_id,
            "X-TB-Timestamp": timestamp,
            "X-TB-Signature": signature,
        }

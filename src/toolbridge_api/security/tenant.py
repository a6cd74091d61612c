"""HMAC tenant headers: which tenant a request acts for, proven with the tenant secret.

The client sends ``X-TB-Tenant-ID``, ``X-TB-Timestamp`` (Unix ms) and ``X-TB-Signature`` =
hex HMAC-SHA256(secret, "{tenant_id}:{timestamp_ms}"). The timestamp window bounds replay of a
captured signature; the comparison is constant-time so the signature cannot be guessed byte
by byte. Every failure is a 401, as in the original: the caller has not proven who it is.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Mapping

from pydantic import SecretStr

from toolbridge_api.security.headers import header_value
from toolbridge_api.security.principal import AuthError, checked_tenant_id
from toolbridge_common.contract import (
    HEADER_SIGNATURE,
    HEADER_TENANT_ID,
    HEADER_TIMESTAMP,
    tenant_signature,
)

TENANT_HEADER = HEADER_TENANT_ID
TIMESTAMP_HEADER = HEADER_TIMESTAMP
SIGNATURE_HEADER = HEADER_SIGNATURE

_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


class TenantVerifier:
    """Checks the three tenant headers and returns the tenant id they prove.

    ``clock`` returns Unix time in seconds (wall clock: the timestamp comes from another host).
    """

    def __init__(
        self,
        secret: SecretStr,
        *,
        max_skew_seconds: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret.get_secret_value():
            raise ValueError("the tenant secret must not be empty")
        if max_skew_seconds <= 0:
            raise ValueError("max_skew_seconds must be positive")
        self._secret = secret
        self.max_skew_seconds = max_skew_seconds
        self._clock = clock

    def verify(self, headers: Mapping[str, str]) -> str:
        """The tenant id; ``AuthError`` 401 for missing, malformed or out-of-window headers
        and for a signature that does not match."""
        tenant_id = _required(headers, TENANT_HEADER)
        raw_timestamp = _required(headers, TIMESTAMP_HEADER).strip()
        signature = _required(headers, SIGNATURE_HEADER).strip()
        checked_tenant_id(tenant_id, source=TENANT_HEADER)
        if _TIMESTAMP.fullmatch(raw_timestamp) is None:
            raise AuthError(
                401, f"{TIMESTAMP_HEADER} must be Unix time in milliseconds (digits only)"
            )
        if _SIGNATURE.fullmatch(signature) is None:
            raise AuthError(401, f"{SIGNATURE_HEADER} must be 64 hex characters (HMAC-SHA256)")
        timestamp_ms = int(raw_timestamp)
        skew = timestamp_ms / 1000 - self._clock()
        if abs(skew) > self.max_skew_seconds:
            direction = "in the future" if skew > 0 else "too old"
            raise AuthError(
                401,
                f"{TIMESTAMP_HEADER} is {direction} by {abs(skew):.0f} s (allowed: "
                f"{self.max_skew_seconds:g} s); sign each request with the current time "
                "and check the client clock",
            )
        # Signed as sent, as the original checks it ("007" is not "7").
        expected = tenant_signature(self._secret.get_secret_value(), tenant_id, raw_timestamp)
        if not hmac.compare_digest(expected, signature.lower()):
            raise AuthError(
                401, f"{SIGNATURE_HEADER} does not match: check the tenant secret and tenant id"
            )
        return tenant_id


def _required(headers: Mapping[str, str], name: str) -> str:
    value = header_value(headers, name)
    if value is None or not value.strip():
        raise AuthError(401, f"missing {name} header (required: tenant headers are enforced)")
    return value

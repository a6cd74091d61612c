"""One call that turns request headers into a Principal or a refusal.

Order matters: cheap syntax checks first, then the tenant headers, then the token (which may
need the identity provider). The rate limit is applied per route group once the caller is
known (``toolbridge_api.routes.context``), keyed by :meth:`Authenticator.rate_key`, so
unauthenticated floods never spend a real user's budget.
"""

from __future__ import annotations

from collections.abc import Mapping

from loguru import logger

from toolbridge_api.security.headers import header_value
from toolbridge_api.security.own_keys import OwnTokens
from toolbridge_api.security.principal import (
    AuthError,
    Principal,
    checked_tenant_id,
    checked_user_id,
)
from toolbridge_api.security.tenant import TENANT_HEADER, TenantVerifier
from toolbridge_api.security.tokens import TokenVerifier
from toolbridge_common.contract import HEADER_DEBUG_SUB

DEBUG_SUB_HEADER = HEADER_DEBUG_SUB
DEFAULT_TENANT = "default"
_WARNED_DEBUG_USERS_MAX = 1_000


class Authenticator:
    """Authenticates requests: bearer token (or, in debug mode, ``X-Debug-Sub``) and tenant.
    Every refusal is an ``AuthError``."""

    def __init__(
        self,
        *,
        tokens: TokenVerifier,
        tenants: TenantVerifier | None,
        debug_sub_enabled: bool = False,
        own_tokens: OwnTokens | None = None,
    ) -> None:
        self.tokens = tokens
        self.own_tokens = own_tokens
        self.tenants = tenants
        self.debug_sub_enabled = debug_sub_enabled
        self._warned_debug_users: set[str] = set()
        if debug_sub_enabled:
            logger.warning(
                "DEBUG MODE: {} is enabled, so any caller without a token can act as ANY user. "
                "Never enable it outside local development.",
                DEBUG_SUB_HEADER,
            )

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller, or ``AuthError`` 401 (identity, tenant headers), 503 (JWKS down)."""
        token = self._bearer(headers)
        debug_sub = header_value(headers, DEBUG_SUB_HEADER) if token is None else None
        tenant_id = self._tenant(headers)
        if token is not None:
            user_id = await self._verify(token)
        else:
            assert debug_sub is not None
            user_id = self._debug_user(debug_sub)
        return Principal(tenant_id=tenant_id, user_id=user_id)

    async def _verify(self, token: str) -> str:
        """The token's subject: the API's own (exchanged) tokens are checked with its own key
        alone, every other token with the identity provider's keys alone."""
        own = self.own_tokens
        if own is not None and own.issued_here(token):
            return own.verify(token)
        return await self.tokens.verify(token)

    def rate_key(self, principal: Principal) -> str:
        """The caller's rate-limit bucket key: (tenant, user) once the tenant headers are
        signed. An unsigned tenant id is the caller's free choice: keying on it would give
        every user a fresh budget per made-up tenant, so then the user alone is the key."""
        if self.tenants is None:
            return principal.user_id
        return f"{principal.tenant_id}\x00{principal.user_id}"

    async def aclose(self) -> None:
        """Release the token verifier's connections."""
        await self.tokens.aclose()

    def _bearer(self, headers: Mapping[str, str]) -> str | None:
        """The bearer token, or None when debug mode may answer instead."""
        authorization = header_value(headers, "Authorization")
        if authorization is None or not authorization.strip():
            if header_value(headers, DEBUG_SUB_HEADER) is None:
                raise AuthError(
                    401, "missing Authorization header: send Authorization: Bearer <access token>"
                )
            if not self.debug_sub_enabled:
                raise AuthError(
                    401,
                    f"{DEBUG_SUB_HEADER} is refused: debug mode is off on this server; "
                    "send Authorization: Bearer <access token>",
                )
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError(
                401, "Authorization must use the Bearer scheme: Authorization: Bearer <token>"
            )
        token = credentials.strip()
        if token.split(maxsplit=1) != [token]:  # empty, or whitespace inside (C-speed test)
            raise AuthError(401, "Authorization: Bearer must be followed by exactly one token")
        return token

    def _tenant(self, headers: Mapping[str, str]) -> str:
        if self.tenants is not None:
            return self.tenants.verify(headers)
        claimed = header_value(headers, TENANT_HEADER)
        if claimed is None:
            return DEFAULT_TENANT
        return checked_tenant_id(claimed.strip(), source=TENANT_HEADER)

    def _debug_user(self, value: str) -> str:
        user_id = checked_user_id(value.strip(), source=DEBUG_SUB_HEADER)
        if user_id not in self._warned_debug_users:
            if len(self._warned_debug_users) < _WARNED_DEBUG_USERS_MAX:
                self._warned_debug_users.add(user_id)
            logger.warning(
                "{} used: request authenticated as {!r} WITHOUT a token (debug mode)",
                DEBUG_SUB_HEADER,
                user_id,
            )
        else:
            logger.debug("{} request as {!r} (debug mode)", DEBUG_SUB_HEADER, user_id)
        return user_id

"""What every outbound auth mode provides: :class:`OutboundAuth`.

A mode is how this server authenticates to the API. It owns everything that differs between
modes — the ``Authorization`` header, the health text, the hint for a 401/403, the token step
of ``toolbridge-mcp check``, the startup log line, and (per-user modes) the protection of the
MCP endpoint — so the rest of the server never asks which mode is on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal, Self

import httpx

if TYPE_CHECKING:
    from fastmcp.server.auth import AuthProvider

    from toolbridge_mcp.config import Settings
    from toolbridge_mcp.tokens import CacheState, TokenManager

SERVICE_PRINCIPAL = "service"
MISSING_AUTHENTICATION = (
    "Missing authentication. Configure TOOLBRIDGE_AUTH0_CLIENT_ID or TOOLBRIDGE_JWT_TOKEN."
)


class MissingAuthenticationError(Exception):
    """No credentials for this request; the message says what to configure."""


@dataclass(frozen=True, slots=True)
class AuthHealth:
    """A mode's part of the health report; never a token or secret."""

    status: Literal["ok", "degraded"]
    detail: str
    token_expires_at: datetime | None = None
    last_refresh_at: datetime | None = None
    last_refresh_success: bool | None = None
    failure_count: int = 0
    last_error: str | None = None
    token_cache: CacheState | None = None
    """Modes that cache tokens: where (:attr:`OutboundAuth.token_cache`)."""


@dataclass(frozen=True, slots=True)
class AuthCheck:
    """The token step of ``toolbridge-mcp check``: passed, failed or skipped, and why."""

    status: Literal["pass", "warn", "fail", "skip"]
    """``warn``: a token, but one the API will likely refuse or limit (said in ``detail``)."""
    detail: str


class OutboundAuth(httpx.Auth, ABC):
    """One way of authenticating to the API, as the ``httpx.Auth`` of the API client.

    Subclasses set the class attributes below and implement the abstract methods; then
    they are added to :data:`~toolbridge_mcp.auth.modes.select.OUTBOUND_MODES`.
    """

    name: ClassVar[str]
    """The mode's name in health output, metrics and logs (``auth0``, ``static``, ...)."""
    selected_by: ClassVar[str | None]
    """The setting whose presence selects this mode; ``None`` for the fallback."""
    per_user: ClassVar[bool] = False
    """Whether requests carry each MCP caller's own identity (``TOOLBRIDGE_OAUTH_*`` apply)."""
    error_hint: ClassVar[str]
    """What to check when the API refuses this mode's token (401/403)."""
    caches_tokens: ClassVar[bool] = False
    """Whether the mode keeps fetched tokens in the token cache (Redis in fleet mode)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        missing = [a for a in ("name", "selected_by", "error_hint") if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"outbound auth mode {cls.__name__} must set {', '.join(missing)}")

    @classmethod
    def is_selected(cls, settings: Settings) -> bool:
        """Whether ``settings`` choose this mode (its setting is set, or it is the fallback)."""
        return cls.selected_by is None or getattr(settings, cls.selected_by) is not None

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The mode for ``settings``; no I/O."""

    async def start(self) -> None:
        """Acquire what the mode needs (server start); a failure only degrades health."""

    async def aclose(self) -> None:
        """Release it (server stop); :meth:`start` may be called again afterwards."""

    @abstractmethod
    async def get_auth_header(self) -> str:
        """The ``Authorization`` header value for the current request (seed §4)."""

    def principal(self) -> str:
        """Whom requests are made for now; sync sessions are opened once per principal."""
        return SERVICE_PRINCIPAL

    @abstractmethod
    def health(self) -> AuthHealth:
        """The mode's state for the health report."""

    @abstractmethod
    async def check(self) -> AuthCheck:
        """The token step of ``toolbridge-mcp check`` (after :meth:`start`)."""

    @abstractmethod
    def log_startup(self) -> None:
        """Say once, at startup, how the server authenticates (seed §5 wording)."""

    def mcp_auth(self) -> AuthProvider | None:
        """How the MCP endpoint verifies its callers, for modes that use their tokens."""
        return None

    @classmethod
    def cache_secret(cls, settings: Settings) -> str | None:
        """The client secret the token cache's encryption key may be derived from, if the
        mode has one (else ``TOOLBRIDGE_TOKEN_CACHE_KEY`` is needed with Redis)."""
        del settings
        return None

    @property
    def token_cache(self) -> CacheState | None:
        """Where the mode's tokens are cached now (modes that cache tokens, once started)."""
        return None

    @property
    def manager(self) -> TokenManager | None:
        """The token manager, for modes that fetch tokens (its stats feed metrics)."""
        return None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError(f"{type(self).__name__} needs an httpx.AsyncClient")
        yield request  # pragma: no cover - makes this a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = await self.get_auth_header()
        yield request


BackendAuth = OutboundAuth
"""The former name of :class:`OutboundAuth`."""

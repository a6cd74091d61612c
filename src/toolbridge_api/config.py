"""Settings of the REST API, read from ``TOOLBRIDGE_API_*`` environment variables and ``.env``.

Every problem names the environment variable to fix and no secret value ever appears in an
error: pydantic's own messages echo inputs, so :func:`load_api_settings` rewrites them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from toolbridge_common.contract import AUTH_RATE_LIMIT, ENTITY_RATE_LIMIT, SESSION_TTL_SECONDS
from toolbridge_common.redis_urls import redis_url_problem
from toolbridge_common.settings import (
    ConfigError,
    LogLevel,
    describe_invalid,
    env_namer,
)

ENV_PREFIX = "TOOLBRIDGE_API_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.toolbridge/api.db"
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_HEADER_COUNT = 100
MIN_HS256_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key is at least as long as the hash output (256 bits)."""
FLEET_REDIS_URL = "TOOLBRIDGE_REDIS_URL"
"""The Redis of a whole fleet (API and MCP processes), read when TOOLBRIDGE_API_REDIS_URL
is not set."""

SettingsT = TypeVar("SettingsT", bound="DatabaseSettings")


env_name = env_namer(ENV_PREFIX)


class DatabaseSettings(BaseSettings):
    """What ``toolbridge-api migrate`` needs: the database, and how much to log."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        validate_by_name=True,
    )

    database_url: str = DEFAULT_DATABASE_URL
    log_level: LogLevel = "INFO"


class ApiSettings(DatabaseSettings):
    """Configuration of the ToolBridge REST API.

    Token verification needs either a JWKS URL (directly or derived from ``auth0_domain``) or
    the development HS256 secret, and then an ``audience``. With neither, only the dev-only
    ``X-Debug-Sub`` mode can authenticate, so it must be switched on explicitly.
    """

    auth0_domain: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    hs256_secret: SecretStr | None = None
    debug_sub_enabled: bool = False
    tenant_secret: SecretStr | None = None
    exchange_subject_audience: str | None = Field(
        default=None,
        description="Turns on `POST /auth/token-exchange` (RFC 8693): the audience a user's token "
        "must carry to be exchanged for an API token — the MCP server's resource URL, e.g. "
        "https://mcp.example.com/mcp. Its issuer and keys are the ones the API trusts "
        "(`TOOLBRIDGE_API_ISSUER`, the JWKS); it must differ from `TOOLBRIDGE_API_AUDIENCE`.",
    )
    exchange_token_lifetime_seconds: int = Field(
        default=600,
        ge=60,
        le=3600,
        description="Lifetime of the API tokens the exchange issues (never past the exchanged "
        "token's own expiry).",
    )
    exchange_token_issuer: str = Field(
        default="toolbridge-api",
        min_length=1,
        description="The `iss` of the API tokens the exchange issues; a token claiming it is "
        "verified with the API's own key only.",
    )
    exchange_signing_key_file: Path = Field(
        default=Path(".toolbridge/api-signing-key.pem"),
        description="The API's own RSA key for exchanged tokens (PEM), created with mode 0600 on "
        "the first start with token exchange on. API processes behind one URL must share it.",
    )
    exchange_signing_key: SecretStr | None = Field(
        default=None,
        description="The API's own RSA key as PEM, instead of the key file (e.g. a platform "
        "secret shared by every API process).",
    )
    max_timestamp_skew_seconds: float = Field(default=300, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    rate_limit_requests: int = Field(default=ENTITY_RATE_LIMIT.max_requests, ge=1)
    rate_limit_window_seconds: float = Field(default=ENTITY_RATE_LIMIT.window_seconds, gt=0)
    rate_limit_burst: int = Field(default=ENTITY_RATE_LIMIT.burst, ge=1)
    auth_rate_limit_requests: int = Field(
        default=AUTH_RATE_LIMIT.max_requests,
        ge=1,
        description="Per-user rate limit of sync sessions, wipe and state: requests per window.",
    )
    auth_rate_limit_window_seconds: float = Field(
        default=AUTH_RATE_LIMIT.window_seconds,
        gt=0,
        description="Per-user rate limit of sync sessions, wipe and state: the window.",
    )
    auth_rate_limit_burst: int = Field(
        default=AUTH_RATE_LIMIT.burst,
        ge=1,
        description="Per-user rate limit of sync sessions, wipe and state: requests at once.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(f"{ENV_PREFIX}REDIS_URL", FLEET_REDIS_URL),
        description="Redis for the rate limits of a fleet (`redis://[:password@]host:port/db`, "
        "`rediss://` for TLS, `unix:///path`): every API process takes from the same bucket "
        f"per user, so the limits hold across processes. `{FLEET_REDIS_URL}` is read when this "
        "is unset (one variable for a whole fleet). Unset: each process keeps its own buckets. "
        "Redis down or slow fails no request: the process limits on its own buckets until "
        "Redis answers again (docs/operations.md). Its password is never logged.",
    )
    redis_key_prefix: str = Field(
        default="toolbridge:api:",
        min_length=1,
        max_length=100,
        description="Start of every key the API writes in Redis (rate-limit buckets: "
        "`{prefix}ratelimit:{group}:{hash of the caller}`); deployments sharing one Redis use "
        "different prefixes.",
    )
    redis_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="Longest a rate-limit decision waits for Redis (connecting, or its answer); "
        "then the process limits on its own buckets and tries Redis again at most every 5 s.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API processes `serve` runs on its one port (`serve --workers` overrides "
        "it); the schema is migrated once before they start. More than one needs a shared "
        "rate limit (`TOOLBRIDGE_API_REDIS_URL`), else each allows the full budget, and a "
        "database on disk (SQLite file in WAL mode, or PostgreSQL).",
    )
    session_ttl_seconds: float = Field(default=SESSION_TTL_SECONDS, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_header_bytes: int = Field(
        default=DEFAULT_MAX_HEADER_BYTES,
        ge=8 * 1024,
        le=1024 * 1024,
        description="Largest request line plus headers in bytes (`serve`); a larger one is a "
        "431 and the connection is closed, without reading the rest. Access tokens are at most "
        "16 KiB, so keep it above 20 KiB.",
    )
    max_header_count: int = Field(
        default=DEFAULT_MAX_HEADER_COUNT,
        ge=16,
        le=10_000,
        description="Most request headers one request may carry; more is a 431.",
    )
    header_timeout_seconds: float = Field(
        default=10,
        gt=0,
        le=300,
        description="Time a client has to send a request's line and headers, counted from its "
        "first byte or from connecting (`serve`); then the connection is closed (408).",
    )
    body_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Time a client has to send a request's whole body once its headers are in; "
        "then 408 and nothing of it is processed.",
    )
    database_timeout_seconds: float = Field(
        default=5,
        gt=0,
        le=60,
        description="Longest a request waits for the database (a pooled connection, connecting "
        "to PostgreSQL, a write's turn: SQLite's write lock, PostgreSQL's per-user and row "
        "locks) before it is refused with 503 and nothing is written. Keep it well below the "
        "request timeout of the API's clients (the MCP server's is 15 s), so a write is done or "
        "refused before they give up.",
    )
    idempotency_key_ttl_seconds: float = Field(
        default=24 * 3600,
        ge=60,
        description="How long the result of a write sent with an Idempotency-Key is kept: a "
        "retry with the same key within this time gets that result instead of a second write.",
    )
    log_sql_parameters: bool = Field(
        default=False,
        description="Let SQL parameters (user payloads, session ids) appear in database errors "
        "and the driver's DEBUG log lines. Off: they never appear at any level. For local "
        "debugging only.",
    )

    @model_validator(mode="after")
    def _derive_and_check(self) -> ApiSettings:
        if self.auth0_domain:
            domain = self.auth0_domain.strip().removeprefix("https://").rstrip("/")
            self.jwks_url = self.jwks_url or f"https://{domain}/.well-known/jwks.json"
            self.issuer = self.issuer or f"https://{domain}/"
        if self.hs256_secret is not None:
            size = len(self.hs256_secret.get_secret_value().encode())
            if size < MIN_HS256_SECRET_BYTES:
                raise ValueError(
                    f"{env_name('hs256_secret')} must be at least {MIN_HS256_SECRET_BYTES} bytes "
                    f"(got {size}); generate one with `openssl rand -hex 32`"
                )
        verifies_tokens = (
            bool(self.jwks_url) or self.hs256_secret is not None or self.discovers_jwks
        )
        if verifies_tokens and not self.audience:
            raise ValueError(
                f"{env_name('audience')} is required to verify access tokens "
                "(the API identifier tokens must be issued for)"
            )
        if self.jwks_url and not self.issuer:
            raise ValueError(
                f"{env_name('issuer')} is required with {env_name('jwks_url')}: every token's iss "
                "must be checked, as other issuers may share the keys (Auth0: https://{domain}/)"
            )
        if not verifies_tokens and not self.debug_sub_enabled:
            raise ValueError(
                f"no way to verify access tokens: set {env_name('issuer')} (its JWKS is "
                f"discovered), {env_name('auth0_domain')} or {env_name('jwks_url')} (with "
                f"{env_name('audience')}); for development only, {env_name('hs256_secret')} or "
                f"{env_name('debug_sub_enabled')}=true"
            )
        self._check_token_exchange(verifies_tokens)
        self._check_redis_url()
        return self

    def _check_redis_url(self) -> None:
        """A Redis URL the client can use; the message names the variable, never the URL."""
        if self.redis_url is None:
            return
        problem = redis_url_problem(self.redis_url.get_secret_value())
        if problem is not None:
            raise ValueError(f"{env_name('redis_url')} (or {FLEET_REDIS_URL}) {problem}")

    def _check_token_exchange(self, verifies_tokens: bool) -> None:
        """Token exchange verifies user tokens like the API does, but for another audience."""
        if self.exchange_subject_audience is None:
            return
        if not verifies_tokens:
            raise ValueError(
                f"{env_name('exchange_subject_audience')} needs token verification: set "
                f"{env_name('issuer')} and {env_name('jwks_url')} (or {env_name('auth0_domain')})"
            )
        if self.exchange_subject_audience.rstrip("/") == (self.audience or "").rstrip("/"):
            raise ValueError(
                f"{env_name('exchange_subject_audience')} must be the MCP server's audience, not "
                f"this API's ({env_name('audience')}): tokens for the API need no exchange"
            )
        if self.exchange_token_issuer == self.issuer:
            raise ValueError(
                f"{env_name('exchange_token_issuer')} must differ from {env_name('issuer')}: it "
                "tells the API's own tokens from the identity provider's"
            )

    @property
    def discovers_jwks(self) -> bool:
        """Whether the JWKS URL comes from the issuer's metadata (``jwks_uri``): an issuer
        without a JWKS URL, an Auth0 domain or the development HS256 secret."""
        return bool(self.issuer) and not self.jwks_url and self.hs256_secret is None


def load_api_settings(
    kind: type[SettingsT] = ApiSettings,  # type: ignore[assignment]
    **overrides: Any,
) -> SettingsT:
    """Read the settings, turning validation failures into one :class:`ConfigError` that
    lists each variable to fix and never echoes a value."""
    try:
        return kind(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_invalid(exc, env_name)) from None

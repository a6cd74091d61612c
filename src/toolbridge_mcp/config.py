"""Settings of the MCP server, read from ``TOOLBRIDGE_*`` environment variables and ``.env``.

Every problem is reported by the environment variable to fix, and no secret value ever
appears in an error: pydantic's own messages echo inputs, so :func:`load_settings` rewrites
them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from toolbridge_common.settings import (
    ConfigError,
    LogLevel,
    describe_invalid,
    env_namer,
    is_loopback_host,
)
from toolbridge_mcp.oauth.client_auth import ClientAuthMethod

if TYPE_CHECKING:
    from toolbridge_mcp.auth.modes import OutboundAuth

ENV_PREFIX = "TOOLBRIDGE_"

AuthMode: TypeAlias = str
"""The name of an outbound auth mode (``auth0``, ``static``, ``token_exchange``,
``passthrough``); the modes themselves are the classes of :mod:`toolbridge_mcp.auth.modes`."""


env_name = env_namer(ENV_PREFIX)


class Settings(BaseSettings):
    """Configuration of the ToolBridge MCP server (seed §3)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
    )

    tenant_id: str | None = None
    tenant_header_secret: SecretStr | None = None

    go_api_base_url: str = "http://localhost:8081"

    auth0_client_id: str | None = None
    auth0_client_secret: SecretStr | None = None
    auth0_domain: str | None = Field(
        default=None, description="Auth0 tenant host, e.g. your-tenant.us.auth0.com"
    )
    auth0_audience: str | None = None
    auth0_token_url: str | None = Field(
        default=None,
        description="Explicit token endpoint (any OAuth2 server); replaces the Auth0 domain.",
    )
    auth0_scope: str | None = None
    auth0_resource: str | None = Field(default=None, description="RFC 8707 resource indicator")
    auth0_client_auth_method: ClientAuthMethod = "client_secret_post"
    auth0_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    token_refresh_buffer_seconds: float = Field(default=300.0, ge=0)
    token_request_deadline_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="Longest a caller waits for a token request, all retries included.",
    )

    jwt_token: SecretStr | None = Field(
        default=None, description="Deprecated static token; use Auth0 client credentials."
    )

    oauth_issuer: str | None = Field(
        default=None,
        description="Per-user mode: the issuer (``iss``) of callers' tokens, e.g. "
        "https://your-tenant.us.auth0.com/; setting it makes the MCP endpoint require them.",
    )
    oauth_jwks_url: str | None = Field(
        default=None, description="The issuer's signing keys; default {issuer}.well-known/jwks.json"
    )
    oauth_audience: str | None = Field(
        default=None,
        description="Audience callers' tokens must carry: default this server's "
        "resource URL ({public URL}/mcp); with TOOLBRIDGE_OAUTH_PASSTHROUGH the API's, as "
        "they are forwarded to it.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL MCP clients reach this server at (behind a proxy: the proxy's); "
        "default http://{host}:{port}.",
    )
    oauth_passthrough: bool = Field(
        default=False,
        description="Legacy per-user mode: forward each MCP caller's own token to the API as is. "
        "NOT MCP-spec conformant (the spec forbids token passthrough), warned about at start. "
        "Off: per-user mode exchanges callers' tokens for API tokens (RFC 8693).",
    )
    oauth_required_scopes: str | None = Field(
        default=None,
        description="Per-user mode: scopes every caller's token must carry, space separated "
        "(e.g. `toolbridge`); a token without them gets 403 insufficient_scope. Default none.",
    )
    oauth_exchange_url: str | None = Field(
        default=None,
        description="Per-user mode: where callers' tokens are exchanged (RFC 8693) for API "
        "tokens; default the API's `{TOOLBRIDGE_GO_API_BASE_URL}/auth/token-exchange`, or an "
        "identity provider's token endpoint that exchanges (Auth0 Custom Token Exchange, "
        "Keycloak, WorkOS).",
    )
    oauth_exchange_audience: str | None = Field(
        default=None,
        description="Per-user mode: the API's audience (`TOOLBRIDGE_API_AUDIENCE`), asked for "
        "in each exchange.",
    )
    oauth_exchange_resource: str | None = Field(
        default=None,
        description="Per-user mode: an RFC 8707 `resource` to ask for in each exchange, for "
        "identity providers that name the API so (WorkOS).",
    )
    oauth_exchange_client_id: str | None = Field(
        default=None,
        description="Per-user mode: this server's client id at the exchange, if it wants one "
        "(identity providers do; the API does not).",
    )
    oauth_exchange_client_secret: SecretStr | None = Field(
        default=None,
        description="Per-user mode: that client's secret (sent as client_secret_post).",
    )
    oauth_exchange_subject_token_type: str = Field(
        default="urn:ietf:params:oauth:token-type:access_token",
        min_length=1,
        description="Per-user mode: the `subject_token_type` of exchanges; Auth0's Custom Token "
        "Exchange wants one of your own (e.g. `urn:toolbridge:mcp-access-token`).",
    )

    log_level: LogLevel = "INFO"
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    max_timestamp_skew_seconds: int = Field(default=300, ge=1)
    allowed_hosts: str | None = Field(
        default=None,
        description="Extra `Host` names the HTTP transports answer to, comma or space "
        "separated (`name`, `name:port`, `*.example.com`); always: localhost, 127.0.0.1 and "
        "[::1] at the bound port, the bound address and the host of TOOLBRIDGE_PUBLIC_URL. "
        "Other hosts get 421 (DNS rebinding protection).",
    )
    allowed_origins: str | None = Field(
        default=None,
        description="Browser origins allowed to call the HTTP transports, comma or space "
        "separated (e.g. `http://localhost:6274` for the MCP Inspector); always: the server's "
        "own origin and TOOLBRIDGE_PUBLIC_URL's. A request with another `Origin` gets 403; "
        "requests without one (non-browser clients) are not affected.",
    )
    allow_unauthenticated_network: bool = Field(
        default=False,
        description="Let `serve` listen beyond loopback (TOOLBRIDGE_HOST) in service mode "
        "(client credentials or a static token), where MCP callers are not authenticated and "
        "anyone reaching the port acts as the service identity. Off: such a bind is refused.",
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers the HTTP transports accept (431 beyond).",
    )
    max_concurrent_connections: int = Field(
        default=200,
        ge=1,
        description="Connections and requests served at once; more get 503 at once.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "tenant_id",
        "auth0_client_id",
        "auth0_domain",
        "auth0_audience",
        "auth0_token_url",
        "auth0_scope",
        "auth0_resource",
        "oauth_issuer",
        "oauth_jwks_url",
        "oauth_audience",
        "oauth_required_scopes",
        "oauth_exchange_url",
        "oauth_exchange_audience",
        "oauth_exchange_resource",
        "oauth_exchange_client_id",
        "public_url",
        "allowed_hosts",
        "allowed_origins",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """An empty variable (``FOO=`` in a .env or a Fly secret) means "not set"."""
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator(
        "auth0_client_secret",
        "tenant_header_secret",
        "jwt_token",
        "oauth_exchange_client_secret",
        mode="before",
    )
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("auth0_domain")
    @classmethod
    def _normalize_domain(cls, value: str | None) -> str | None:
        """Accept ``tenant.auth0.com``, ``https://tenant.auth0.com/`` and ``host:port``."""
        if value is None:
            return None
        parts = urlsplit(value if "://" in value else f"https://{value}")
        if parts.scheme != "https" or not parts.hostname or parts.path not in {"", "/"}:
            raise ValueError(
                f"must be a host name such as your-tenant.us.auth0.com, got {value!r} "
                "(for another OAuth2 server set TOOLBRIDGE_AUTH0_TOKEN_URL instead)"
            )
        return parts.netloc

    @field_validator(
        "auth0_token_url", "oauth_issuer", "oauth_exchange_url", "oauth_jwks_url", "public_url"
    )
    @classmethod
    def _check_https_url(cls, value: str | None) -> str | None:
        """Tokens travel to (or are vouched for by) these URLs: https, except on loopback."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an absolute https URL, got {value!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("must use https (plain http is accepted only on loopback hosts)")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        """The MCP endpoint's path is appended to it, so it is a base URL only."""
        if value is not None and (urlsplit(value).query or urlsplit(value).fragment):
            raise ValueError(f"must be a base URL without query or fragment, got {value!r}")
        return value

    @field_validator("go_api_base_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        if parts.username is not None or parts.password is not None:
            # Never sent (the auth mode sets Authorization) but shown in health output,
            # errors and logs as the API URL.
            raise ValueError("must not contain a user name or password (user:pass@host)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _no_half_configuration(self) -> Settings:
        """A half-configured block is an error, never a silent fall-back to another mode."""
        given = {
            "auth0_client_id": self.auth0_client_id,
            "auth0_client_secret": self.auth0_client_secret,
            "auth0_domain": self.auth0_domain or self.auth0_token_url,
            "auth0_audience": self.auth0_audience or self.auth0_token_url,
        }
        if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
            missing = [
                env_name(name)
                if name != "auth0_domain"
                else f"{env_name('auth0_domain')} (or {env_name('auth0_token_url')})"
                for name, value in given.items()
                if value is None
            ]
            raise ValueError(
                "incomplete Auth0 client-credentials configuration: "
                f"{', '.join(missing)} not set. Set all of {env_name('auth0_client_id')}, "
                f"{env_name('auth0_client_secret')}, {env_name('auth0_domain')} and "
                f"{env_name('auth0_audience')}, or none of them"
            )
        if (self.tenant_id is None) != (self.tenant_header_secret is None):
            missing_name = "tenant_id" if self.tenant_id is None else "tenant_header_secret"
            raise ValueError(
                f"{env_name(missing_name)} not set: tenant headers need both "
                f"{env_name('tenant_id')} and {env_name('tenant_header_secret')}"
            )
        self._check_per_user_oauth()
        return self

    def _check_per_user_oauth(self) -> None:
        """Caller tokens are verified only where they are used: in per-user mode. Elsewhere
        every caller would act as the one service identity, so protection that looks
        per-user would not be; refuse it rather than leave the doubt. Each per-user mode
        needs its complete set (``exchange.check_per_user_settings``)."""
        from toolbridge_mcp.auth.modes.exchange import check_per_user_settings

        check_per_user_settings(self)

    def outbound_mode(self) -> type[OutboundAuth]:
        """How the server authenticates to the API: the mode class these settings select
        (:func:`toolbridge_mcp.auth.modes.select_mode`, the one place that decides)."""
        from toolbridge_mcp.auth.modes.select import select_mode

        return select_mode(self)

    def auth_mode(self) -> AuthMode:
        """The name of :meth:`outbound_mode`: ``auth0`` (client credentials), ``static``
        (a static token), ``token_exchange`` (each caller's token exchanged for an API token)
        or ``passthrough`` (the caller's own token, legacy)."""
        return self.outbound_mode().name

    def token_url(self) -> str:
        """The token endpoint: the explicit URL, else Auth0's ``https://{domain}/oauth/token``."""
        if self.auth0_token_url:
            return self.auth0_token_url
        if self.auth0_domain:
            return f"https://{self.auth0_domain}/oauth/token"
        raise ConfigError(
            f"no token endpoint: set {env_name('auth0_domain')} or {env_name('auth0_token_url')}"
        )

    def jwks_url(self) -> str:
        """The keys callers' tokens are signed with: the explicit URL, else where Auth0 and
        most OpenID providers publish them, ``{issuer}.well-known/jwks.json``."""
        if self.oauth_jwks_url:
            return self.oauth_jwks_url
        if self.oauth_issuer:
            return f"{self.oauth_issuer.rstrip('/')}/.well-known/jwks.json"
        raise ConfigError(f"no JWKS: set {env_name('oauth_issuer')}")

    def public_base_url(self) -> str:
        """Where MCP clients reach this server, as OAuth metadata must name it exactly."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation failures into one :class:`ConfigError` that
    lists each variable to fix and never echoes a value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_invalid(exc, env_name)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once on first use (never at import)."""
    return load_settings()

"""Settings of the MCP server, read from ``TOOLBRIDGE_*`` environment variables and ``.env``.

Every problem is reported by the environment variable to fix, and no secret value ever
appears in an error: pydantic's own messages echo inputs, so :func:`load_settings` rewrites
them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from toolbridge_common.redis_urls import redis_url_problem
from toolbridge_common.settings import (
    ConfigError,
    LogLevel,
    describe_invalid,
    env_namer,
    is_loopback_host,
)
from toolbridge_mcp.oauth.client_auth import SECRET_METHODS, ClientAuthMethod, ClientKey

if TYPE_CHECKING:
    from toolbridge_mcp.auth.modes import OutboundAuth

ENV_PREFIX = "TOOLBRIDGE_"

AuthMode: TypeAlias = str
"""The name of an outbound auth mode (``auth0``, ``static``, ``token_exchange``,
``passthrough``); the modes themselves are the classes of :mod:`toolbridge_mcp.auth.modes`."""


env_name = env_namer(ENV_PREFIX)
MIN_TOKEN_CACHE_KEY = 32


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
        description="Explicit token endpoint (any OAuth2 server); replaces the Auth0 domain "
        "and discovery.",
    )
    auth0_issuer: str | None = Field(
        default=None,
        description="Issuer URL of the OAuth2 server tokens come from; its token endpoint is "
        "discovered at start (RFC 8414 `/.well-known/oauth-authorization-server`, else OpenID "
        "`/.well-known/openid-configuration`). `TOOLBRIDGE_AUTH0_TOKEN_URL` or "
        "`TOOLBRIDGE_AUTH0_DOMAIN` win over it.",
    )
    auth0_scope: str | None = None
    auth0_resource: str | None = Field(
        default=None,
        description="RFC 8707 resource indicator: the API's URI. Servers such as "
        "oidc-provider issue a JWT the API can verify only when it is set (else an opaque "
        "token).",
    )
    auth0_client_auth_method: ClientAuthMethod = Field(
        default="client_secret_post",
        description="How the client authenticates at the token endpoint: the secret in the "
        "body, or HTTP Basic (id and secret form-encoded, RFC 6749 §2.3.1), or "
        "`private_key_jwt` (RFC 7523: a short-lived JWT signed with "
        "`TOOLBRIDGE_AUTH0_CLIENT_PRIVATE_KEY`; no secret).",
    )
    auth0_client_private_key: SecretStr | None = Field(
        default=None,
        description="`private_key_jwt`: the client's private key, PEM (PKCS#8 or traditional, "
        "unencrypted; RSA of 2048 bits or more signs RS256, EC P-256 ES256, P-384 ES384, "
        "P-521 ES512, Ed25519 EdDSA) or the path of a file holding it.",
    )
    auth0_client_key_id: str | None = Field(
        default=None,
        description="`private_key_jwt`: the `kid` the identity provider knows the key by "
        "(sent in the assertion's header; left out when unset).",
    )
    auth0_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    token_refresh_buffer_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Tokens living less than `TOOLBRIDGE_TOKEN_REFRESH_LONG_LIVED_SECONDS` are "
        "refreshed this long before expiry (never later than half-life).",
    )
    token_refresh_fraction: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Long-lived tokens are refreshed after this fraction of their lifetime, "
        "on a timer, calls or not; a failed refresh is retried until the token expires, so an "
        "identity-provider outage of up to (1 - fraction) of the lifetime costs nothing.",
    )
    token_refresh_long_lived_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Lifetime from which a token counts as long-lived; default twice "
        "`TOOLBRIDGE_TOKEN_REFRESH_BUFFER_SECONDS` (600 s), so every token is refreshed at "
        "half-life. MSAL's is 7200.",
    )
    token_request_deadline_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="Longest a caller waits for a token request, all retries included.",
    )

    jwt_token: SecretStr | None = Field(
        default=None, description="Deprecated static token; use Auth0 client credentials."
    )

    redis_url: SecretStr | None = Field(
        default=None,
        description="Fleet mode: Redis (`redis://`, `rediss://` for TLS, or `unix://`) shared "
        "by every MCP server of the fleet, which then share one access token per client (one "
        "token request per renewal for the whole fleet; a restarted server takes the stored "
        "token). Tokens are stored encrypted. Unset: each process keeps its own tokens in "
        "memory. Redis down: each process falls back to its own, and back when it answers.",
    )
    redis_key_prefix: str = Field(
        default="toolbridge:",
        min_length=1,
        description="Fleet mode: the prefix of every Redis key the MCP server writes.",
    )
    redis_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        le=5,
        description="Fleet mode: longest one Redis call may take (connect included) before "
        "the server treats Redis as down and uses its own in-memory token cache.",
    )
    token_cache_key: SecretStr | None = Field(
        default=None,
        description="Fleet mode: the secret tokens in Redis are encrypted with (AES-256-GCM, "
        "key derived with HKDF), the same on every server, 32 characters or more (e.g. "
        "`openssl rand -hex 32`). Default: derived from the client secret; required without "
        "one (`private_key_jwt`, or per-user mode with a public exchange client).",
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
        description="Largest request line plus headers the HTTP transports accept; a larger "
        "request is refused (400) and its connection closed as soon as the limit is passed.",
    )
    max_concurrent_connections: int = Field(
        default=200,
        ge=1,
        description="Connections and requests served at once; more get 503 at once.",
    )
    stateless_http: bool = Field(
        default=False,
        description="Streamable HTTP without server-held MCP sessions: each request stands "
        "alone, so any replica behind a load balancer answers any request (no sticky "
        "sessions). Turn it on for several replicas; it gives up the GET stream for "
        "server-initiated messages and stream resumption (ADR 0005). Off: each client's "
        "session (`Mcp-Session-Id`) lives in the one process that opened it. Not for SSE.",
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
        "auth0_issuer",
        "auth0_client_key_id",
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
        "auth0_client_private_key",
        "redis_url",
        "token_cache_key",
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
        "auth0_token_url",
        "auth0_issuer",
        "oauth_issuer",
        "oauth_exchange_url",
        "oauth_jwks_url",
        "public_url",
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

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A Redis URL the client can use; never echoed (it may hold a password)."""
        if value is None:
            return None
        problem = redis_url_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("token_cache_key")
    @classmethod
    def _check_token_cache_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CACHE_KEY:
            raise ValueError(
                f"must be {MIN_TOKEN_CACHE_KEY} characters or more (e.g. openssl rand -hex 32)"
            )
        return value

    _client_key: ClientKey | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _no_half_configuration(self) -> Settings:
        """A half-configured block is an error, never a silent fall-back to another mode."""
        self._check_client_credentials()
        if (self.tenant_id is None) != (self.tenant_header_secret is None):
            missing_name = "tenant_id" if self.tenant_id is None else "tenant_header_secret"
            raise ValueError(
                f"{env_name(missing_name)} not set: tenant headers need both "
                f"{env_name('tenant_id')} and {env_name('tenant_header_secret')}"
            )
        self._check_per_user_oauth()
        self._check_token_cache()
        return self

    def _check_token_cache(self) -> None:
        """Tokens in Redis are encrypted with a key from ``TOOLBRIDGE_TOKEN_CACHE_KEY`` or
        the mode's client secret: a mode that caches tokens without a secret needs the key."""
        if self.redis_url is None or self.token_cache_key is not None:
            return
        mode = self.outbound_mode()
        if mode.caches_tokens and mode.cache_secret(self) is None:
            raise ValueError(
                f"{env_name('token_cache_key')} not set: with {env_name('redis_url')} tokens "
                "are stored encrypted, under a key derived from the client secret, and "
                f"{mode.name} mode has none here (private_key_jwt, or a public token-exchange "
                "client). Set it to the same random string of "
                f"{MIN_TOKEN_CACHE_KEY} characters or more on every server"
            )

    def _check_client_credentials(self) -> None:
        """Client credentials need a client id, its credential (the secret, or the private
        key for ``private_key_jwt``) and an endpoint (a token URL, an issuer to discover it
        from, or an Auth0 domain, which also needs the audience)."""
        private_key_jwt = self.auth0_client_auth_method not in SECRET_METHODS
        credential = "auth0_client_private_key" if private_key_jwt else "auth0_client_secret"
        endpoint = self.auth0_token_url or self.auth0_domain or self.auth0_issuer
        parts: dict[str, object] = {
            "auth0_client_id": self.auth0_client_id,
            credential: getattr(self, credential),
            "endpoint": endpoint,
        }
        if self.auth0_domain and not self.auth0_token_url:
            parts["auth0_audience"] = self.auth0_audience  # Auth0 needs it; others may not
        started = any(value is not None for value in parts.values()) or any(
            value is not None
            for value in (
                self.auth0_client_secret,
                self.auth0_client_private_key,
                self.auth0_audience,
            )
        )
        if not started:
            return
        missing = [name for name, value in parts.items() if value is None]
        if missing:
            endpoints = (
                f"{env_name('auth0_token_url')}, {env_name('auth0_issuer')} or "
                f"{env_name('auth0_domain')}"
            )
            shown = [
                f"one of {endpoints}" if name == "endpoint" else env_name(name) for name in missing
            ]
            if endpoint is None:
                where = (
                    f" and one of {env_name('auth0_token_url')}, {env_name('auth0_issuer')} "
                    f"or {env_name('auth0_domain')} (Auth0, with {env_name('auth0_audience')})"
                )
            elif self.auth0_domain and not self.auth0_token_url:
                where = f" with {env_name('auth0_domain')} and {env_name('auth0_audience')}"
            else:
                where = ""
            raise ValueError(
                "incomplete OAuth client-credentials configuration: "
                f"{', '.join(shown)} not set. Set {env_name('auth0_client_id')} and "
                f"{env_name(credential)}{where}, or none of them"
            )
        if not private_key_jwt and self.auth0_client_private_key is not None:
            raise ValueError(
                f"{env_name('auth0_client_private_key')} is set but "
                f"{env_name('auth0_client_auth_method')} is {self.auth0_client_auth_method}: set "
                "it to private_key_jwt to sign in with the key, or unset the key"
            )
        if private_key_jwt:
            assert self.auth0_client_private_key is not None
            self._client_key = ClientKey.load(
                self.auth0_client_private_key.get_secret_value(),
                key_id=self.auth0_client_key_id,
                setting=env_name("auth0_client_private_key"),
            )

    def client_key(self) -> ClientKey | None:
        """The ``private_key_jwt`` signing key, loaded and checked with the settings."""
        return self._client_key

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
        """The token endpoint: the explicit URL, else Auth0's ``https://{domain}/oauth/token``
        (one discovered from ``TOOLBRIDGE_AUTH0_ISSUER`` is known only at start)."""
        if self.auth0_token_url:
            return self.auth0_token_url
        if self.auth0_domain:
            return f"https://{self.auth0_domain}/oauth/token"
        if self.auth0_issuer:
            raise ConfigError(
                f"the token endpoint is discovered from {env_name('auth0_issuer')} at start"
            )
        raise ConfigError(
            f"no token endpoint: set {env_name('auth0_token_url')}, "
            f"{env_name('auth0_issuer')} or {env_name('auth0_domain')}"
        )

    def jwks_url(self, *, discover: bool = False) -> str:
        """The keys callers' tokens are signed with: the explicit URL; else, with
        ``discover``, the ``jwks_uri`` of the issuer's metadata (fetched now, so at start
        only); else, or when discovery fails (logged, naming the settings), where Auth0 and
        most OpenID providers publish them, ``{issuer}.well-known/jwks.json``."""
        if self.oauth_jwks_url:
            return self.oauth_jwks_url
        if not self.oauth_issuer:
            raise ConfigError(f"no JWKS: set {env_name('oauth_issuer')}")
        conventional = f"{self.oauth_issuer.rstrip('/')}/.well-known/jwks.json"
        if not discover:
            return conventional
        from loguru import logger

        from toolbridge_common.discovery import DiscoveryError, discover_sync

        try:
            found = discover_sync(self.oauth_issuer, setting=env_name("oauth_issuer")).jwks_uri
        except DiscoveryError as exc:
            logger.error(
                "{}; trying {} (set {} if the keys are elsewhere)",
                exc,
                conventional,
                env_name("oauth_jwks_url"),
            )
            return conventional
        if found is None:
            logger.error(
                "The metadata of {} names no jwks_uri; trying {} (set {} if the keys are "
                "elsewhere)",
                env_name("oauth_issuer"),
                conventional,
                env_name("oauth_jwks_url"),
            )
            return conventional
        logger.info("Callers' signing keys at {} (discovered)", found)
        return found

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

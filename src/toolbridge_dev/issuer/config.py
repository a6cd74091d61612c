"""Settings of the DEVELOPMENT ONLY issuer, from ``TOOLBRIDGE_DEV_ISSUER_*`` variables and ``.env``.

Every problem names the environment variable to fix and no secret value ever appears in an
error: pydantic's own messages echo inputs, so :func:`load_issuer_settings` rewrites them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from toolbridge_common.settings import (
    ConfigError,
    LogLevel,
    describe_invalid,
    env_namer,
    is_loopback_host,
)
from toolbridge_dev.issuer.client_auth import ClientKey, KeyParseError, parse_public_keys

ENV_PREFIX = "TOOLBRIDGE_DEV_ISSUER_"
DEFAULT_AUDIENCE = "https://api.toolbridge.local"
MAX_TOKEN_LIFETIME_SECONDS = 30 * 24 * 3600
MAX_REFRESH_TOKEN_LIFETIME_SECONDS = 365 * 24 * 3600

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+|:-]{0,63}")
"""What a dev user's name (the ``sub`` of their tokens) may look like."""
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
"""RFC 6749 §3.3 ``scope-token``."""
USER_NAME_RULE = "1-64 letters, digits and . _ @ + | : - (starting with a letter or digit)"

_SETTINGS_FIELD = re.compile(r'field "(\w+)"')


env_name = env_namer(ENV_PREFIX)


class IssuerSettings(BaseSettings):
    """Configuration of the development issuer.

    ``issuer_url`` is left empty to mean ``http://{host}:{port}/``; after validation it always
    holds the URL tokens carry as ``iss`` (with Auth0's trailing slash).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    allow_remote: bool = Field(
        default=False, description="Bind a non-loopback host; it hands out tokens to anyone."
    )
    issuer_url: str = Field(default="", description="Default http://{host}:{port}/")
    state_dir: Path = Path(".toolbridge/issuer")
    token_lifetime_seconds: int = Field(default=3600, ge=1, le=MAX_TOKEN_LIFETIME_SECONDS)
    audiences: list[str] = Field(default_factory=lambda: [DEFAULT_AUDIENCE], min_length=1)
    clients: dict[str, SecretStr] = Field(
        default_factory=dict, description='JSON object: {"client-id": "client-secret"}'
    )
    log_level: LogLevel = "INFO"
    client_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Confidential clients that authenticate with private_key_jwt (RFC 7523), as a "
        'JSON object {"client-id": "key"}: a PEM public key, a JWK or JWKS, or the path of a file '
        "holding one.",
    )
    users: list[str] = Field(
        default_factory=lambda: ["alice", "bob"],
        description="Dev users offered on the login page (no passwords); the chosen one is the "
        "``sub`` of the tokens.",
    )
    allow_any_user: bool = Field(
        default=True,
        description="The login page also takes any other user name (1-64 letters, digits and "
        "``. _ @ + | : -``).",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["offline_access"],
        description="Scopes the authorization code flow grants (``scopes_supported``); others "
        "are refused with ``invalid_scope``.",
    )
    code_lifetime_seconds: int = Field(
        default=60, ge=1, le=600, description="How long an authorization code may be redeemed."
    )
    refresh_token_lifetime_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        le=MAX_REFRESH_TOKEN_LIFETIME_SECONDS,
        description="How long each refresh token lasts (every refresh rotates it).",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=4 * 1024,
        le=1024 * 1024,
        description="Largest request line plus headers in bytes; a larger request is refused "
        "(400) and its connection closed without reading the rest.",
    )
    max_header_count: int = Field(
        default=100, ge=16, le=10_000, description="Most headers one request may carry (431)."
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body in bytes (token requests, sign-in forms, "
        "registrations); a larger one is a 413.",
    )
    body_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Time a client has to send a request's whole body (408 after).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("issuer_url")
    @classmethod
    def _check_issuer_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"must not have a query or fragment, got {value!r}")
        return value

    @field_validator("audiences")
    @classmethod
    def _check_audiences(cls, value: list[str]) -> list[str]:
        if any(not audience.strip() for audience in value):
            raise ValueError("must not contain an empty audience")
        return value

    @field_validator("clients")
    @classmethod
    def _check_clients(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for client_id, secret in value.items():
            if not client_id.strip():
                raise ValueError("a client id is empty")
            if not secret.get_secret_value():
                raise ValueError(f"client {client_id!r} has an empty secret")
        return value

    @field_validator("client_keys")
    @classmethod
    def _check_client_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for client_id, key in value.items():
            if not client_id.strip():
                raise ValueError("a client id is empty")
            try:
                parse_public_keys(key)
            except KeyParseError as exc:
                raise ValueError(f"client {client_id!r}: {exc}") from None
        return value

    @field_validator("users")
    @classmethod
    def _check_users(cls, value: list[str]) -> list[str]:
        for user in value:
            if not USER_NAME.fullmatch(user):
                raise ValueError(f"user {user!r} is not a valid name ({USER_NAME_RULE})")
        return list(dict.fromkeys(value))

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not SCOPE_TOKEN.fullmatch(scope):
                raise ValueError(
                    f"scope {scope!r} is not a scope token (RFC 6749 §3.3: printable ASCII "
                    "without space, quote or backslash)"
                )
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _check_host(self) -> IssuerSettings:
        both = sorted(set(self.clients) & set(self.client_keys))
        if both:
            raise ValueError(
                f"client {both[0]!r} is in both {env_name('clients')} and "
                f"{env_name('client_keys')}; a client has a secret or a key, not both"
            )
        if not self.users and not self.allow_any_user:
            raise ValueError(
                f"{env_name('users')} is empty and {env_name('allow_any_user')}=false: "
                "nobody could sign in"
            )
        if not is_loopback_host(self.host) and not self.allow_remote:
            raise ValueError(
                f"{env_name('host')}={self.host} is not a loopback address; this DEVELOPMENT "
                "ONLY issuer hands out tokens to anyone who knows a client secret. Bind "
                f"127.0.0.1, or set {env_name('allow_remote')}=true if others must reach it "
                "(e.g. from containers)"
            )
        if not self.issuer_url:
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.issuer_url = f"http://{host}:{self.port}/"
        return self

    @property
    def default_audience(self) -> str:
        """The audience of tokens whose request names none."""
        return self.audiences[0]

    def endpoint(self, path: str) -> str:
        """An absolute URL of this issuer, e.g. ``endpoint("/oauth/token")``."""
        return self.issuer_url.rstrip("/") + path

    def public_keys(self) -> dict[str, tuple[ClientKey, ...]]:
        """The keys of the ``private_key_jwt`` clients (read again, e.g. from their files)."""
        return {client_id: parse_public_keys(key) for client_id, key in self.client_keys.items()}


def load_issuer_settings(**overrides: Any) -> IssuerSettings:
    """Read the settings, turning validation failures into one :class:`ConfigError` that
    lists each variable to fix and never echoes a value."""
    try:
        return IssuerSettings(**overrides)
    except SettingsError as exc:
        # Raised before validation when a variable is not the JSON its field needs.
        match = _SETTINGS_FIELD.search(str(exc))
        name = env_name(match.group(1)) if match else f"a {ENV_PREFIX}* variable"
        example = ' (e.g. {"my-client": "my-secret"})' if name == env_name("clients") else ""
        raise ConfigError(f"Invalid configuration:\n  - {name}: not valid JSON{example}") from None
    except ValidationError as exc:
        raise ConfigError(describe_invalid(exc, env_name)) from None

"""Who may ask the DEVELOPMENT ONLY issuer for tokens, and how each proves it.

Three kinds of client:

- **configured** (``TOOLBRIDGE_DEV_ISSUER_CLIENTS`` / ``_CLIENT_KEYS``): confidential clients
  with a secret or a public key, for client credentials;
- **registered** by RFC 7591 dynamic client registration: public clients (no secret) with
  their redirect URIs, kept in ``{state_dir}/registered-clients.json`` across restarts;
- **metadata documents** (OAuth Client ID Metadata Document, the MCP 2025-11-25 way): the
  ``client_id`` is an https URL (http on loopback, for development) whose JSON document lists
  the redirect URIs; fetched when needed, without following redirects, and cached briefly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from loguru import logger
from pydantic import SecretStr

from toolbridge_common.settings import is_loopback_host
from toolbridge_dev.issuer.client_auth import ClientKey, KeyParseError, keys_from_jwks

REGISTERED_CLIENTS_FILE = "registered-clients.json"
MAX_REGISTERED_CLIENTS = 1000
METADATA_DOCUMENT_MAX_BYTES = 5 * 1024
"""The Client ID Metadata Document draft suggests 5 KB as the most to read."""
METADATA_DOCUMENT_TIMEOUT_SECONDS = 5.0
METADATA_DOCUMENT_CACHE_SECONDS = 300
"""How long a fetched document is used at most (less if its ``Cache-Control`` says so)."""

AUTHORIZATION_CODE = "authorization_code"
REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type, not a password
CLIENT_CREDENTIALS = "client_credentials"

Source = Literal["configured", "registered", "metadata document"]
AuthMethod = Literal["client_secret", "private_key_jwt", "none"]

_FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "vbscript", "file", "about", "blob"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SHARED_SECRET_METHODS = frozenset(
    {"client_secret_post", "client_secret_basic", "client_secret_jwt"}
)
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")


@dataclass(frozen=True)
class Client:
    """A client as the endpoints need it."""

    client_id: str
    source: Source
    auth_method: AuthMethod
    redirect_uris: tuple[str, ...] = ()
    grant_types: frozenset[str] = frozenset()
    name: str | None = None
    secret: SecretStr | None = field(default=None, repr=False)
    keys: tuple[ClientKey, ...] = ()

    @property
    def label(self) -> str:
        """How the client is shown to the user: its name and id, or its id."""
        return f"{self.name} ({self.client_id})" if self.name else self.client_id


class ClientError(Exception):
    """A client cannot be used; ``error`` is the RFC 7591 / 6749 code, the message says why."""

    def __init__(self, description: str, error: str = "invalid_client") -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class ClientStoreError(Exception):
    """The file of registered clients exists but cannot be used; the message names it."""


# -- redirect URIs ----------------------------------------------------------------------------


def redirect_uri_problem(uri: object) -> str | None:
    """Why ``uri`` cannot be a redirect URI, or None: https anywhere, http on loopback hosts
    only, or a native app's own scheme (RFC 8252 §7.1); absolute, without a fragment."""
    if not isinstance(uri, str) or not uri:
        return "a redirect URI must be a non-empty string"
    scheme, sep, _ = uri.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        return f"{_shown(uri)} is not an absolute URI"
    parts = urlsplit(uri)
    if "#" in uri:
        return f"{_shown(uri)} has a fragment"
    scheme = scheme.lower()
    if scheme in _FORBIDDEN_SCHEMES:
        return f"{_shown(uri)}: scheme {scheme} is not allowed"
    if scheme in {"http", "https"}:
        if not parts.hostname:
            return f"{_shown(uri)} has no host"
        if scheme == "http" and not is_loopback_host(parts.hostname):
            return f"{_shown(uri)}: http is allowed for loopback hosts only; use https"
    return None


# -- client metadata (RFC 7591 §2), shared by registration and metadata documents -------------

_KEPT_METADATA = (
    "client_name",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "contacts",
    "software_id",
    "software_version",
    "application_type",
)


@dataclass(frozen=True)
class _Metadata:
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    auth_method: AuthMethod
    keys: tuple[ClientKey, ...]
    scope: str | None
    document: dict[str, Any]
    """What is kept and answered: the metadata as understood, RFC 7591 §3.2.1."""


def _metadata(
    data: Mapping[str, Any],
    *,
    scopes: Collection[str],
    allow_private_key_jwt: bool,
) -> _Metadata:
    """Validate client metadata; raises :class:`ClientError` (``invalid_redirect_uri`` or
    ``invalid_client_metadata``)."""
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise ClientError("redirect_uris must be a non-empty list", "invalid_redirect_uri")
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem is not None:
            raise ClientError(problem, "invalid_redirect_uri")
    redirect_uris = tuple(dict.fromkeys(uris))

    method = data.get("token_endpoint_auth_method", "none")
    if (
        "client_secret" in data
        or "client_secret_expires_at" in data
        or (method in _SHARED_SECRET_METHODS)
    ):
        raise ClientError(
            (
                "a metadata document may describe a public client (token_endpoint_auth_method "
                "none) or one with private_key_jwt and jwks"
                if allow_private_key_jwt
                else "only public clients (token_endpoint_auth_method none) register here"
            )
            + "; clients with a secret are configured in TOOLBRIDGE_DEV_ISSUER_CLIENTS",
            "invalid_client_metadata",
        )
    keys: tuple[ClientKey, ...] = ()
    auth_method: AuthMethod = "none"
    if method == "private_key_jwt" and allow_private_key_jwt:
        if "jwks" not in data:
            raise ClientError(
                "private_key_jwt needs the public keys inline as jwks (jwks_uri is not "
                "supported by the dev issuer)",
                "invalid_client_metadata",
            )
        try:
            keys = keys_from_jwks(data["jwks"])
        except KeyParseError as exc:
            raise ClientError(f"jwks: {exc}", "invalid_client_metadata") from None
        auth_method = "private_key_jwt"
    elif method != "none":
        raise ClientError(
            f"token_endpoint_auth_method {_shown(str(method))} is not supported; use none",
            "invalid_client_metadata",
        )

    grant_types = data.get("grant_types", [AUTHORIZATION_CODE])
    if (
        not isinstance(grant_types, list)
        or not grant_types
        or not set(grant_types) <= {AUTHORIZATION_CODE, REFRESH_TOKEN}
        or AUTHORIZATION_CODE not in grant_types
    ):
        raise ClientError(
            "grant_types must be authorization_code, optionally with refresh_token",
            "invalid_client_metadata",
        )
    response_types = data.get("response_types", ["code"])
    if not isinstance(response_types, list) or set(response_types) != {"code"}:
        raise ClientError('response_types must be ["code"]', "invalid_client_metadata")

    scope = data.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise ClientError("scope must be a string", "invalid_client_metadata")
        unknown = [value for value in scope.split() if value not in scopes]
        if unknown:
            raise ClientError(
                f"scope {_shown(unknown[0])} is not offered (offered: "
                f"{' '.join(scopes) or 'none'})",
                "invalid_client_metadata",
            )
    name = data.get("client_name")
    if name is not None and not isinstance(name, str):
        raise ClientError("client_name must be a string", "invalid_client_metadata")

    document: dict[str, Any] = {
        "redirect_uris": list(redirect_uris),
        "token_endpoint_auth_method": auth_method,
        "grant_types": list(dict.fromkeys(grant_types)),
        "response_types": ["code"],
    }
    if scope is not None:
        document["scope"] = scope
    if keys:
        document["jwks"] = data["jwks"]
    document |= {key: data[key] for key in _KEPT_METADATA if data.get(key) is not None}
    return _Metadata(
        redirect_uris, tuple(document["grant_types"]), auth_method, keys, scope, document
    )


# -- metadata documents -----------------------------------------------------------------------


def is_metadata_document_url(client_id: str) -> bool:
    """Whether ``client_id`` names a Client ID Metadata Document rather than a client."""
    return client_id.startswith(("https://", "http://"))


def metadata_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Client ID Metadata Document URL, or None: https (http on
    loopback, in development) with a path, no fragment, no user info, no dot segments."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not (parts.hostname and is_loopback_host(parts.hostname)):
        return "a client_id URL must be https (http only on loopback, for development)"
    if not parts.hostname:
        return "a client_id URL must have a host"
    if parts.path in {"", "/"}:
        return "a client_id URL must have a path"
    if "#" in url:
        return "a client_id URL must not have a fragment"
    if parts.username is not None or parts.password is not None:
        return "a client_id URL must not contain a user name or password"
    if any(segment in {".", ".."} for segment in parts.path.split("/")):
        return "a client_id URL must not contain . or .. path segments"
    return None


@dataclass
class _Cached:
    client: Client
    until: float


class MetadataDocuments:
    """Fetches, validates and briefly caches Client ID Metadata Documents."""

    def __init__(self, scopes: Collection[str], *, clock: Callable[[], float] = time.monotonic):
        self._scopes = scopes
        self._clock = clock
        self._cache: dict[str, _Cached] = {}

    async def client(self, url: str) -> Client:
        """The client ``url`` describes; raises :class:`ClientError` saying why not."""
        cached = self._cache.get(url)
        now = self._clock()
        if cached is not None and cached.until > now:
            return cached.client
        problem = metadata_url_problem(url)
        if problem is not None:
            raise ClientError(problem)
        data, max_age = await self._fetch(url)
        if data.get("client_id") != url:
            raise ClientError(
                f"the metadata document at {_shown(url)} names client_id "
                f"{_shown(str(data.get('client_id')))}, not its own URL"
            )
        try:
            metadata = _metadata(data, scopes=self._scopes, allow_private_key_jwt=True)
        except ClientError as exc:
            raise ClientError(f"the metadata document at {_shown(url)}: {exc}") from None
        name = metadata.document.get("client_name")
        client = Client(
            client_id=url,
            source="metadata document",
            auth_method=metadata.auth_method,
            redirect_uris=metadata.redirect_uris,
            grant_types=frozenset(metadata.grant_types),
            name=name if isinstance(name, str) else None,
            keys=metadata.keys,
        )
        lifetime = METADATA_DOCUMENT_CACHE_SECONDS if max_age is None else max_age
        self._cache = {k: v for k, v in self._cache.items() if v.until > now}
        if lifetime > 0:
            self._cache[url] = _Cached(client, now + min(lifetime, METADATA_DOCUMENT_CACHE_SECONDS))
        if cached is None:
            logger.info("Fetched the client metadata document {} ({})", url, client.label)
        return client

    async def _fetch(self, url: str) -> tuple[dict[str, Any], int | None]:
        host = urlsplit(url).hostname or ""
        try:
            async with (
                httpx.AsyncClient(
                    follow_redirects=False,
                    timeout=METADATA_DOCUMENT_TIMEOUT_SECONDS,
                    trust_env=not is_loopback_host(host),
                ) as http,
                http.stream("GET", url, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    extra = " (redirects are not followed)" if response.is_redirect else ""
                    raise ClientError(
                        f"the metadata document at {_shown(url)} answered HTTP "
                        f"{response.status_code}{extra}"
                    )
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > METADATA_DOCUMENT_MAX_BYTES:
                        raise ClientError(
                            f"the metadata document at {_shown(url)} is larger than "
                            f"{METADATA_DOCUMENT_MAX_BYTES} bytes"
                        )
                cache_control = response.headers.get("cache-control", "").lower()
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot fetch the metadata document at {_shown(url)}: {type(exc).__name__}"
            ) from None
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ClientError(f"the metadata document at {_shown(url)} is not a JSON object")
        max_age: int | None = None
        if "no-store" in cache_control or "no-cache" in cache_control:
            max_age = 0
        elif match := _MAX_AGE.search(cache_control):
            max_age = int(match.group(1))
        return data, max_age


# -- registered clients -------------------------------------------------------------------------


class RegisteredClients:
    """Clients registered by RFC 7591, kept in a JSON file so they survive restarts."""

    def __init__(self, path: Path, scopes: Collection[str]) -> None:
        self.path = path
        self._scopes = scopes
        self._documents: dict[str, dict[str, Any]] = self._load()

    def __len__(self) -> int:
        return len(self._documents)

    def get(self, client_id: str) -> Client | None:
        document = self._documents.get(client_id)
        if document is None:
            return None
        name = document.get("client_name")
        return Client(
            client_id=client_id,
            source="registered",
            auth_method="none",
            redirect_uris=tuple(document["redirect_uris"]),
            grant_types=frozenset(document["grant_types"]),
            name=name if isinstance(name, str) else None,
        )

    def register(self, data: object) -> dict[str, Any]:
        """Register a public client from its metadata; the RFC 7591 §3.2.1 answer. Raises
        :class:`ClientError` with ``invalid_redirect_uri`` or ``invalid_client_metadata``."""
        if not isinstance(data, dict):
            raise ClientError("the body must be a JSON object", "invalid_client_metadata")
        metadata = _metadata(data, scopes=self._scopes, allow_private_key_jwt=False)
        if len(self._documents) >= MAX_REGISTERED_CLIENTS:
            raise ClientError(
                f"{MAX_REGISTERED_CLIENTS} clients are registered already; delete {self.path} "
                "to start over",
                "invalid_client_metadata",
            )
        client_id = f"dev-{secrets.token_urlsafe(12)}"
        document = {
            "client_id": client_id,
            "client_id_issued_at": int(time.time()),
            **metadata.document,
        }
        self._documents[client_id] = document
        self._save()
        return document

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise ClientStoreError(
                f"cannot read the registered clients {self.path}: {reason}"
            ) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        clients = data.get("clients") if isinstance(data, dict) else None
        if not isinstance(clients, dict) or not all(
            isinstance(document, dict)
            and document.get("client_id") == client_id
            and isinstance(document.get("redirect_uris"), list)
            and isinstance(document.get("grant_types"), list)
            for client_id, document in clients.items()
        ):
            raise ClientStoreError(
                f"the registered clients file {self.path} is not what the dev issuer wrote; "
                "move it away to start with no registered clients"
            )
        return clients

    def _save(self) -> None:
        """Write the whole file anew (temporary file, then rename): never half-written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"clients": self._documents}, indent=2, sort_keys=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=".registered-clients-", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(payload + "\n")
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


class ClientRegistry:
    """Every client the issuer knows: configured ones first, then registered ones, then a
    URL ``client_id`` is taken as a metadata document."""

    def __init__(
        self,
        *,
        secrets_by_client: Mapping[str, SecretStr],
        keys_by_client: Mapping[str, tuple[ClientKey, ...]],
        registered: RegisteredClients,
        documents: MetadataDocuments,
    ) -> None:
        self._configured = {
            client_id: Client(
                client_id, "configured", "client_secret", grant_types=_CONFIDENTIAL, secret=secret
            )
            for client_id, secret in secrets_by_client.items()
        } | {
            client_id: Client(
                client_id, "configured", "private_key_jwt", grant_types=_CONFIDENTIAL, keys=keys
            )
            for client_id, keys in keys_by_client.items()
        }
        self.registered = registered
        self.documents = documents

    @property
    def configured_count(self) -> int:
        return len(self._configured)

    async def find(self, client_id: str) -> Client | None:
        """The client, or None if unknown; raises :class:`ClientError` when ``client_id`` is
        a metadata document URL whose document cannot be used."""
        client = self._configured.get(client_id) or self.registered.get(client_id)
        if client is None and is_metadata_document_url(client_id):
            client = await self.documents.client(client_id)
        return client


_CONFIDENTIAL = frozenset({CLIENT_CREDENTIALS})


def _shown(value: str, limit: int = 100) -> str:
    return value if len(value) <= limit else value[:limit] + "…"

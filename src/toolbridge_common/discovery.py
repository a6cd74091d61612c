"""Where an issuer keeps its endpoints: RFC 8414 authorization server metadata, else OpenID
Connect discovery.

Given an issuer URL such as ``https://idp.example/tenant``, the metadata document is looked
for at, in order:

1. ``https://idp.example/.well-known/oauth-authorization-server/tenant`` — RFC 8414 §3.1: the
   well-known path goes between the host and the issuer's path;
2. ``https://idp.example/tenant/.well-known/openid-configuration`` — OpenID Connect Discovery
   §4: appended to the issuer;
3. ``https://idp.example/tenant/.well-known/oauth-authorization-server`` — appended, as some
   servers (Okta's custom authorization servers among them) publish it.

The first JSON document found is used. Its ``issuer`` must be the configured one (RFC 8414
§3.3; a trailing slash aside), so a document copied from elsewhere cannot send tokens or
secrets to another server, and its endpoints must be https (http only on loopback hosts).
The fetch happens once, when a server starts (or on its first token request or
verification), never per call. Shared by the MCP server (its token endpoint, per-user mode's
JWKS) and the API (its JWKS).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from toolbridge_common.settings import is_loopback_host

RFC8414_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"
DISCOVERY_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
_MAX_DOCUMENT_BYTES = 256 * 1024


class DiscoveryError(Exception):
    """No usable metadata for the issuer; the message names ``setting``. ``retryable``:
    the issuer may answer later (network error, 5xx), unlike a wrong URL or document."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """What this project uses of an authorization server's metadata."""

    issuer: str
    metadata_url: str
    token_endpoint: str | None
    jwks_uri: str | None
    token_endpoint_auth_methods: tuple[str, ...] = ()


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata of ``issuer`` may be, in the order they are tried."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")

    def at(new_path: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, new_path, "", ""))

    urls = [at(RFC8414_WELL_KNOWN + path), at(path + OIDC_WELL_KNOWN)]
    if path:
        urls.append(at(path + RFC8414_WELL_KNOWN))
    return list(dict.fromkeys(urls))


async def discover(
    issuer: str, *, setting: str, http: httpx.AsyncClient | None = None
) -> ServerMetadata:
    """The metadata of ``issuer`` (the value of ``setting``, named in every error)."""
    owned = http is None
    # built off the event loop: its TLS context costs ~20 ms of CPU
    client = (
        await asyncio.to_thread(httpx.AsyncClient, timeout=DISCOVERY_TIMEOUT)
        if http is None
        else http
    )
    try:
        failures: list[str] = []
        retryable = False
        for url in metadata_urls(issuer):
            try:
                response = await client.get(url, headers={"Accept": "application/json"})
            except httpx.TransportError as exc:
                failures.append(f"{url}: {type(exc).__name__}")
                retryable = True
                continue
            document, problem = _document(response)
            if document is None:
                failures.append(f"{url}: {problem}")
                retryable = retryable or response.status_code >= 500
                continue
            return _metadata(document, issuer=issuer, url=url, setting=setting)
    finally:
        if owned:
            await client.aclose()
    raise DiscoveryError(
        f"No authorization server metadata for {setting}={issuer} ({'; '.join(failures)}): "
        "check the issuer URL, or set the endpoint explicitly",
        retryable=retryable,
    )


def discover_sync(issuer: str, *, setting: str, timeout: float = 5.0) -> ServerMetadata:
    """:func:`discover` for start-up code that runs before the event loop."""
    failures: list[str] = []
    retryable = False
    with httpx.Client(timeout=timeout) as client:
        for url in metadata_urls(issuer):
            try:
                response = client.get(url, headers={"Accept": "application/json"})
            except httpx.TransportError as exc:
                failures.append(f"{url}: {type(exc).__name__}")
                retryable = True
                continue
            document, problem = _document(response)
            if document is None:
                failures.append(f"{url}: {problem}")
                retryable = retryable or response.status_code >= 500
                continue
            return _metadata(document, issuer=issuer, url=url, setting=setting)
    raise DiscoveryError(
        f"No authorization server metadata for {setting}={issuer} ({'; '.join(failures)}): "
        "check the issuer URL, or set the endpoint explicitly",
        retryable=retryable,
    )


def _document(response: httpx.Response) -> tuple[dict[str, Any] | None, str]:
    if response.status_code != httpx.codes.OK:
        return None, f"HTTP {response.status_code}"
    if len(response.content) > _MAX_DOCUMENT_BYTES:
        return None, "document too large"
    try:
        document = response.json()
    except ValueError:
        return None, "not JSON"
    if not isinstance(document, dict):
        return None, "not a JSON object"
    return document, ""


def _metadata(document: dict[str, Any], *, issuer: str, url: str, setting: str) -> ServerMetadata:
    said = document.get("issuer")
    if not isinstance(said, str) or said.rstrip("/") != issuer.rstrip("/"):
        shown = said if isinstance(said, str) and said.isprintable() else "(none)"
        raise DiscoveryError(
            f"The metadata at {url} is for issuer {shown[:200]}, not {setting}={issuer} "
            "(RFC 8414 §3.3): check the issuer URL"
        )
    methods = document.get("token_endpoint_auth_methods_supported")
    return ServerMetadata(
        issuer=said,
        metadata_url=url,
        token_endpoint=_endpoint(document, "token_endpoint", url),
        jwks_uri=_endpoint(document, "jwks_uri", url),
        token_endpoint_auth_methods=tuple(m for m in methods if isinstance(m, str))
        if isinstance(methods, list)
        else (),
    )


def _endpoint(document: dict[str, Any], name: str, url: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _acceptable_url(value):
        raise DiscoveryError(
            f"The metadata at {url} has an unusable {name} (it must be an https URL, or http "
            "on a loopback host)"
        )
    return value


def _acceptable_url(value: str) -> bool:
    parts = urlsplit(value)
    if not parts.hostname or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and is_loopback_host(parts.hostname)

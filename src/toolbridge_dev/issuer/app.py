"""The DEVELOPMENT ONLY issuer's HTTP interface: an Auth0-shaped token endpoint, JWKS and
RFC 8414 / OpenID discovery metadata.

It behaves like Auth0 where ToolBridge depends on it (claims, error codes, ``iss`` with a
trailing slash), so what works against it works against Auth0. Secrets never reach an
answer or a log line; issued tokens are logged by client, audience and lifetime only.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from toolbridge_dev.issuer.config import IssuerSettings, env_name
from toolbridge_dev.issuer.keys import SigningKey
from toolbridge_dev.issuer.oauth import (
    ClientCredentials,
    client_credentials,
    error_response,
    parse_body,
)
from toolbridge_dev.issuer.tokens import mint_client_token

_REALM = 'Basic realm="toolbridge-dev-issuer"'
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_SHOWN_LENGTH = 100


def create_app(settings: IssuerSettings, key: SigningKey) -> Starlette:
    """The issuer for ``settings``, signing with ``key``; logs the startup line."""
    issuer = _Issuer(settings, key)
    logger.info(
        "Dev issuer (DEVELOPMENT ONLY) at {}: key {}, {} clients, tokens last {} s",
        settings.issuer_url,
        key.kid,
        len(settings.clients),
        settings.token_lifetime_seconds,
    )
    if not settings.clients:
        logger.warning(
            "No clients registered, so /oauth/token refuses every request (mint still works); "
            'register one with {}=\'{{"my-client":"my-secret"}}\'',
            env_name("clients"),
        )
    return Starlette(
        routes=[
            Route("/oauth/token", issuer.token, methods=["POST"]),
            Route("/.well-known/jwks.json", issuer.jwks, methods=["GET"]),
            Route("/.well-known/openid-configuration", issuer.metadata, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", issuer.metadata, methods=["GET"]),
        ]
    )


def metadata_document(settings: IssuerSettings) -> dict[str, Any]:
    """The discovery document (RFC 8414, and OpenID's subset of it) for ``settings``."""
    return {
        "issuer": settings.issuer_url,
        "token_endpoint": settings.endpoint("/oauth/token"),
        "jwks_uri": settings.endpoint("/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["token"],
    }


class _Issuer:
    """The request handlers, bound to one configuration and key."""

    def __init__(self, settings: IssuerSettings, key: SigningKey) -> None:
        self.settings = settings
        self.key = key
        self._jwks = {"keys": [key.public_jwk()]}
        self._metadata = metadata_document(settings)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self._jwks)

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(self._metadata)

    async def token(self, request: Request) -> Response:
        """Client credentials: checks the form, then the grant, the client, the audience."""
        form, problem = parse_body(await request.body(), request.headers.get("content-type", ""))
        credentials = client_credentials(form, request.headers.get("authorization"))
        problem = problem or credentials.problem
        if problem is None and credentials.method == "client_secret_basic":
            body_id = form.get("client_id")
            if body_id is not None and body_id != credentials.client_id:
                problem = "client_id in the body differs from the Basic credentials"
        if problem is not None:
            return error_response(400, "invalid_request", problem)
        grant_type = form.get("grant_type")
        if not grant_type:
            return error_response(400, "invalid_request", "Missing required parameter: grant_type")
        if grant_type != "client_credentials":
            return error_response(
                400,
                "unsupported_grant_type",
                f"Unsupported grant type: {_shown(grant_type)} "
                "(only client_credentials is supported)",
            )
        refusal = self._authenticate(credentials)
        if refusal is not None:
            return refusal
        assert credentials.client_id is not None
        audience = self._audience(form)
        if isinstance(audience, Response):
            return audience
        scope = form.get("scope") or None
        lifetime = self.settings.token_lifetime_seconds
        minted = mint_client_token(
            self.key,
            issuer=self.settings.issuer_url,
            client_id=credentials.client_id,
            audience=audience,
            lifetime_seconds=lifetime,
            scope=scope,
        )
        logger.info(
            "Issued a token to client {} for {}, valid {} s",
            _shown(credentials.client_id),
            audience,
            lifetime,
        )
        payload: dict[str, Any] = {
            "access_token": minted.token,
            "token_type": "Bearer",
            "expires_in": lifetime,
        }
        if scope is not None:
            payload["scope"] = scope
        return JSONResponse(payload, headers=_NO_STORE)

    def _authenticate(self, credentials: ClientCredentials) -> Response | None:
        """None if the client proved who it is; else the error answer (and a warning)."""
        if credentials.method == "client_secret_basic" and credentials.client_id is None:
            logger.warning("Refused client authentication: malformed Basic credentials")
            return error_response(
                401,
                "invalid_client",
                "Malformed Basic credentials (RFC 6749 §2.3.1: base64 of urlencoded id:secret)",
                {"WWW-Authenticate": _REALM},
            )
        if not credentials.client_id:
            # RFC 6749 §5.2: no client authentication included is invalid_client too.
            logger.warning("Refused client authentication: none included")
            return error_response(
                401,
                "invalid_client",
                "No client authentication included: send client_id and client_secret, or "
                "HTTP Basic",
            )
        expected = self.settings.clients.get(credentials.client_id)
        secret = credentials.secret
        if (
            expected is not None
            and secret is not None
            and hmac.compare_digest(secret.encode(), expected.get_secret_value().encode())
        ):
            return None
        logger.warning(
            "Refused client authentication for client {} ({})",
            _shown(credentials.client_id),
            "unknown client" if expected is None else "wrong or missing secret",
        )
        basic = credentials.method == "client_secret_basic"
        headers = {"WWW-Authenticate": _REALM} if basic else None
        return error_response(401, "invalid_client", "Client authentication failed", headers)

    def _audience(self, form: dict[str, str]) -> str | Response:
        """The audience asked for (Auth0 ``audience`` or RFC 8707 ``resource``), if registered."""
        audience = form.get("audience") or None
        resource = form.get("resource") or None
        if audience is not None and resource is not None and audience != resource:
            return error_response(
                400, "invalid_request", "audience and resource name different APIs; send one"
            )
        if resource is not None:
            parts = urlsplit(resource)
            if not parts.scheme or parts.fragment:
                return error_response(
                    400,
                    "invalid_target",
                    f"resource must be an absolute URI without a fragment: {_shown(resource)}",
                )
            if resource not in self.settings.audiences:
                return error_response(
                    400, "invalid_target", f"Resource not registered: {_shown(resource)}"
                )
            return resource
        if audience is None:
            return self.settings.default_audience
        if audience not in self.settings.audiences:
            return error_response(
                403, "access_denied", f"Service not enabled within domain: {_shown(audience)}"
            )
        return audience


def _shown(value: str) -> str:
    """A request value as repeated in an answer or log line: bounded in length."""
    return value if len(value) <= _SHOWN_LENGTH else value[:_SHOWN_LENGTH] + "…"

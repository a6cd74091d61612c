"""The DEVELOPMENT ONLY issuer's HTTP interface: a small OAuth 2 authorization server.

- ``POST /oauth/token``: client credentials (Auth0-shaped, as before), the authorization code
  grant with PKCE, and refresh tokens with rotation; clients authenticate with a secret
  (``client_secret_post`` / ``_basic``), a signed assertion (``private_key_jwt``, RFC 7523) or,
  public clients, not at all (``none``);
- ``GET /authorize``: the authorization endpoint (S256 PKCE only, exact redirect URIs, RFC 8707
  ``resource``) and its login page, ``POST /authorize`` its answer;
- ``POST /oauth/register``: RFC 7591 dynamic registration of public clients; a ``client_id``
  that is an https URL is read as a Client ID Metadata Document instead;
- ``/.well-known/jwks.json`` and the RFC 8414 / OpenID discovery metadata.

It behaves like Auth0 where ToolBridge depends on it (claims, error codes, ``iss`` with a
trailing slash). Secrets, codes and tokens never reach a log line.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from loguru import logger
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from toolbridge_dev.issuer.client_auth import (
    ASSERTION_TYPE,
    SIGNING_ALGORITHMS,
    AssertionRefused,
    AssertionVerifier,
    assertion_issuer,
)
from toolbridge_dev.issuer.clients import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    REFRESH_TOKEN,
    REGISTERED_CLIENTS_FILE,
    Client,
    ClientError,
    ClientRegistry,
    MetadataDocuments,
    RegisteredClients,
)
from toolbridge_dev.issuer.config import USER_NAME, USER_NAME_RULE, IssuerSettings, env_name
from toolbridge_dev.issuer.grants import Authorization, Code, Grants, is_s256_challenge, s256
from toolbridge_dev.issuer.grants import is_verifier as is_code_verifier
from toolbridge_dev.issuer.keys import SigningKey
from toolbridge_dev.issuer.limits import RequestLimitMiddleware
from toolbridge_dev.issuer.oauth import (
    ClientCredentials,
    client_credentials,
    error_response,
    parse_body,
)
from toolbridge_dev.issuer.pages import error_page, login_page
from toolbridge_dev.issuer.tokens import MintedToken, mint_client_token, mint_user_token

_REALM = 'Basic realm="toolbridge-dev-issuer"'
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_SHOWN_LENGTH = 100
_MAX_REGISTRATION_BYTES = 64 * 1024
_GRANTS = (AUTHORIZATION_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS)

AUTHORIZE_PATH = "/authorize"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a password
REGISTER_PATH = "/oauth/register"
JWKS_PATH = "/.well-known/jwks.json"


def create_app(settings: IssuerSettings, key: SigningKey) -> Starlette:
    """The issuer for ``settings``, signing with ``key``; logs the startup line.

    Raises :class:`~toolbridge_dev.issuer.clients.ClientStoreError` when the file of
    registered clients in the state folder exists but cannot be read.
    """
    issuer = _Issuer(settings, key)
    configured = issuer.clients.configured_count
    registered = len(issuer.clients.registered)
    if registered:
        logger.info(
            "{} dynamically registered clients loaded from {}",
            registered,
            issuer.clients.registered.path,
        )
    logger.info(
        "Dev issuer (DEVELOPMENT ONLY) at {}: key {}, {} clients, tokens last {} s",
        settings.issuer_url,
        key.kid,
        configured,
        settings.token_lifetime_seconds,
    )
    if not configured:
        logger.warning(
            "No clients registered, so client credentials are refused (sign-in with dynamic "
            "registration or a client metadata document, and mint, still work); register "
            'one with {}=\'{{"my-client":"my-secret"}}\'',
            env_name("clients"),
        )
    return Starlette(
        routes=[
            Route(TOKEN_PATH, issuer.token, methods=["POST"]),
            Route(AUTHORIZE_PATH, issuer.authorize, methods=["GET"]),
            Route(AUTHORIZE_PATH, issuer.sign_in, methods=["POST"]),
            Route(REGISTER_PATH, issuer.register, methods=["POST"]),
            Route(JWKS_PATH, issuer.jwks, methods=["GET"]),
            Route("/.well-known/openid-configuration", issuer.metadata, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", issuer.metadata, methods=["GET"]),
        ],
        # Browser-based clients (the MCP Inspector) call discovery, registration and the
        # token endpoint from their own origin; nothing here relies on cookies.
        middleware=[
            Middleware(
                RequestLimitMiddleware,
                max_header_count=settings.max_header_count,
                max_body_bytes=settings.max_body_bytes,
                body_timeout_seconds=settings.body_timeout_seconds,
            ),
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
            ),
        ],
    )


def metadata_document(settings: IssuerSettings) -> dict[str, Any]:
    """The discovery document (RFC 8414, and OpenID's subset of it) for ``settings``."""
    return {
        "issuer": settings.issuer_url,
        "authorization_endpoint": settings.endpoint(AUTHORIZE_PATH),
        "token_endpoint": settings.endpoint(TOKEN_PATH),
        "registration_endpoint": settings.endpoint(REGISTER_PATH),
        "jwks_uri": settings.endpoint(JWKS_PATH),
        "scopes_supported": list(settings.scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(_GRANTS),
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "client_secret_basic",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "client_id_metadata_document_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }


@dataclass(frozen=True)
class _Presented:
    """The client authentication a token request carries: a secret (Basic or body), an
    assertion (private_key_jwt), or neither (a public client's bare ``client_id``)."""

    credentials: ClientCredentials
    assertion: str | None
    problem: str | None


class _Refusal(Exception):
    """An answer to send instead of going on (an RFC 6749 error, a page, a redirect)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


class _Issuer:
    """The request handlers, bound to one configuration and key."""

    def __init__(self, settings: IssuerSettings, key: SigningKey) -> None:
        self.settings = settings
        self.key = key
        self._jwks = {"keys": [key.public_jwk()]}
        self._metadata = metadata_document(settings)
        scopes = frozenset(settings.scopes)
        self.clients = ClientRegistry(
            secrets_by_client=settings.clients,
            keys_by_client=settings.public_keys(),
            registered=RegisteredClients(
                Path(settings.state_dir) / REGISTERED_CLIENTS_FILE, scopes
            ),
            documents=MetadataDocuments(scopes),
        )
        self.grants = Grants(
            code_lifetime=settings.code_lifetime_seconds,
            refresh_lifetime=settings.refresh_token_lifetime_seconds,
        )
        self.assertions = AssertionVerifier(
            [settings.endpoint(TOKEN_PATH), settings.issuer_url, settings.issuer_url.rstrip("/")]
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self._jwks)

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(self._metadata)

    # -- the token endpoint -------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        """Checks the form, then the grant type, the client, then the grant itself."""
        form, problem = parse_body(await request.body(), request.headers.get("content-type", ""))
        presented = _presented(form, request.headers.get("authorization"))
        problem = problem or presented.problem
        if problem is not None:
            return error_response(400, "invalid_request", problem)
        grant_type = form.get("grant_type")
        if not grant_type:
            return error_response(400, "invalid_request", "Missing required parameter: grant_type")
        if grant_type not in _GRANTS:
            return error_response(
                400,
                "unsupported_grant_type",
                f"Unsupported grant type: {_shown(grant_type)} (supported: {', '.join(_GRANTS)})",
            )
        try:
            client = await self._authenticate(presented, form)
            if grant_type not in client.grant_types:
                return error_response(
                    400,
                    "unauthorized_client",
                    f"Client {_shown(client.client_id)} may not use the {grant_type} grant"
                    + _grant_hint(client, grant_type),
                )
            if grant_type == CLIENT_CREDENTIALS:
                return self._client_credentials(client, form)
            if grant_type == AUTHORIZATION_CODE:
                return self._authorization_code(client, form)
            return self._refresh_token(client, form)
        except _Refusal as refusal:
            return refusal.response

    def _client_credentials(self, client: Client, form: dict[str, str]) -> Response:
        audience = self._audience(form)
        if isinstance(audience, Response):
            return audience
        scope = form.get("scope") or None
        lifetime = self.settings.token_lifetime_seconds
        minted = mint_client_token(
            self.key,
            issuer=self.settings.issuer_url,
            client_id=client.client_id,
            audience=audience,
            lifetime_seconds=lifetime,
            scope=scope,
        )
        logger.info(
            "Issued a token to client {} for {}, valid {} s",
            _shown(client.client_id),
            audience,
            lifetime,
        )
        return self._token_answer(minted, scope)

    def _authorization_code(self, client: Client, form: dict[str, str]) -> Response:
        code, redirect_uri, verifier = (
            _required(form, name) for name in ("code", "redirect_uri", "code_verifier")
        )
        if not is_code_verifier(verifier):
            return error_response(
                400,
                "invalid_request",
                "code_verifier must be 43-128 characters A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)",
            )
        entry = self.grants.redeem_code(code)
        if entry == "used":
            logger.warning(
                "Refused a reused authorization code from client {}; revoked the refresh "
                "tokens issued from it",
                _shown(client.client_id),
            )
            return _invalid_grant(
                "Authorization code was already used; the tokens issued from it are revoked"
            )
        if not isinstance(entry, Code):
            return _invalid_grant("Authorization code is invalid or expired")
        authorization = entry.authorization
        if authorization.client_id != client.client_id:
            return _invalid_grant("Authorization code was issued to another client")
        if redirect_uri != authorization.redirect_uri:
            return _invalid_grant("redirect_uri differs from the one of the authorization request")
        if not hmac.compare_digest(s256(verifier), authorization.code_challenge):
            return _invalid_grant("code_verifier does not match the code_challenge (PKCE S256)")
        resource = form.get("resource") or None
        if resource is not None and resource != authorization.resource:
            return error_response(
                400,
                "invalid_target",
                f"resource {_shown(resource)} is not the one authorized ({authorization.resource})",
            )
        refresh = None
        if authorization.issue_refresh_token:
            refresh = self.grants.issue_refresh(
                self.grants.start_family(entry),
                client_id=client.client_id,
                subject=entry.subject,
                scope=authorization.scope,
                resource=authorization.resource,
            )
        return self._user_token(
            client, entry.subject, authorization.resource, authorization.scope, refresh, "code"
        )

    def _refresh_token(self, client: Client, form: dict[str, str]) -> Response:
        token = _required(form, "refresh_token")
        entry = self.grants.find_refresh(token)
        if entry == "used":
            logger.warning(
                "Refused a refresh token that was already rotated, from client {}; revoked "
                "its token family",
                _shown(client.client_id),
            )
            return _invalid_grant(
                "Refresh token was already used; every refresh token of this sign-in is now revoked"
            )
        if entry == "revoked":
            return _invalid_grant("Refresh token was revoked")
        if isinstance(entry, str):
            return _invalid_grant("Refresh token is invalid or expired")
        if entry.client_id != client.client_id:
            return _invalid_grant("Refresh token was issued to another client")
        scope = entry.scope
        asked = form.get("scope")
        if asked:
            granted = set((entry.scope or "").split())
            beyond = [value for value in asked.split() if value not in granted]
            if beyond:
                return error_response(
                    400,
                    "invalid_scope",
                    f"scope {_shown(beyond[0])} was not granted to this refresh token",
                )
            scope = asked
        resource = form.get("resource") or None
        if resource is not None and resource != entry.resource:
            return error_response(
                400,
                "invalid_target",
                f"resource {_shown(resource)} is not the one authorized ({entry.resource})",
            )
        if not self.grants.rotate(token):
            return _invalid_grant("Refresh token was already used")
        refresh = self.grants.issue_refresh(
            entry.family,
            client_id=client.client_id,
            subject=entry.subject,
            scope=entry.scope,
            resource=entry.resource,
        )
        return self._user_token(client, entry.subject, entry.resource, scope, refresh, "refresh")

    def _user_token(
        self,
        client: Client,
        subject: str,
        audience: str,
        scope: str | None,
        refresh: str | None,
        how: str,
    ) -> Response:
        lifetime = self.settings.token_lifetime_seconds
        minted = mint_user_token(
            self.key,
            issuer=self.settings.issuer_url,
            subject=subject,
            audience=audience,
            lifetime_seconds=lifetime,
            scope=scope,
            client_id=client.client_id,
        )
        logger.info(
            "Issued a token for user {} to client {} for {}, valid {} s ({}{})",
            subject,
            _shown(client.client_id),
            audience,
            lifetime,
            "authorization code" if how == "code" else "refresh",
            ", with a refresh token" if refresh else "",
        )
        return self._token_answer(minted, scope, refresh)

    def _token_answer(
        self, minted: MintedToken, scope: str | None, refresh: str | None = None
    ) -> Response:
        payload: dict[str, Any] = {
            "access_token": minted.token,
            "token_type": "Bearer",
            "expires_in": self.settings.token_lifetime_seconds,
        }
        if refresh is not None:
            payload["refresh_token"] = refresh
        if scope is not None:
            payload["scope"] = scope
        return JSONResponse(payload, headers=_NO_STORE)

    async def _authenticate(self, presented: _Presented, form: dict[str, str]) -> Client:
        """The client that proved who it is (a public client: named itself); else raises
        :class:`_Refusal` with the error answer (and logs a warning)."""
        credentials = presented.credentials
        if presented.assertion is not None:
            return await self._authenticate_assertion(presented.assertion, form)
        if credentials.method == "client_secret_basic" and credentials.client_id is None:
            logger.warning("Refused client authentication: malformed Basic credentials")
            raise _Refusal(
                error_response(
                    401,
                    "invalid_client",
                    "Malformed Basic credentials (RFC 6749 §2.3.1: base64 of urlencoded id:secret)",
                    {"WWW-Authenticate": _REALM},
                )
            )
        if not credentials.client_id:
            # RFC 6749 §5.2: no client authentication included is invalid_client too.
            logger.warning("Refused client authentication: none included")
            raise _Refusal(
                error_response(
                    401,
                    "invalid_client",
                    "No client authentication included: send client_id and client_secret, or "
                    "HTTP Basic",
                )
            )
        client = await self._find(credentials.client_id, credentials)
        secret = credentials.secret
        if client is not None and client.auth_method == "client_secret":
            expected = client.secret
            if (
                expected is not None
                and secret is not None
                and hmac.compare_digest(secret.encode(), expected.get_secret_value().encode())
            ):
                return client
        if client is not None and client.auth_method == "none" and credentials.method is None:
            return client
        reason, description = "unknown client", "Client authentication failed"
        if client is not None and client.auth_method == "client_secret":
            reason = "wrong or missing secret"
        elif client is not None and client.auth_method == "private_key_jwt":
            reason = "it authenticates with private_key_jwt"
            description += ": this client must send a client_assertion (private_key_jwt)"
        elif client is not None:
            reason = "a public client sent a secret"
            description += ": a public client sends its client_id only, without a secret"
        raise self._client_refused(credentials.client_id, reason, description, credentials)

    async def _authenticate_assertion(self, assertion: str, form: dict[str, str]) -> Client:
        kind = form.get("client_assertion_type")
        if kind != ASSERTION_TYPE:
            logger.warning("Refused client authentication: unsupported client_assertion_type")
            raise _Refusal(
                error_response(
                    401,
                    "invalid_client",
                    f"Unsupported client_assertion_type {_shown(kind or '')} (use "
                    f"{ASSERTION_TYPE})",
                )
            )
        try:
            client_id = assertion_issuer(assertion)
        except AssertionRefused as exc:
            logger.warning("Refused client authentication: {}", exc)
            raise _Refusal(error_response(401, "invalid_client", str(exc))) from None
        named = form.get("client_id")
        if named is not None and named != client_id:
            raise self._client_refused(
                named,
                "client_id differs from the assertion's iss",
                "client_id differs from the client_assertion's iss",
            )
        client = await self._find(client_id)
        if client is None or client.auth_method != "private_key_jwt":
            reason = "unknown client" if client is None else "it has no public key"
            raise self._client_refused(client_id, reason, "Client authentication failed")
        try:
            self.assertions.verify(assertion, client.client_id, client.keys)
        except AssertionRefused as exc:
            raise self._client_refused(
                client_id, str(exc), f"Client authentication failed: {exc}"
            ) from None
        return client

    async def _find(
        self, client_id: str, credentials: ClientCredentials | None = None
    ) -> Client | None:
        try:
            return await self.clients.find(client_id)
        except ClientError as exc:
            raise self._client_refused(
                client_id,
                exc.description,
                f"Client authentication failed: {exc.description}",
                credentials,
            ) from None

    @staticmethod
    def _client_refused(
        client_id: str,
        reason: str,
        description: str,
        credentials: ClientCredentials | None = None,
    ) -> _Refusal:
        logger.warning(
            "Refused client authentication for client {} ({})", _shown(client_id), reason
        )
        basic = credentials is not None and credentials.method == "client_secret_basic"
        headers = {"WWW-Authenticate": _REALM} if basic else None
        return _Refusal(error_response(401, "invalid_client", description, headers))

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

    # -- the authorization endpoint and its login page ----------------------------------------

    async def authorize(self, request: Request) -> Response:
        """Validate the authorization request, then show the login page (or, with
        ``prompt=none`` and a ``login_hint`` naming a user, answer at once)."""
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        params = dict(pairs)
        repeated = sorted({name for name, _ in pairs if [n for n, _ in pairs].count(name) > 1})
        try:
            client, redirect_uri = await self._client_and_redirect(params, repeated)
            back = _Redirect(redirect_uri, params.get("state"), self.settings.issuer_url)
            authorization = self._authorization(client, redirect_uri, params, repeated, back)
        except _Refusal as refusal:
            return refusal.response
        login_hint = params.get("login_hint") or None
        if "none" in params.get("prompt", "").split():
            if login_hint is None or not self._may_sign_in(login_hint):
                return back.error(
                    "login_required", "prompt=none needs a login_hint naming a dev user"
                )
            return self._signed_in(authorization, login_hint)
        request_id = self.grants.add_pending(authorization)
        return self._login_page(request_id, authorization, login_hint)

    async def sign_in(self, request: Request) -> Response:
        """The login form's answer: a user chosen (a code goes back to the client) or the
        sign-in cancelled (``access_denied`` goes back)."""
        form, _ = parse_body(await request.body(), request.headers.get("content-type", ""))
        request_id = form.get("request", "")
        authorization = self.grants.pending(request_id)
        if authorization is None:
            return _expired_page()
        back = _Redirect(authorization.redirect_uri, authorization.state, self.settings.issuer_url)
        if form.get("deny"):
            if self.grants.take_pending(request_id) is None:
                return _expired_page()
            logger.info("Sign-in to client {} cancelled", _shown(authorization.client_id))
            return back.error("access_denied", "The user cancelled the sign-in", status=303)
        user = form.get("user") or form.get("username", "").strip()
        if not self._may_sign_in(user):
            problem = (
                f"{user} is not one of the dev users here"
                if user and USER_NAME.fullmatch(user)
                else f"A user name is {USER_NAME_RULE}"
            )
            return self._login_page(request_id, authorization, None, problem)
        if self.grants.take_pending(request_id) is None:
            return _expired_page()
        return self._signed_in(authorization, user, status=303)

    def _signed_in(self, authorization: Authorization, user: str, status: int = 302) -> Response:
        code = self.grants.issue_code(authorization, user)
        logger.info(
            "User {} signed in to client {} (for {}); code valid {} s",
            user,
            _shown(authorization.client_id),
            authorization.resource,
            self.settings.code_lifetime_seconds,
        )
        back = _Redirect(authorization.redirect_uri, authorization.state, self.settings.issuer_url)
        return back.send({"code": code}, status)

    def _login_page(
        self,
        request_id: str,
        authorization: Authorization,
        login_hint: str | None,
        problem: str | None = None,
    ) -> Response:
        return login_page(
            request_id,
            authorization,
            self.settings.users,
            allow_any_user=self.settings.allow_any_user,
            action=AUTHORIZE_PATH,
            login_hint=login_hint,
            problem=problem,
        )

    def _may_sign_in(self, user: str) -> bool:
        if user in self.settings.users:
            return True
        return self.settings.allow_any_user and USER_NAME.fullmatch(user) is not None

    async def _client_and_redirect(
        self, params: dict[str, str], repeated: list[str]
    ) -> tuple[Client, str]:
        """RFC 6749 §4.1.2.1: a request whose client or redirect URI is missing, invalid or
        mismatching is answered with a page, never redirected."""
        for name in ("client_id", "redirect_uri"):
            if name in repeated:
                raise _Refusal(error_page("Invalid request", f"{name} must not be repeated"))
        client_id = params.get("client_id")
        if not client_id:
            raise _Refusal(error_page("Invalid request", "Missing required parameter: client_id"))
        try:
            client = await self.clients.find(client_id)
        except ClientError as exc:
            logger.warning("Refused an authorization request: {}", exc.description)
            raise _Refusal(error_page("Unknown client", exc.description)) from None
        if client is None or not client.redirect_uris:
            raise _Refusal(
                error_page(
                    "Unknown client",
                    f"No client {_shown(client_id)} signs users in here: register one "
                    f"(POST {self.settings.endpoint(REGISTER_PATH)}) or use the https URL of "
                    "a Client ID Metadata Document as client_id",
                )
            )
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            raise _Refusal(
                error_page("Invalid request", "Missing required parameter: redirect_uri")
            )
        if redirect_uri not in client.redirect_uris:
            logger.warning(
                "Refused an authorization request of client {}: redirect_uri not registered",
                _shown(client_id),
            )
            raise _Refusal(
                error_page(
                    "Invalid redirect_uri",
                    f"redirect_uri {_shown(redirect_uri)} is not registered for client "
                    f"{_shown(client_id)} (registered: {', '.join(client.redirect_uris)}); it "
                    "must match exactly",
                )
            )
        return client, redirect_uri

    def _authorization(
        self,
        client: Client,
        redirect_uri: str,
        params: dict[str, str],
        repeated: list[str],
        back: _Redirect,
    ) -> Authorization:
        """The request's grant, once the rest of it is valid; errors go back to the client
        (RFC 6749 §4.1.2.1, RFC 7636 §4.4.1, RFC 8707 §2)."""
        if "resource" in repeated:
            raise _Refusal(back.error("invalid_target", "Only one resource per request"))
        if repeated:
            raise _Refusal(
                back.error("invalid_request", f"Parameters must not be repeated: {repeated[0]}")
            )
        if AUTHORIZATION_CODE not in client.grant_types:
            raise _Refusal(back.error("unauthorized_client", "Client may not use the code flow"))
        response_type = params.get("response_type")
        if not response_type:
            raise _Refusal(
                back.error("invalid_request", "Missing required parameter: response_type")
            )
        if response_type != "code":
            raise _Refusal(
                back.error(
                    "unsupported_response_type",
                    f"response_type {_shown(response_type)} is not supported (only code)",
                )
            )
        if params.get("response_mode", "query") != "query":
            raise _Refusal(back.error("invalid_request", "Only response_mode query is supported"))
        challenge = params.get("code_challenge")
        if not challenge:
            raise _Refusal(
                back.error("invalid_request", "code_challenge is required (PKCE with S256)")
            )
        method = params.get("code_challenge_method")
        if method != "S256":
            said = "plain (the default when none is sent)" if method is None else method
            raise _Refusal(
                back.error(
                    "invalid_request",
                    f"code_challenge_method must be S256; {_shown(said)} is not supported",
                )
            )
        if not is_s256_challenge(challenge):
            raise _Refusal(
                back.error(
                    "invalid_request",
                    "code_challenge must be BASE64URL(SHA-256(code_verifier)): 43 characters",
                )
            )
        scope = params.get("scope") or None
        if scope is not None:
            unknown = [value for value in scope.split() if value not in self.settings.scopes]
            if unknown:
                raise _Refusal(
                    back.error(
                        "invalid_scope",
                        f"Unknown scope {_shown(unknown[0])} (offered: "
                        f"{' '.join(self.settings.scopes) or 'none'}; add it to "
                        f"{env_name('scopes')})",
                    )
                )
            scope = " ".join(dict.fromkeys(scope.split())) or None
        resource = self._resource(params.get("resource") or None, back)
        return Authorization(
            client_id=client.client_id,
            client_label=client.label,
            redirect_uri=redirect_uri,
            state=params.get("state"),
            code_challenge=challenge,
            scope=scope,
            resource=resource,
            issue_refresh_token=REFRESH_TOKEN in client.grant_types,
        )

    def _resource(self, resource: str | None, back: _Redirect) -> str:
        """RFC 8707: the audience of the tokens; one this issuer serves, else invalid_target.
        Without one, the first configured audience (as for client credentials)."""
        if resource is None:
            return self.settings.default_audience
        parts = urlsplit(resource)
        if not parts.scheme or "#" in resource:
            raise _Refusal(
                back.error(
                    "invalid_target",
                    f"resource must be an absolute URI without a fragment: {_shown(resource)}",
                )
            )
        if resource not in self.settings.audiences:
            raise _Refusal(
                back.error(
                    "invalid_target",
                    f"This issuer does not issue tokens for {_shown(resource)} (it serves "
                    f"{', '.join(self.settings.audiences)}; add it to {env_name('audiences')})",
                )
            )
        return resource

    # -- dynamic client registration (RFC 7591) -----------------------------------------------

    async def register(self, request: Request) -> Response:
        raw = await request.body()
        mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if len(raw) > _MAX_REGISTRATION_BYTES:
            return error_response(400, "invalid_client_metadata", "Client metadata is too large")
        if mime != "application/json":
            return error_response(
                400, "invalid_client_metadata", "Send the client metadata as application/json"
            )
        try:
            data = json.loads(raw)
        except ValueError:
            return error_response(400, "invalid_client_metadata", "Malformed JSON body")
        try:
            document = self.clients.registered.register(data)
        except ClientError as exc:
            logger.warning("Refused a client registration: {}", exc.description)
            return error_response(400, exc.error, exc.description)
        logger.info(
            "Registered public client {}{} with redirect URIs {}",
            document["client_id"],
            f" ({_shown(document['client_name'])})" if "client_name" in document else "",
            ", ".join(document["redirect_uris"]),
        )
        return JSONResponse(document, status_code=201, headers=_NO_STORE)


class _Redirect:
    """Answers sent back to the client's redirect URI (RFC 6749 §4.1.2 / §4.1.2.1): its
    query kept, ``state`` echoed when the request had one, ``iss`` added (RFC 9207)."""

    def __init__(self, redirect_uri: str, state: str | None, issuer: str) -> None:
        self.redirect_uri = redirect_uri
        self.state = state
        self.issuer = issuer

    def send(self, params: dict[str, str], status: int = 302) -> Response:
        answer = dict(params)
        if self.state is not None:
            answer["state"] = self.state
        answer["iss"] = self.issuer
        parts = urlsplit(self.redirect_uri)
        query = "&".join(filter(None, [parts.query, urlencode(answer)]))
        location = urlunsplit(parts._replace(query=query))
        return Response(status_code=status, headers={"Location": location, **_NO_STORE})

    def error(self, error: str, description: str, status: int = 302) -> Response:
        return self.send({"error": error, "error_description": description}, status)


def _presented(form: dict[str, str], authorization: str | None) -> _Presented:
    credentials = client_credentials(form, authorization)
    problem = credentials.problem
    if problem is None and credentials.method == "client_secret_basic":
        body_id = form.get("client_id")
        if body_id is not None and body_id != credentials.client_id:
            problem = "client_id in the body differs from the Basic credentials"
    assertion = form.get("client_assertion")
    if assertion is None and "client_assertion_type" in form:
        problem = problem or "client_assertion_type without client_assertion"
    if assertion is not None and credentials.method is not None:
        problem = problem or "Use only one client authentication method"
    return _Presented(credentials, assertion, problem)


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise _Refusal(
            error_response(400, "invalid_request", f"Missing required parameter: {name}")
        )
    return value


def _invalid_grant(description: str) -> Response:
    return error_response(400, "invalid_grant", description)


def _grant_hint(client: Client, grant_type: str) -> str:
    if grant_type == CLIENT_CREDENTIALS and client.auth_method == "none":
        return " (a public client cannot use client credentials)"
    if grant_type == REFRESH_TOKEN:
        return " (its grant_types do not include refresh_token)"
    return ""


def _expired_page() -> Response:
    return error_page(
        "Sign-in expired",
        "This sign-in request is unknown, expired (after 10 minutes) or already answered; "
        "start it again from the application.",
    )


def _shown(value: str) -> str:
    """A request value as repeated in an answer or log line: bounded in length."""
    return value if len(value) <= _SHOWN_LENGTH else value[:_SHOWN_LENGTH] + "…"

"""Reading an RFC 6749 token request and writing its error answers.

Shared by the dev issuer and the test suite's scriptable fake, so both parse client
credentials the same way. Nothing here ever puts a client secret into an answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote_plus

from starlette.responses import JSONResponse

AuthMethod = Literal["client_secret_post", "client_secret_basic"]


@dataclass(frozen=True)
class BasicCredentials:
    """Decoded HTTP Basic credentials; both are None when the header was malformed."""

    client_id: str | None
    secret: str | None = field(repr=False)


@dataclass(frozen=True)
class ClientCredentials:
    """Who the request says it is, how it said so, and why that is unacceptable (if it is).

    ``method`` is None when no secret was presented at all.
    """

    client_id: str | None
    secret: str | None = field(repr=False)
    method: AuthMethod | None
    problem: str | None = None


def parse_basic(header: str | None) -> BasicCredentials | None:
    """Decode client_secret_basic per RFC 6749 §2.3.1 (urlencoded id and secret); None when
    the header is absent or uses another scheme."""
    if header is None:
        return None
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return BasicCredentials(None, None)
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return BasicCredentials(None, None)
    return BasicCredentials(unquote_plus(client_id), unquote_plus(secret))


def parse_body(raw: bytes, content_type: str) -> tuple[dict[str, str], str | None]:
    """Return the body fields and, if the body is unacceptable, why (for invalid_request).

    Auth0 takes JSON, RFC 6749 takes a form; both are accepted. JSON values that are not
    strings are kept as their JSON text.
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return {}, "Malformed JSON body"
        if not isinstance(data, dict):
            return {}, "JSON body must be an object"
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}, None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}, "Body is not UTF-8"
    pairs = parse_qsl(text, keep_blank_values=True)
    form = dict(pairs)
    if len(form) != len(pairs):
        return form, "Parameters must not be repeated"
    if raw and mime != "application/x-www-form-urlencoded":
        return form, f"Unsupported content type: {content_type or '(none)'}"
    return form, None


def client_credentials(form: dict[str, str], authorization: str | None) -> ClientCredentials:
    """The client's credentials from the Authorization header (Basic) or the body (post);
    presenting both is refused, as RFC 6749 §2.3 allows only one method per request."""
    basic = parse_basic(authorization)
    if basic is None:
        method: AuthMethod | None = "client_secret_post" if "client_secret" in form else None
        return ClientCredentials(form.get("client_id"), form.get("client_secret"), method)
    problem = "Use only one client authentication method" if "client_secret" in form else None
    return ClientCredentials(basic.client_id, basic.secret, "client_secret_basic", problem)


def error_response(
    status: int,
    error: str,
    description: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build an RFC 6749 §5.2 error body."""
    payload = {"error": error}
    if description is not None:
        payload["error_description"] = description
    return JSONResponse(payload, status_code=status, headers=headers)

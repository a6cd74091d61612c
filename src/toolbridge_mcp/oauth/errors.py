"""``TokenError``: everything that can go wrong at a token endpoint, in one type.

Messages carry the OAuth ``error`` code, a short description and the ``TOOLBRIDGE_*``
setting to check; never the response body, a secret or a token.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

_CREDENTIALS = "check TOOLBRIDGE_AUTH0_CLIENT_ID and TOOLBRIDGE_AUTH0_CLIENT_SECRET"
_GRANT = (
    "enable the {grant} grant for the application (TOOLBRIDGE_AUTH0_CLIENT_ID) at the "
    "identity provider"
)
_HINTS: dict[str, str] = {
    "invalid_client": f"{_CREDENTIALS} (and TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD)",
    "unauthorized_client": _GRANT,
    "unsupported_grant_type": _GRANT,
    "invalid_grant": _GRANT,
    "access_denied": (
        "authorize the application for the API named by TOOLBRIDGE_AUTH0_AUDIENCE "
        "(Auth0: Applications > APIs > Machine to Machine Applications), or fix the audience"
    ),
    "invalid_scope": "check TOOLBRIDGE_AUTH0_SCOPE",
    "invalid_target": "check TOOLBRIDGE_AUTH0_RESOURCE and TOOLBRIDGE_AUTH0_AUDIENCE",
    "invalid_request": "check TOOLBRIDGE_AUTH0_AUDIENCE, TOOLBRIDGE_AUTH0_SCOPE and "
    "TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD",
}
_STATUS_HINTS: dict[int, str] = {
    401: _HINTS["invalid_client"],
    403: _HINTS["access_denied"],
    404: "no token endpoint there: check TOOLBRIDGE_AUTH0_DOMAIN or TOOLBRIDGE_AUTH0_TOKEN_URL",
    405: "no token endpoint there: check TOOLBRIDGE_AUTH0_DOMAIN or TOOLBRIDGE_AUTH0_TOKEN_URL",
}
_MAX_DESCRIPTION = 200


class TokenError(Exception):
    """No token could be obtained.

    ``retryable`` says whether asking again may help (network, 5xx, 429); ``retry_after`` is
    the cool-down the server asked for, in seconds; ``error_code`` is the OAuth error code.
    """

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.error_code = error_code
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """A few words for a log line: ``HTTP 503 temporarily_unavailable``, ``ConnectError``."""
        parts = [f"HTTP {self.status_code}" if self.status_code else None, self.error_code]
        return " ".join(p for p in parts if p) or self.cause or str(self)


def error_from_response(
    response: httpx.Response,
    *,
    token_url: str,
    grant_name: str,
    redact: Callable[[str], str],
    retry_after: float | None,
) -> TokenError:
    """The :class:`TokenError` for a token endpoint's non-200 answer (RFC 6749 §5.2)."""
    status = response.status_code
    code, description = _oauth_error(response)
    if description:
        # Redact before shortening, so a secret cut at the limit cannot leak in part.
        description = redact(description)
        description = "".join(c for c in description if c.isprintable())[:_MAX_DESCRIPTION]
    retryable = status in {408, 429} or status >= 500
    detail = " ".join(p for p in (code, f"({description})" if description else None) if p)
    message = f"Token request to {token_url} failed: HTTP {status}"
    if detail:
        message += f" {detail}"
    if status == 429:
        wait = f" for {retry_after:.0f}s" if retry_after is not None else ""
        message += f"; the identity provider is rate limiting this client{wait}"
    elif retryable:
        message += "; the identity provider is unavailable"
    else:
        hint = _HINTS.get(code or "") or _STATUS_HINTS.get(status)
        message += (
            f": {hint.format(grant=grant_name)}"
            if hint
            else ": check the TOOLBRIDGE_AUTH0_* settings"
        )
    return TokenError(
        message,
        error_code=code,
        status_code=status,
        retryable=retryable,
        retry_after=retry_after,
    )


def _oauth_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """The RFC 6749 §5.2 ``error`` code and ``error_description``, if the body has them."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, description = body.get("error"), body.get("error_description")
    code = code if isinstance(code, str) and code.isprintable() and len(code) <= 64 else None
    return code, description if isinstance(description, str) else None

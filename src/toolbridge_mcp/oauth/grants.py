"""Grants: what a token request asks for (RFC 6749 §4), as the fields of its body.

A grant knows nothing of HTTP, client authentication or retries; :class:`TokenEndpoint`
puts its fields into a request. To add a grant, write a class with the :class:`Grant` members
and hand it to a :class:`TokenEndpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type URI


class Grant(Protocol):
    """One kind of token request."""

    grant_type: ClassVar[str]
    """The ``grant_type`` value, e.g. ``client_credentials``."""
    display_name: ClassVar[str]
    """How identity providers' consoles call it, for error messages ("Client Credentials")."""

    @property
    def audience(self) -> str | None:
        """The audience asked for, shown in logs and health output (``None``: unnamed)."""
        ...

    def fields(self) -> dict[str, str]:
        """The body fields of the request, ``grant_type`` included (no client auth)."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Values in :meth:`fields` never to show in a message (a subject token, say)."""
        ...


@dataclass(frozen=True, slots=True)
class ClientCredentialsGrant:
    """RFC 6749 §4.4: a token for the client itself. ``audience`` is Auth0's name for the
    API; ``resource`` is the RFC 8707 indicator standards-based servers want."""

    grant_type: ClassVar[str] = "client_credentials"
    display_name: ClassVar[str] = "Client Credentials"

    audience: str | None = None
    scope: str | None = None
    resource: str | None = None

    def fields(self) -> dict[str, str]:
        optional = {"audience": self.audience, "scope": self.scope, "resource": self.resource}
        return {"grant_type": self.grant_type} | {k: v for k, v in optional.items() if v}

    def secrets(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class TokenExchangeGrant:
    """RFC 8693 token exchange: a token for ``audience`` (and/or the RFC 8707 ``resource``)
    in exchange for ``subject_token``, e.g. a user's token for an MCP server becoming a token
    for the API behind it, for the same user. ``subject_token_type`` is the RFC 8693 type of
    an access token unless the server wants its own (Auth0's Custom Token Exchange does)."""

    grant_type: ClassVar[str] = TOKEN_EXCHANGE_GRANT_TYPE
    display_name: ClassVar[str] = "Token Exchange"

    subject_token: str = field(repr=False)
    subject_token_type: str = ACCESS_TOKEN_TYPE
    audience: str | None = None
    resource: str | None = None
    scope: str | None = None
    requested_token_type: str | None = ACCESS_TOKEN_TYPE

    def fields(self) -> dict[str, str]:
        optional = {
            "audience": self.audience,
            "resource": self.resource,
            "scope": self.scope,
            "requested_token_type": self.requested_token_type,
        }
        return {
            "grant_type": self.grant_type,
            "subject_token": self.subject_token,
            "subject_token_type": self.subject_token_type,
        } | {k: v for k, v in optional.items() if v}

    def secrets(self) -> tuple[str, ...]:
        return (self.subject_token,)

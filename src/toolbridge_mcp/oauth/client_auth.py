"""Client authentication at the token endpoint (RFC 6749 §2.3, OpenID Connect Core §9).

One small class per method, each adding its part to the token request. To add one
(``private_key_jwt`` is next: a signed ``client_assertion`` whose audience is the token URL),
write a class with the :class:`ClientAuthentication` members and add it to
:func:`client_authentication` (and its name to :data:`ClientAuthMethod`, the setting's values).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple, Protocol, assert_never
from urllib.parse import quote_plus

from pydantic import SecretStr

ClientAuthMethod = Literal["client_secret_post", "client_secret_basic"]
"""The values of ``TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD``."""


class ClientCredentials(NamedTuple):
    """What client authentication adds to one token request."""

    fields: dict[str, str]
    headers: dict[str, str]


class ClientAuthentication(Protocol):
    """How the client proves who it is to the token endpoint."""

    method: ClassVar[str]
    """The registered name (RFC 7591 ``token_endpoint_auth_method``)."""

    @property
    def client_id(self) -> str:
        """The client's id, also what names its tokens in a cache."""
        ...

    def credentials(self, token_url: str) -> ClientCredentials:
        """Body fields and headers for one request to ``token_url``."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Values never to show in a message, even when an identity provider echoes them."""
        ...


@dataclass(frozen=True, slots=True)
class ClientSecretPost:
    """``client_id`` and ``client_secret`` in the request body (Auth0's default)."""

    method: ClassVar[str] = "client_secret_post"

    client_id: str
    client_secret: SecretStr = field(repr=False)

    def credentials(self, token_url: str) -> ClientCredentials:
        del token_url
        secret = self.client_secret.get_secret_value()
        return ClientCredentials({"client_id": self.client_id, "client_secret": secret}, {})

    def secrets(self) -> tuple[str, ...]:
        return (self.client_secret.get_secret_value(),)


@dataclass(frozen=True, slots=True)
class ClientSecretBasic:
    """HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1), so a secret such
    as ``p@ss+w/rd%&=:x`` survives the trip."""

    method: ClassVar[str] = "client_secret_basic"

    client_id: str
    client_secret: SecretStr = field(repr=False)

    def credentials(self, token_url: str) -> ClientCredentials:
        del token_url
        pair = (
            f"{_form_encode(self.client_id)}:{_form_encode(self.client_secret.get_secret_value())}"
        )
        header = "Basic " + base64.b64encode(pair.encode()).decode()
        return ClientCredentials({}, {"Authorization": header})

    def secrets(self) -> tuple[str, ...]:
        return (self.client_secret.get_secret_value(),)


def client_authentication(
    method: ClientAuthMethod, client_id: str, client_secret: SecretStr
) -> ClientAuthentication:
    """The client authentication named by ``TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD`` (mypy
    flags a value of :data:`ClientAuthMethod` left out here)."""
    match method:
        case "client_secret_post":
            return ClientSecretPost(client_id, client_secret)
        case "client_secret_basic":
            return ClientSecretBasic(client_id, client_secret)
        case _:
            assert_never(method)


def _form_encode(value: str) -> str:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before HTTP Basic."""
    return quote_plus(value, safe="")

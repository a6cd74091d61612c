"""Client authentication at the token endpoint (RFC 6749 §2.3, OpenID Connect Core §9).

One small class per method, each adding its part to the token request: the secret in the
body or in HTTP Basic, or (``private_key_jwt``, RFC 7523 §2.2 and OpenID Connect Core §9) a
short-lived JWT signed with the client's private key, so no shared secret exists at all. To
add one, write a class with the :class:`ClientAuthentication` members and add it to
:func:`client_authentication` (and its name to :data:`ClientAuthMethod`, the setting's values).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, assert_never
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import SecretStr

ClientAuthMethod = Literal["client_secret_post", "client_secret_basic", "private_key_jwt"]
"""The values of ``TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD``."""
SECRET_METHODS: frozenset[str] = frozenset({"client_secret_post", "client_secret_basic"})
"""The methods that need the client secret (the others need a private key)."""
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""RFC 7523 §2.2 ``client_assertion_type``."""
ASSERTION_LIFETIME = 60
"""Seconds a client assertion is valid: one request, with room for clock skew."""
MIN_RSA_BITS = 2048
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


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


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client's private signing key, the algorithm it signs with and its ``kid``."""

    private_key: Any = field(repr=False)
    """An RSA (2048 bits or more), EC (P-256, P-384, P-521) or Ed25519 private key."""
    algorithm: str
    key_id: str | None = None

    @classmethod
    def load(cls, text: str, *, key_id: str | None = None, setting: str = "the key") -> ClientKey:
        """The key of a PEM text (PKCS#8 or traditional, unencrypted) or of the file
        ``text`` names. ``ValueError`` says what is wrong, naming ``setting``, never the key."""
        text = text.strip()
        if not text.startswith("-----BEGIN"):
            path = Path(text).expanduser()
            try:
                text = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{setting} is neither a PEM private key nor a readable file "
                    f"({type(exc).__name__})"
                ) from None
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError, UnicodeError) as exc:
            reason = (
                "it is encrypted" if "encrypted" in str(exc).lower() else "not a PEM private key"
            )
            raise ValueError(f"{setting} cannot be used: {reason}") from None
        return cls(key, algorithm_for(key, setting=setting), key_id)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (with ``kid``, ``alg`` and ``use``), to register at the
        identity provider."""
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk |= {"alg": self.algorithm, "use": "sig"}
        if self.key_id:
            jwk["kid"] = self.key_id
        return jwk


def algorithm_for(key: object, *, setting: str = "the key") -> str:
    """The JWS algorithm a private key signs client assertions with."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{setting}: an RSA key needs at least {MIN_RSA_BITS} bits")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"{setting}: EC keys must be on P-256, P-384 or P-521")
        return algorithm
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"{setting}: only RSA, EC and Ed25519 keys can sign client assertions")


@dataclass(frozen=True, slots=True)
class PrivateKeyJwt:
    """``private_key_jwt``: a JWT signed with the client's private key (RFC 7523 §3) as
    ``client_assertion``: ``iss`` = ``sub`` = the client id, ``aud`` = the token endpoint,
    a fresh ``jti`` per request, ``exp`` one minute ahead, ``kid`` when configured."""

    method: ClassVar[str] = "private_key_jwt"

    client_id: str
    key: ClientKey = field(repr=False)
    lifetime: int = ASSERTION_LIFETIME
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def credentials(self, token_url: str) -> ClientCredentials:
        now = int(self.clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(24),
        }
        headers = {"typ": "JWT"} | ({"kid": self.key.key_id} if self.key.key_id else {})
        assertion = jwt.encode(
            claims, self.key.private_key, algorithm=self.key.algorithm, headers=headers
        )
        return ClientCredentials(
            {
                "client_id": self.client_id,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
            {},
        )

    def secrets(self) -> tuple[str, ...]:
        return ()  # each assertion is single-use and expires in a minute; no secret is sent


def client_authentication(
    method: ClientAuthMethod,
    client_id: str,
    client_secret: SecretStr | None = None,
    *,
    client_key: ClientKey | None = None,
) -> ClientAuthentication:
    """The client authentication named by ``TOOLBRIDGE_AUTH0_CLIENT_AUTH_METHOD`` (mypy
    flags a value of :data:`ClientAuthMethod` left out here)."""
    if method in SECRET_METHODS and client_secret is None:
        raise ValueError(f"{method} needs the client secret")
    match method:
        case "client_secret_post":
            assert client_secret is not None
            return ClientSecretPost(client_id, client_secret)
        case "client_secret_basic":
            assert client_secret is not None
            return ClientSecretBasic(client_id, client_secret)
        case "private_key_jwt":
            if client_key is None:
                raise ValueError("private_key_jwt needs the client's private key")
            return PrivateKeyJwt(client_id, client_key)
        case _:
            assert_never(method)


def _form_encode(value: str) -> str:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before HTTP Basic."""
    return quote_plus(value, safe="")

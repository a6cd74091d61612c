"""Signing keys, token minting and a real JWKS endpoint for tests of token verification.

``mint`` writes the JWS by hand instead of through PyJWT, so tests can produce exactly the
tokens a verifier must refuse: ``alg: none``, HS256 "signed" with the RSA public key's PEM
(algorithm confusion), a wrong ``kid``, a signature from another key. ``JWKSServer`` serves
``/.well-known/jwks.json`` over real HTTP on 127.0.0.1 (a :class:`ServerThread`); its key set
can be rotated, its answers broken or held, and it counts the fetches it answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.server import ServerThread

AUDIENCE = "https://api.toolbridge.test"
HS256_SECRET = "dev-hs256-secret-0123456789abcdef-0123456789"
"""A development HS256 secret long enough for RFC 7518 (>= 32 bytes)."""


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair with its ``kid`` and public JWK."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str | None = None, *, bits: int = 2048) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls(kid=kid or f"kid-{secrets.token_hex(6)}", private_key=key)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @property
    def public_pem(self) -> bytes:
        """The public key as PEM: what an algorithm-confusion attacker signs HS256 with."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self, *, with_kid: bool = True, alg: str | None = "RS256") -> dict[str, Any]:
        """The public JWK as an IdP publishes it."""
        data: dict[str, Any] = dict(RSAAlgorithm.to_jwk(self.public_key, as_dict=True))
        data["use"] = "sig"
        if alg is not None:
            data["alg"] = alg
        if with_kid:
            data["kid"] = self.kid
        return data


_KEY_KID = object()
"""Default for ``mint(kid=...)``: the signing key's own kid."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(
    claims: Mapping[str, Any],
    *,
    key: SigningKey | bytes | str | None,
    alg: str = "RS256",
    kid: object = _KEY_KID,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS of ``claims``, signed as ``alg`` says with whatever ``key`` is given.

    ``alg`` RS256 needs a :class:`SigningKey`; HS256 takes bytes/str (a secret, or a PEM for
    the confusion attack); ``none`` gives an empty signature. ``kid=None`` omits the header,
    any other value replaces it.
    """
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is _KEY_KID:
        if isinstance(key, SigningKey):
            header["kid"] = key.kid
    elif kid is not None:
        header["kid"] = kid
    header.update(headers or {})
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(dict(claims)).encode())}"
    ).encode()
    if alg == "RS256":
        if not isinstance(key, SigningKey):
            raise TypeError("RS256 needs a SigningKey")
        signature = key.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "HS256":
        if isinstance(key, SigningKey) or key is None:
            raise TypeError("HS256 needs a secret (bytes or str)")
        secret = key.encode() if isinstance(key, str) else key
        signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    elif alg == "none":
        signature = b""
    else:
        raise ValueError(f"mint() cannot sign {alg}")
    return f"{signing_input.decode()}.{_b64(signature)}"


def claims(
    *,
    issuer: str | None,
    audience: str | list[str] | None = AUDIENCE,
    sub: str | None = "auth0|user-1",
    lifetime: float = 300,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Standard access-token claims valid from ``now`` (wall clock) for ``lifetime`` seconds.

    Pass ``None`` to leave a claim out; ``extra`` adds or overrides (e.g. ``nbf=...``).
    """
    issued = int(time.time() if now is None else now)
    body: dict[str, Any] = {"iat": issued, "exp": int(issued + lifetime)}
    for name, value in (("iss", issuer), ("aud", audience), ("sub", sub)):
        if value is not None:
            body[name] = value
    body.update(extra)
    return {name: value for name, value in body.items() if value is not None}


def tamper(token: str) -> str:
    """The token with one signature byte changed: same header and claims, bad signature."""
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{_b64(bytes(raw))}"


class JWKSServer:
    """Serves a JWKS at ``jwks_url`` on 127.0.0.1; tokens minted by ``mint`` use its issuer.

    ``rotate``/``publish`` change the served keys; ``fail(status)`` makes fetches answer with
    that status (``fail(None)`` heals); ``hold()`` makes fetches wait until ``release()``.
    ``fetches`` counts answered and in-progress fetches; ``issued`` lists minted tokens so
    tests can check that none leaked into logs or messages.
    """

    def __init__(self, keys: list[SigningKey] | None = None, *, audience: str = AUDIENCE) -> None:
        self.keys: list[SigningKey] = keys if keys is not None else [SigningKey.generate()]
        self.audience = audience
        self._document: Any = self._document_for(self.keys)
        self._lock = threading.Lock()
        self._fetches = 0
        self._failure: int | None = None
        self._held = False
        self._issued: list[str] = []
        self._server = ServerThread(self._app(), on_close=self._release_now, name="jwks-server")
        self._release_event = asyncio.Event()

    @property
    def base_url(self) -> str:
        return self._server.url

    @property
    def jwks_url(self) -> str:
        return f"{self._server.url}/.well-known/jwks.json"

    @property
    def issuer(self) -> str:
        """Auth0-style issuer: the base URL with a trailing slash."""
        return f"{self._server.url}/"

    @property
    def key(self) -> SigningKey:
        """The first published key, the one ``mint`` signs with by default."""
        return self.keys[0]

    @property
    def fetches(self) -> int:
        with self._lock:
            return self._fetches

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    def start(self) -> Self:
        self._release_event = asyncio.Event()
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self, keys: list[SigningKey] | None = None) -> None:
        """Back to a healthy server publishing ``keys`` (default: the current ones), count 0."""
        self.release()
        with self._lock:
            if keys is not None:
                self.keys = keys
                self._document = self._document_for(keys)
            self._fetches = 0
            self._failure = None
            self._held = False
            self._issued.clear()

    def publish(self, keys: list[SigningKey], *, document: Any = None) -> None:
        """Serve ``keys`` from now on (or a hand-written ``document``, for broken sets)."""
        with self._lock:
            self.keys = keys
            self._document = document if document is not None else self._document_for(keys)

    def rotate(self) -> SigningKey:
        """Key rotation as an IdP does it: publish a new key next to the old ones."""
        new = SigningKey.generate()
        self.publish([new, *self.keys])
        return new

    def fail(self, status: int | None) -> None:
        with self._lock:
            self._failure = status

    def hold(self) -> None:
        """Fetches from now on wait until ``release()``."""
        with self._lock:
            self._held = True

    def release(self) -> None:
        with self._lock:
            self._held = False
        self._server.call_soon(self._release_now)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for this issuer and audience; see :func:`claims`."""
        overrides.setdefault("issuer", self.issuer)
        overrides.setdefault("audience", self.audience)
        return claims(**overrides)

    def mint(
        self,
        *,
        key: SigningKey | bytes | str | None = None,
        alg: str = "RS256",
        kid: object = _KEY_KID,
        headers: Mapping[str, Any] | None = None,
        **claim_overrides: Any,
    ) -> str:
        """A token for this issuer (valid unless told otherwise), recorded in ``issued``."""
        signer = self.key if key is None and alg == "RS256" else key
        token = mint(self.claims(**claim_overrides), key=signer, alg=alg, kid=kid, headers=headers)
        with self._lock:
            self._issued.append(token)
        return token

    def track(self, token: str) -> str:
        """Record a token minted elsewhere so leak checks cover it too."""
        with self._lock:
            self._issued.append(token)
        return token

    @staticmethod
    def _document_for(keys: list[SigningKey]) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in keys]}

    def _release_now(self) -> None:
        event, self._release_event = self._release_event, asyncio.Event()
        event.set()

    def _app(self) -> Starlette:
        return Starlette(routes=[Route("/.well-known/jwks.json", self._jwks, methods=["GET"])])

    async def _jwks(self, request: Request) -> Response:
        with self._lock:
            self._fetches += 1
            held = self._held
            release = self._release_event
        if held:
            await release.wait()
        with self._lock:
            failure, document = self._failure, self._document
        if failure is not None:
            return JSONResponse({"error": "unavailable"}, status_code=failure)
        return JSONResponse(document)


def leaked(text: str, values: Iterable[str]) -> list[str]:
    """Which of ``values`` (tokens, or just their signatures, and secrets) occur in ``text``;
    returned only to be counted, so a failing assertion does not print them."""
    found = []
    for value in values:
        pieces = [value, *value.split(".")[2:]] if value.count(".") == 2 else [value]
        if any(len(piece) >= 16 and piece in text for piece in pieces):
            found.append(value)
    return found

"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9).

A client proves who it is with a short-lived JWT signed by its own private key; the issuer
holds only the public key (a PEM key, a JWK or a JWKS). Only asymmetric algorithms are
accepted, each only with a key of its own type, so neither ``alg: none`` nor an HMAC
"signed" with the public key (algorithm confusion) can pass. Each assertion's ``jti`` is
accepted once while the assertion is valid.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""RFC 7523 §2.2: the ``client_assertion_type`` of a JWT client assertion."""

MAX_ASSERTION_LIFETIME_SECONDS = 300
"""An assertion may be valid at most this long into the future ("short ``exp``")."""

LEEWAY_SECONDS = 30
"""Clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""

_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
SIGNING_ALGORITHMS = (*_RSA_ALGORITHMS, *_EC_ALGORITHMS.values(), "EdDSA")
"""What ``token_endpoint_auth_signing_alg_values_supported`` lists: asymmetric only."""


class KeyParseError(ValueError):
    """A client's public key setting cannot be used; the message says why (keys are public)."""


@dataclass(frozen=True)
class ClientKey:
    """One public key of a client and the algorithms it may verify."""

    kid: str | None
    key: Any = field(repr=False)
    algorithms: tuple[str, ...]


def algorithms_for(key: object) -> tuple[str, ...]:
    """The JWS algorithms a public key of this type verifies (empty: not usable)."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        return (algorithm,) if algorithm else ()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    return ()


def parse_public_keys(text: str, *, allow_path: bool = True) -> tuple[ClientKey, ...]:
    """A client's keys from a PEM public key, a JWK, a JWKS (``{"keys": [...]}``), or, with
    ``allow_path``, the path of a file holding one of them."""
    value = text.strip()
    if value.startswith("-----BEGIN"):
        return (_from_pem(value),)
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            raise KeyParseError("not valid JSON (expected a JWK or a JWKS)") from None
        return keys_from_jwks(data)
    if allow_path and value:
        path = Path(value).expanduser()
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise KeyParseError(
                f"neither a PEM public key, a JWK or JWKS, nor a readable file ({path}: {reason})"
            ) from None
        try:
            return parse_public_keys(content, allow_path=False)
        except KeyParseError as exc:
            raise KeyParseError(f"{path}: {exc}") from None
    raise KeyParseError("expected a PEM public key, a JWK or a JWKS")


def keys_from_jwks(data: object) -> tuple[ClientKey, ...]:
    """The keys of a JWKS, or of a single JWK; private members are refused, as the issuer
    must never hold a client's private key."""
    if not isinstance(data, dict):
        raise KeyParseError("a JWK or JWKS must be a JSON object")
    entries = data.get("keys") if "keys" in data else [data]
    if not isinstance(entries, list) or not entries:
        raise KeyParseError('"keys" must be a non-empty list of JWKs')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise KeyParseError("each JWK must be a JSON object")
        if "d" in entry:
            raise KeyParseError("a JWK holds a private key; give the public key only")
        try:
            jwk = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise KeyParseError(f"unusable JWK: {exc}") from None
        algorithms = algorithms_for(jwk.key)
        declared = entry.get("alg")
        if declared is not None:
            if declared not in algorithms:
                raise KeyParseError(f"JWK alg {declared!r} does not fit its key or is symmetric")
            algorithms = (declared,)
        if not algorithms:
            raise KeyParseError("only RSA, EC (P-256/384/521) and Ed25519/Ed448 keys are accepted")
        kid = entry.get("kid")
        keys.append(ClientKey(kid if isinstance(kid, str) else None, jwk.key, algorithms))
    return tuple(keys)


def _from_pem(text: str) -> ClientKey:
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyParseError(
            "not a PEM public key (a private key or certificate is not accepted)"
        ) from None
    algorithms = algorithms_for(key)
    if not algorithms:
        raise KeyParseError("only RSA, EC (P-256/384/521) and Ed25519/Ed448 keys are accepted")
    return ClientKey(None, key, algorithms)


class AssertionRefused(Exception):
    """The client assertion is refused; the message says why (it holds no secret)."""


def assertion_issuer(assertion: str) -> str:
    """The ``iss`` of an assertion before it is verified: which client it claims to be."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise AssertionRefused("client_assertion is not a well-formed JWT") from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise AssertionRefused("client_assertion has no iss (it must be the client_id)")
    return issuer


class AssertionVerifier:
    """Verifies client assertions for this issuer and remembers their ``jti`` until they
    expire, so each is accepted once. Thread-safe; the store is bounded by the assertions'
    short lifetime."""

    def __init__(self, audiences: Iterable[str], *, clock: Callable[[], float] = time.time) -> None:
        self.audiences = list(dict.fromkeys(audiences))
        self._clock = clock
        self._used: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def verify(self, assertion: str, client_id: str, keys: Iterable[ClientKey]) -> None:
        """Accept ``assertion`` as ``client_id``'s proof of identity, or raise
        :class:`AssertionRefused` saying why not."""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            raise AssertionRefused("client_assertion is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in SIGNING_ALGORITHMS:
            raise AssertionRefused(
                f"client_assertion alg {algorithm!r} is not accepted (use one of "
                f"{', '.join(SIGNING_ALGORITHMS)})"
            )
        kid = header.get("kid")
        candidates = [key for key in keys if algorithm in key.algorithms]
        if isinstance(kid, str):
            named = [key for key in candidates if key.kid == kid]
            candidates = named or [key for key in candidates if key.kid is None]
        if not candidates:
            raise AssertionRefused(
                f"no key of client {client_id} verifies {algorithm}"
                + (f" with kid {kid!r}" if isinstance(kid, str) else "")
            )
        claims = self._decode(assertion, algorithm, candidates, client_id)
        self._check(claims, client_id)

    def _decode(
        self, assertion: str, algorithm: str, keys: list[ClientKey], client_id: str
    ) -> dict[str, Any]:
        problem = "signature does not verify with the client's keys"
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    assertion,
                    key.key,
                    algorithms=[algorithm],
                    audience=self.audiences,
                    issuer=client_id,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise AssertionRefused("client_assertion has expired") from None
            except jwt.InvalidAudienceError:
                raise AssertionRefused(
                    "client_assertion aud must name this issuer: " + " or ".join(self.audiences)
                ) from None
            except jwt.InvalidIssuerError:
                raise AssertionRefused("client_assertion iss must be the client_id") from None
            except jwt.MissingRequiredClaimError as exc:
                raise AssertionRefused(f"client_assertion has no {exc.claim} claim") from None
            except jwt.ImmatureSignatureError:
                raise AssertionRefused("client_assertion is not valid yet (nbf or iat)") from None
            except jwt.InvalidTokenError as exc:
                problem = f"invalid client_assertion: {exc}"
                continue
            return claims
        raise AssertionRefused(problem)

    def _check(self, claims: dict[str, Any], client_id: str) -> None:
        if claims.get("sub") != client_id:
            raise AssertionRefused("client_assertion sub must be the client_id")
        now = self._clock()
        expires = claims["exp"]
        if expires > now + MAX_ASSERTION_LIFETIME_SECONDS + LEEWAY_SECONDS:
            raise AssertionRefused(
                f"client_assertion exp is too far ahead (at most {MAX_ASSERTION_LIFETIME_SECONDS}"
                " s)"
            )
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AssertionRefused("client_assertion jti must be a non-empty string")
        with self._lock:
            self._used = {k: v for k, v in self._used.items() if v >= now}
            if (client_id, jti) in self._used:
                raise AssertionRefused("client_assertion jti was already used (replay)")
            self._used[(client_id, jti)] = float(expires) + LEEWAY_SECONDS

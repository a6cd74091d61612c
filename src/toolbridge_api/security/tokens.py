"""Access-token verification: RS256 against the identity provider's JWKS, HS256 for dev.

Why it is shaped this way: the algorithm is chosen by what the server is configured for,
never by the token alone. An RS256 token is checked only with an RSA key from the JWKS; an
HS256 token only with the configured dev secret (and refused when none is set), so a token
"signed" with the public key as an HMAC secret can never verify. Keys are cached; an unknown
``kid`` triggers a refetch (key rotation) at once, single-flight and paced twice: at most one
refetch per ``jwks_refetch_min_interval_seconds`` (1 s) for all kids together, and per kid at
most one per ``jwks_refetch_per_kid_seconds`` (5 s). So a key rotated just after a fetch
verifies about a second later, while a flood of forged kids costs the identity provider at most
one request a second; an outage of the provider leaves the cached keys serving. Keys older than
a maximum age are re-read in the background (the cached key keeps serving meanwhile), so a key
the provider withdrew stops verifying tokens, as with PyJWT's ``PyJWKClient`` cache lifespan.

With an issuer but neither a JWKS URL nor an HS256 secret, the JWKS URL is the ``jwks_uri`` of
the issuer's metadata (RFC 8414 or OpenID discovery, :mod:`toolbridge_common.discovery`),
looked up once, by the first fetch.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from loguru import logger
from pydantic import SecretStr

from toolbridge_api.config import MIN_HS256_SECRET_BYTES
from toolbridge_api.security.principal import AuthError, checked_user_id
from toolbridge_api.security.verified import VerifiedTokens
from toolbridge_common.discovery import DiscoveryError, discover
from toolbridge_common.singleflight import SingleFlight

_MAX_TOKEN_LENGTH = 16_384
"""Longer bearer values are refused before parsing; real access tokens are a few KB."""

_SHOWABLE_ALG = re.compile(r"[A-Za-z0-9]{1,10}")
"""An ``alg`` value echoed in an error message; anything else is not repeated back."""
_JWKS_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
_JWKS = "jwks"
_MAX_PACED_KIDS = 1024
"""Unknown kids remembered for per-kid pacing; older entries are forgotten first."""
UNKNOWN_KID_MESSAGE = "access token kid does not match any signing key of the issuer"
"""The 401 for a kid the keys do not have, even after a refetch; clients may retry it."""


class TokenVerifier:
    """Verifies bearer tokens and returns their ``sub``; every refusal is an ``AuthError``.

    ``audience`` must appear in ``aud`` (a string or a list); ``issuer``, when set, must equal
    ``iss``. ``exp`` and ``sub`` are required; ``exp``/``nbf`` get ``leeway_seconds``.
    ``clock`` (monotonic) only paces JWKS refetches. ``discover_jwks``: find the JWKS URL in
    the issuer's metadata (default: when there is an issuer and neither a JWKS URL nor an
    HS256 secret).
    """

    def __init__(
        self,
        *,
        audience: str,
        issuer: str | None,
        jwks_url: str | None,
        hs256_secret: SecretStr | None = None,
        leeway_seconds: float = 30,
        jwks_refetch_min_interval_seconds: float = 1,
        jwks_refetch_per_kid_seconds: float = 5,
        jwks_max_age_seconds: float = 300,
        discover_jwks: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if discover_jwks is None:
            discover_jwks = not jwks_url and hs256_secret is None and bool(issuer)
        if discover_jwks and not issuer:
            raise ValueError("JWKS discovery needs the issuer")
        if not audience and (jwks_url or hs256_secret is not None or discover_jwks):
            raise ValueError("TokenVerifier needs an audience: tokens for any API would pass")
        if hs256_secret is not None:
            size = len(hs256_secret.get_secret_value().encode())
            if size < MIN_HS256_SECRET_BYTES:
                raise ValueError(
                    f"the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes "
                    f"(got {size}); generate one with `openssl rand -hex 32`"
                )
            logger.warning(
                "HS256 access tokens are accepted (development secret set); "
                "never configure it in production"
            )
        if not jwks_url and hs256_secret is None and not discover_jwks:
            logger.warning("No JWKS URL and no HS256 secret: every bearer token will be refused")
        if min(leeway_seconds, jwks_refetch_min_interval_seconds, jwks_refetch_per_kid_seconds) < 0:
            raise ValueError("leeway and refetch intervals must not be negative")
        if jwks_max_age_seconds <= 0:
            raise ValueError("jwks_max_age_seconds must be positive")
        self.audience = audience
        self.issuer = issuer
        self.jwks_url = jwks_url or None
        self._discover = bool(discover_jwks) and not self.jwks_url
        self._hs256_secret = hs256_secret
        self._leeway = leeway_seconds
        self._refetch_interval = jwks_refetch_min_interval_seconds
        self._per_kid_interval = jwks_refetch_per_kid_seconds
        self._kid_attempts: dict[str, float] = {}
        self._max_age = jwks_max_age_seconds
        self._loaded_at: float | None = None
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._unnamed: list[jwt.PyJWK] = []
        self._last_attempt: float | None = None
        self._last_attempt_failed = False
        self._refetch: SingleFlight[str, None] = SingleFlight("jwks-fetch")
        self._client: httpx.AsyncClient | None = None
        self.verified = VerifiedTokens()
        """Tokens verified before: checked once until they expire or the keys change."""

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The accepted ``alg`` values, in the order they are offered to clients."""
        allowed: list[str] = []
        if self.jwks_url is not None or self._discover:
            allowed.append("RS256")
        if self._hs256_secret is not None:
            allowed.append("HS256")
        return tuple(allowed)

    async def verify(self, token: str) -> str:
        """Return the verified ``sub`` of ``token``; raise ``AuthError`` (401, or 503 when
        the JWKS cannot be loaded) otherwise. Messages never contain the token."""
        if len(token) > _MAX_TOKEN_LENGTH:
            raise AuthError(401, f"access token is longer than {_MAX_TOKEN_LENGTH} characters")
        digest = VerifiedTokens.digest(token)
        known = self.verified.get(digest, self._keys, self._hs256_secret)
        if known is not None:
            if known.keys is self._keys and self._stale():
                self._start_fetch()  # as a check with the cached key would
            return known.subject
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "access token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg is None:
            raise AuthError(401, "access token has no alg header")
        if not isinstance(alg, str) or alg not in self.algorithms:
            allowed = ", ".join(self.algorithms) or "none configured"
            shown = alg if isinstance(alg, str) and _SHOWABLE_ALG.fullmatch(alg) else "(invalid)"
            raise AuthError(
                401, f"access token algorithm {shown} is not accepted (allowed: {allowed})"
            )
        key: Any
        if alg == "HS256":
            assert self._hs256_secret is not None
            key = self._hs256_secret.get_secret_value().encode()
        else:
            key = (await self._rsa_key(header.get("kid"))).key
        claims = self._decode(token, key, alg)
        subject = checked_user_id(claims.get("sub"), source="the access token's sub claim")
        self.verified.put(
            digest,
            subject,
            until=float(claims["exp"]) + self._leeway,
            keys=self._hs256_secret if alg == "HS256" else self._keys,
        )
        return subject

    def prefetch(self) -> asyncio.Task[None] | None:
        """Start reading the keys (discovering the JWKS URL first if need be) in the
        background, so the first request does not wait on the identity provider; for the
        application's start-up, which does not wait for it. A failure is logged and does
        not count against the refetch pacing: the first request tries again at once.
        Returns the fetch (None when no JWKS is configured); :meth:`aclose` cancels it."""
        if self.jwks_url is None and not self._discover:
            return None
        if self._refetch.running(_JWKS) is None:
            self._last_attempt = self._clock()
        return self._refetch.start(_JWKS, self._prefetch)

    async def _prefetch(self) -> None:
        await self._fetch()
        if self._last_attempt_failed:
            self._last_attempt = None

    async def aclose(self) -> None:
        """Stop a fetch in flight and close the JWKS connection pool."""
        await self._refetch.cancel_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        """Check signature and claims with exactly one algorithm."""
        required = ["exp", "sub"] + (["iss"] if self.issuer is not None else [])
        return decode_claims(
            token,
            key,
            alg=alg,
            audience=self.audience,
            issuer=self.issuer,
            leeway=self._leeway,
            required=required,
        )

    async def _rsa_key(self, kid: object) -> jwt.PyJWK:
        """The RSA key for ``kid``: from the cache, else after one paced, shared refetch."""
        if kid is not None and not isinstance(kid, str):
            raise AuthError(401, "access token kid header must be a string")
        found = self._lookup(kid)
        if found is not None:
            if self._stale():
                self._start_fetch()
            return found
        await self._refresh(kid)
        found = self._lookup(kid)
        if found is not None:
            return found
        if self._keys is None or self._last_attempt_failed:
            raise AuthError(
                503,
                "signing keys of the identity provider are unavailable (JWKS fetch failed); "
                "retry later",
                retry_after=self._retry_after(),
            )
        if kid is None:
            count = len(self._keys) + len(self._unnamed)
            raise AuthError(
                401,
                f"access token has no kid header and the issuer has {count} signing keys "
                "(a kid is needed unless there is exactly one)",
            )
        raise AuthError(401, UNKNOWN_KID_MESSAGE)

    async def _refresh(self, kid: str | None) -> None:
        """Join the fetch in flight, or start one if the pacing allows. One caller giving up
        (client disconnect) does not cancel the fetch for the others."""
        inflight = self._start_fetch(kid)
        if inflight is not None:
            await asyncio.shield(inflight)

    def _start_fetch(self, kid: str | None = None) -> asyncio.Task[None] | None:
        """The fetch in flight, else a new one if the pacing allows (for ``kid``, when an
        unknown kid asks), else None."""
        inflight = self._refetch.running(_JWKS)
        if inflight is None:
            if (self.jwks_url is None and not self._discover) or not self._may_fetch(kid):
                return None
            now = self._last_attempt = self._clock()
            if kid is not None and self._keys is not None:
                self._remember_kid(kid, now)
            inflight = self._refetch.start(_JWKS, self._fetch)
        return inflight

    def _remember_kid(self, kid: str, now: float) -> None:
        attempts = self._kid_attempts
        attempts.pop(kid, None)
        attempts[kid] = now
        if len(attempts) > _MAX_PACED_KIDS:
            for old in list(attempts)[: len(attempts) - _MAX_PACED_KIDS]:
                del attempts[old]

    def _stale(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at >= self._max_age

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys
        if keys is None:
            return None
        if kid is None:
            everything = [*keys.values(), *self._unnamed]
            return everything[0] if len(everything) == 1 else None
        return keys.get(kid)

    def _may_fetch(self, kid: str | None = None) -> bool:
        now = self._clock()
        if self._last_attempt is not None and now - self._last_attempt < self._refetch_interval:
            return False
        last_for_kid = None if kid is None else self._kid_attempts.get(kid)
        return last_for_kid is None or now - last_for_kid >= self._per_kid_interval

    def _retry_after(self) -> float:
        if self._last_attempt is None:
            return 0.0
        return max(0.0, self._refetch_interval - (self._clock() - self._last_attempt))

    async def _fetch(self) -> None:
        """Replace the cached keys with the JWKS; on any failure keep the old ones.

        Runs as its own task (see ``_rsa_key``), so it must never raise: whatever the IdP
        answers, the outcome is recorded and logged here.
        """
        if self._client is None:
            # built off the event loop: its TLS context costs ~20 ms of CPU
            self._client = await asyncio.to_thread(httpx.AsyncClient, timeout=_JWKS_TIMEOUT)
        if self.jwks_url is None and not await self._discover_jwks_url(self._client):
            self._last_attempt_failed = True
            return
        assert self.jwks_url is not None
        try:
            response = await self._client.get(self.jwks_url)
            response.raise_for_status()
            key_set = _parse_jwks(response.json())
        except Exception as exc:  # whatever the IdP answers must never become a 500
            self._last_attempt_failed = True
            logger.warning(
                "JWKS fetch from {} failed ({}: {}); keeping {} cached key(s)",
                self.jwks_url,
                type(exc).__name__,
                str(exc)[:200],
                0 if self._keys is None else len(self._keys) + len(self._unnamed),
            )
            return
        named: dict[str, jwt.PyJWK] = {}
        unnamed: list[jwt.PyJWK] = []
        for key in key_set:
            if key.algorithm_name != "RS256" or key.public_key_use not in (None, "sig"):
                continue
            if key.key_id is None:
                unnamed.append(key)
            else:
                named[key.key_id] = key
        self._keys, self._unnamed = named, unnamed
        self._loaded_at = self._clock()
        self._last_attempt_failed = False
        if not named and not unnamed:
            logger.warning("JWKS from {} holds no RS256 signing key", self.jwks_url)
            return
        logger.info(
            "JWKS loaded from {}: {} RS256 signing key(s)", self.jwks_url, len(named) + len(unnamed)
        )

    async def _discover_jwks_url(self, client: httpx.AsyncClient) -> bool:
        """Look up ``jwks_uri`` in the issuer's metadata; False (logged) when it fails."""
        assert self.issuer is not None
        try:
            metadata = await discover(self.issuer, setting="TOOLBRIDGE_API_ISSUER", http=client)
        except DiscoveryError as exc:
            logger.error("{}; or set TOOLBRIDGE_API_JWKS_URL", exc)
            return False
        if metadata.jwks_uri is None:
            logger.error(
                "The metadata of TOOLBRIDGE_API_ISSUER={} ({}) names no jwks_uri: set "
                "TOOLBRIDGE_API_JWKS_URL",
                self.issuer,
                metadata.metadata_url,
            )
            return False
        self.jwks_url = metadata.jwks_uri
        logger.info(
            "JWKS URL {} discovered from TOOLBRIDGE_API_ISSUER={}", self.jwks_url, self.issuer
        )
        return True


def _parse_jwks(document: object) -> jwt.PyJWKSet:
    """A key set from a decoded JWKS document; ``PyJWKSetError`` when it is not one."""
    if not isinstance(document, dict):
        raise jwt.PyJWKSetError("JWKS is not a JSON object")
    return jwt.PyJWKSet.from_dict(document)


def decode_claims(
    token: str,
    key: Any,
    *,
    alg: str,
    audience: str | None,
    issuer: str | None,
    leeway: float,
    required: list[str],
) -> dict[str, Any]:
    """The claims of ``token`` checked against ``key`` with exactly ``alg``; every PyJWT
    failure as an :class:`AuthError` 401 whose message never contains the token. The one
    mapping for the identity provider's tokens and the API's own."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": required, "enforce_minimum_key_length": True},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "access token has expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError(401, "access token is not valid yet (nbf or iat in the future)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(401, f"access token has no {exc.claim} claim") from None
    except jwt.InvalidAudienceError:
        raise AuthError(401, f"access token audience does not include {audience}") from None
    except jwt.InvalidIssuerError:
        raise AuthError(401, f"access token issuer is not {issuer}") from None
    except jwt.InvalidSignatureError:
        raise AuthError(401, "access token signature is invalid") from None
    except jwt.exceptions.InvalidSubjectError:
        raise AuthError(401, "access token sub claim must be a string") from None
    except jwt.DecodeError:
        raise AuthError(401, "access token is not a well-formed JWT") from None
    except jwt.PyJWTError as exc:
        raise AuthError(401, f"access token is invalid ({type(exc).__name__})") from None
    return claims

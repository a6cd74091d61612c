"""Verified tokens are remembered (by their SHA-256) and checked once: until they expire (plus
the leeway), while the keys that verified them are still the verifier's; refusals never are.
And stored payloads read as the standard library reads them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.support.clock import FakeClock
from tests.support.jwks import HS256_SECRET, JWKSServer, SigningKey
from toolbridge_api.db.schema import read_json
from toolbridge_api.security import AuthError, TokenVerifier
from toolbridge_api.security.verified import VerifiedTokens

Factory = Callable[..., TokenVerifier]


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


@pytest.fixture
def jwks(jwks_server: JWKSServer) -> Iterator[JWKSServer]:
    jwks_server.reset(keys=jwks_server.keys[-1:])
    yield jwks_server
    jwks_server.release()


@pytest.fixture
async def make_verifier(jwks: JWKSServer, clock: FakeClock) -> AsyncIterator[Factory]:
    made: list[TokenVerifier] = []

    def factory(**options: Any) -> TokenVerifier:
        settings: dict[str, Any] = {
            "audience": jwks.audience,
            "issuer": jwks.issuer,
            "jwks_url": jwks.jwks_url,
            "clock": clock,
        }
        made.append(TokenVerifier(**(settings | options)))
        return made[-1]

    yield factory
    for verifier in made:
        await verifier.aclose()


def count_checks(verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each full check (signature and claims) the verifier makes."""
    checks: list[str] = []
    decode = verifier._decode

    def counted(token: str, key: Any, alg: str) -> dict[str, Any]:
        checks.append(alg)
        return decode(token, key, alg)

    monkeypatch.setattr(verifier, "_decode", counted)
    return checks


async def test_a_token_is_checked_once(
    jwks: JWKSServer, make_verifier: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = make_verifier()
    checks = count_checks(verifier, monkeypatch)
    token = jwks.mint(sub="auth0|alice")
    for _ in range(5):
        assert await verifier.verify(token) == "auth0|alice"
    assert checks == ["RS256"]
    assert await verifier.verify(jwks.mint(sub="auth0|bob")) == "auth0|bob"
    assert checks == ["RS256", "RS256"]
    assert len(verifier.verified) == 2


async def test_refusals_are_decided_every_time(
    jwks: JWKSServer, make_verifier: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = make_verifier()
    checks = count_checks(verifier, monkeypatch)
    wrong = jwks.mint(audience="https://other.example")
    for _ in range(3):
        with pytest.raises(AuthError):
            await verifier.verify(wrong)
    assert len(checks) == 3
    assert len(verifier.verified) == 0


async def test_a_remembered_token_expires_with_the_leeway(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    verifier = make_verifier(leeway_seconds=30)
    now = [time.time()]
    verifier.verified = VerifiedTokens(clock=lambda: now[0])
    token = jwks.mint(now=int(now[0]), lifetime=60)
    assert await verifier.verify(token) == "auth0|user-1"
    now[0] += 60 + 29
    assert verifier.verified.get(VerifiedTokens.digest(token), verifier._keys) is not None
    now[0] += 1.5
    assert verifier.verified.get(VerifiedTokens.digest(token), verifier._keys) is None


async def test_new_keys_void_what_the_old_ones_verified(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key the identity provider withdrew stops verifying its tokens once the keys are
    re-read, remembered or not."""
    verifier = make_verifier(jwks_max_age_seconds=300)
    old = jwks.mint()
    assert await verifier.verify(old) == "auth0|user-1"
    checks = count_checks(verifier, monkeypatch)
    replacement = SigningKey.generate()
    jwks.publish(jwks.keys, document={"keys": [replacement.jwk()]})
    clock.advance(300)
    assert await verifier.verify(old) == "auth0|user-1"  # served while the re-read runs
    assert checks == []
    inflight = verifier._refetch.running("jwks")
    assert inflight is not None, "a remembered token still starts the re-read of stale keys"
    await inflight
    with pytest.raises(AuthError, match="kid does not match"):
        await verifier.verify(old)
    assert await verifier.verify(jwks.mint(key=replacement)) == "auth0|user-1"


async def test_hs256_tokens_are_remembered_under_the_secret(
    jwks: JWKSServer, make_verifier: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = make_verifier(jwks_url=None, hs256_secret=SecretStr(HS256_SECRET))
    checks = count_checks(verifier, monkeypatch)
    token = jwks.mint(key=HS256_SECRET, alg="HS256")
    assert await verifier.verify(token) == "auth0|user-1"
    assert await verifier.verify(token) == "auth0|user-1"
    assert checks == ["HS256"]


def test_the_cache_is_bounded_and_keeps_no_token() -> None:
    cache = VerifiedTokens(max_entries=3)
    keys = object()
    for n in range(5):
        cache.put(VerifiedTokens.digest(f"token-{n}"), f"user-{n}", until=1e12, keys=keys)
    assert len(cache) == 3
    assert cache.get(VerifiedTokens.digest("token-0"), keys) is None
    found = cache.get(VerifiedTokens.digest("token-4"), keys)
    assert found is not None
    assert found.subject == "user-4"
    assert cache.get(VerifiedTokens.digest("token-4"), object()) is None  # other keys
    assert all("token" not in repr(entry) for entry in cache._entries.values())


@pytest.mark.parametrize(
    "stored",
    [
        '{"title": "t", "tags": ["a"], "n": 1.5, "big": 123456789012345678901234567890}',
        '{"odd": NaN, "inf": Infinity, "nul": "\\u0000", "e": "\\u00e9\\ud83d\\ude00"}',
        '{"lone": "\\ud800", "key\\udfff": 1}',
        "[0.30000000000000004, -0.0, 1e400, 5e-324]",
    ],
)
def test_stored_json_reads_as_the_standard_library_reads_it(stored: str) -> None:
    """Payloads are read with pydantic's faster parser, falling back for what it refuses."""
    assert repr(read_json(stored)) == repr(json.loads(stored))

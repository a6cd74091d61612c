"""TokenVerifier against a real JWKS endpoint on 127.0.0.1 with real RSA keys."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.conftest import LogCapture
from tests.support.clock import FakeClock, settle
from tests.support.idp import IdP
from tests.support.jwks import (
    HS256_SECRET,
    JWKSServer,
    SigningKey,
    leaked,
    mint,
    tamper,
)
from toolbridge_api.security import AuthError, TokenVerifier

Factory = Callable[..., TokenVerifier]


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


@pytest.fixture
def jwks(jwks_server: JWKSServer) -> Iterator[JWKSServer]:
    original = jwks_server.keys[-1:]
    jwks_server.reset(keys=original)
    yield jwks_server
    jwks_server.release()


@pytest.fixture(autouse=True)
def _no_leaks(logs: LogCapture, jwks: JWKSServer) -> Iterator[None]:
    yield
    found = leaked(logs.text(), [*jwks.issued, HS256_SECRET])
    assert not found, f"{len(found)} token(s) or secret(s) appeared in the logs"


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
        verifier = TokenVerifier(**(settings | options))
        made.append(verifier)
        return verifier

    yield factory
    for verifier in made:
        await verifier.aclose()


async def refused(verifier: TokenVerifier, token: str, status: int = 401) -> AuthError:
    """The refusal of ``token``; fails if accepted, if the status differs, or if the
    message repeats the token or its signature."""
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    error = info.value
    assert error.status == status, error.message
    assert not leaked(error.message, [token])
    assert not leaked(str(error), [token])
    return error


async def test_valid_token_gives_its_subject(jwks: JWKSServer, make_verifier: Factory) -> None:
    verifier = make_verifier()
    assert await verifier.verify(jwks.mint(sub="auth0|alice")) == "auth0|alice"
    assert await verifier.verify(jwks.mint(sub="m2m@clients")) == "m2m@clients"
    assert jwks.fetches == 1, "keys are cached between tokens"


async def test_audience_list_must_contain_the_api(jwks: JWKSServer, make_verifier: Factory) -> None:
    verifier = make_verifier()
    both = jwks.mint(audience=["https://other.example", jwks.audience])
    assert await verifier.verify(both) == "auth0|user-1"
    error = await refused(verifier, jwks.mint(audience=["https://other.example"]))
    assert "audience" in error.message


async def test_wrong_audience(jwks: JWKSServer, make_verifier: Factory) -> None:
    error = await refused(make_verifier(), jwks.mint(audience="https://other.example"))
    assert error.message == f"access token audience does not include {jwks.audience}"


async def test_wrong_or_missing_issuer(jwks: JWKSServer, make_verifier: Factory) -> None:
    verifier = make_verifier()
    error = await refused(verifier, jwks.mint(issuer="https://evil.example/"))
    assert error.message == f"access token issuer is not {jwks.issuer}"
    error = await refused(verifier, jwks.mint(issuer=None))
    assert error.message == "access token has no iss claim"


async def test_issuer_not_checked_when_not_configured(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    verifier = make_verifier(issuer=None)
    assert await verifier.verify(jwks.mint(issuer="https://anyone.example/")) == "auth0|user-1"


async def test_expired_token_refused_beyond_leeway(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    verifier = make_verifier(leeway_seconds=30)
    now = time.time()
    error = await refused(verifier, jwks.mint(now=now - 400, lifetime=300))
    assert error.message == "access token has expired"
    assert await verifier.verify(jwks.mint(now=now - 305, lifetime=300)) == "auth0|user-1"


async def test_not_yet_valid_token(jwks: JWKSServer, make_verifier: Factory) -> None:
    verifier = make_verifier(leeway_seconds=30)
    now = time.time()
    error = await refused(verifier, jwks.mint(nbf=int(now + 120)))
    assert "not valid yet" in error.message
    assert await verifier.verify(jwks.mint(nbf=int(now + 10))) == "auth0|user-1"


@pytest.mark.parametrize("missing", ["exp", "sub"])
async def test_required_claims(jwks: JWKSServer, make_verifier: Factory, missing: str) -> None:
    body = jwks.claims()
    del body[missing]
    token = jwks.track(mint(body, key=jwks.key))
    error = await refused(make_verifier(), token)
    assert error.message == f"access token has no {missing} claim"


@pytest.mark.parametrize("sub", [42, "", "   ", "bad\nsub", "x" * 256])
async def test_unusable_subject(jwks: JWKSServer, make_verifier: Factory, sub: object) -> None:
    token = jwks.track(mint(jwks.claims(sub=sub), key=jwks.key))
    error = await refused(make_verifier(), token)
    assert "sub" in error.message


@pytest.mark.parametrize("hs256", [False, True])
async def test_alg_none_always_refused(
    jwks: JWKSServer, make_verifier: Factory, hs256: bool
) -> None:
    secret = SecretStr(HS256_SECRET) if hs256 else None
    verifier = make_verifier(hs256_secret=secret)
    for alg in ("none", "None", "NONE"):
        error = await refused(verifier, jwks.mint(alg="none", headers={"alg": alg}))
        assert "is not accepted" in error.message


async def test_hs256_signed_with_the_public_key_is_refused(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    forged = jwks.mint(alg="HS256", key=jwks.key.public_pem)
    error = await refused(make_verifier(), forged)
    assert error.message == "access token algorithm HS256 is not accepted (allowed: RS256)"
    with_dev_secret = make_verifier(hs256_secret=SecretStr(HS256_SECRET))
    error = await refused(with_dev_secret, forged)
    assert error.message == "access token signature is invalid"


async def test_hs256_only_with_the_dev_secret(jwks: JWKSServer, make_verifier: Factory) -> None:
    token = jwks.mint(alg="HS256", key=HS256_SECRET, kid=None, sub="dev-user")
    await refused(make_verifier(), token)
    verifier = make_verifier(hs256_secret=SecretStr(HS256_SECRET))
    assert await verifier.verify(token) == "dev-user"
    assert await verifier.verify(jwks.mint()) == "auth0|user-1", "RS256 still accepted"
    other = jwks.mint(alg="HS256", key="another-secret-of-at-least-32-bytes!!", kid=None)
    assert (await refused(verifier, other)).message == "access token signature is invalid"


async def test_hs256_without_jwks_refuses_rs256(jwks: JWKSServer, make_verifier: Factory) -> None:
    verifier = make_verifier(jwks_url=None, hs256_secret=SecretStr(HS256_SECRET))
    error = await refused(verifier, jwks.mint())
    assert error.message == "access token algorithm RS256 is not accepted (allowed: HS256)"
    assert jwks.fetches == 0


def test_short_hs256_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes") as info:
        TokenVerifier(
            audience="a", issuer=None, jwks_url=None, hs256_secret=SecretStr("short-secret")
        )
    assert "short-secret" not in str(info.value)


def test_audience_is_required_when_tokens_can_be_verified() -> None:
    with pytest.raises(ValueError, match="audience"):
        TokenVerifier(audience="", issuer=None, jwks_url="http://127.0.0.1:9/jwks.json")


async def test_token_for_another_alg_is_not_echoed(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    token = jwks.mint(headers={"alg": "<script>" * 3})
    error = await refused(make_verifier(), token)
    assert error.message == "access token algorithm (invalid) is not accepted (allowed: RS256)"


async def test_bad_signature(jwks: JWKSServer, make_verifier: Factory) -> None:
    verifier = make_verifier()
    error = await refused(verifier, jwks.track(tamper(jwks.mint())))
    assert error.message == "access token signature is invalid"
    impostor = SigningKey.generate(kid=jwks.key.kid)
    error = await refused(verifier, jwks.mint(key=impostor))
    assert error.message == "access token signature is invalid"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "access token is not a well-formed JWT"),
        ("abc", "access token is not a well-formed JWT"),
        ("a.b.c", "access token is not a well-formed JWT"),
        ("e30.e30.", "access token has no alg header"),
        ("x" * 20_000, "access token is longer than 16384 characters"),
    ],
)
async def test_malformed_tokens(make_verifier: Factory, token: str, message: str) -> None:
    assert (await refused(make_verifier(), token)).message == message


async def test_unknown_kid_refetches_once_and_accepts_after_rotation(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    verifier = make_verifier(jwks_refetch_min_interval_seconds=30)
    old = jwks.mint()
    assert await verifier.verify(old) == "auth0|user-1"
    clock.advance(30)
    new_key = jwks.rotate()
    assert await verifier.verify(jwks.mint(key=new_key, sub="rotated")) == "rotated"
    assert jwks.fetches == 2
    assert await verifier.verify(old) == "auth0|user-1", "the old key is still published"
    assert await verifier.verify(jwks.mint(key=new_key)) == "auth0|user-1"
    assert jwks.fetches == 2


async def test_unknown_kid_flood_refetches_at_most_once_per_interval(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    verifier = make_verifier(jwks_refetch_min_interval_seconds=30)
    await verifier.verify(jwks.mint())
    stranger = SigningKey.generate()
    flood = [jwks.mint(key=stranger) for _ in range(3)]
    for step in (0.0, 10.0, 19.0):
        clock.advance(step)
        for token in flood * 10:
            error = await refused(verifier, token)
            assert error.message == "access token kid does not match any signing key of the issuer"
    assert jwks.fetches == 1, "no refetch inside the interval"
    clock.advance(1.0)
    for token in flood * 10:
        await refused(verifier, token)
    assert jwks.fetches == 2, "exactly one refetch once the interval has passed"


async def test_a_key_rotated_right_after_a_fetch_verifies_within_a_second(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    """The identity provider rotates just after the keys were read: the new kid is refused
    until the global pacing (1 s by default) allows the next fetch, then verifies."""
    verifier = make_verifier()
    assert await verifier.verify(jwks.mint()) == "auth0|user-1"
    new_key = jwks.rotate()
    clock.advance(0.2)
    rotated = jwks.mint(key=new_key, sub="rotated")
    error = await refused(verifier, rotated)
    assert error.message == "access token kid does not match any signing key of the issuer"
    assert jwks.fetches == 1
    clock.advance(0.8)
    assert await verifier.verify(rotated) == "rotated"
    assert jwks.fetches == 2


async def test_a_rotated_key_verifies_within_about_a_second_on_the_real_clock(
    jwks: JWKSServer,
) -> None:
    """The same on the real clock, with the defaults: a caller retrying a refused token
    gets through once the pacing allows one refetch (the deadline is functional only)."""
    verifier = TokenVerifier(audience=jwks.audience, issuer=jwks.issuer, jwks_url=jwks.jwks_url)
    try:
        await verifier.verify(jwks.mint())
        rotated = jwks.mint(key=jwks.rotate(), sub="rotated")
        statuses: list[int] = []
        async with asyncio.timeout(5):
            while True:
                try:
                    subject = await verifier.verify(rotated)
                except AuthError as exc:
                    statuses.append(exc.status)
                    await asyncio.sleep(0.05)
                    continue
                break
        assert subject == "rotated"
        assert set(statuses) <= {401}
        assert jwks.fetches == 2, "one refetch, however many refusals came first"
    finally:
        await verifier.aclose()


async def test_garbage_kids_cost_at_most_one_fetch_a_second(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    """A new random kid on every request, ten a second for ten seconds: the global pacing
    holds the identity provider to one JWKS request a second."""
    verifier = make_verifier()
    await verifier.verify(jwks.mint())
    stranger = SigningKey.generate()
    for n in range(100):
        clock.advance(0.1)
        await refused(verifier, jwks.mint(key=stranger, kid=f"garbage-{n}"))
    assert jwks.fetches <= 1 + 10


async def test_one_unknown_kid_is_refetched_for_at_most_every_five_seconds(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    """The same unknown kid over and over (a client with a token of another issuer) is
    paced per kid: one refetch per 5 s, although the global pacing would allow one a
    second."""
    verifier = make_verifier()
    await verifier.verify(jwks.mint())
    stranger = jwks.mint(key=SigningKey.generate("stranger"))
    for _ in range(10):
        clock.advance(1.0)
        await refused(verifier, stranger)
    assert jwks.fetches == 1 + 2, "at 1 s and at 6 s"


async def test_the_jwks_is_discovered_from_the_issuer_alone(idp: IdP) -> None:
    """With an issuer but no JWKS URL (and no HS256 secret) the keys are found through the
    issuer's metadata (jwks_uri), looked up once."""
    idp.set_metadata(idp.metadata() | {"jwks_uri": f"{idp.base_url}/.well-known/jwks.json"})
    verifier = TokenVerifier(audience=idp.audience, issuer=idp.issuer, jwks_url=None)
    assert verifier.algorithms == ("RS256",)
    try:
        token = idp.fetch_token("test-client", "test-secret")
        assert await verifier.verify(token) == "test-client@clients"
        assert await verifier.verify(idp.fetch_token("test-client", "test-secret"))
        assert verifier.jwks_url == f"{idp.base_url}/.well-known/jwks.json"
        assert idp.metadata_fetches == ["/.well-known/oauth-authorization-server"]
    finally:
        await verifier.aclose()


async def test_prefetch_reads_the_keys_before_the_first_request(idp: IdP) -> None:
    verifier = TokenVerifier(audience=idp.audience, issuer=idp.issuer, jwks_url=None)
    try:
        prefetch = verifier.prefetch()
        assert prefetch is not None
        await prefetch
        assert idp.metadata_fetches == ["/.well-known/oauth-authorization-server"]
        assert verifier.jwks_url == f"{idp.base_url}/.well-known/jwks.json"
        token = idp.fetch_token("test-client", "test-secret")
        assert await verifier.verify(token) == "test-client@clients"
        assert len(idp.metadata_fetches) == 1
    finally:
        await verifier.aclose()


async def test_a_failed_discovery_is_a_503_naming_the_setting(idp: IdP, logs: LogCapture) -> None:
    idp.set_metadata({})
    verifier = TokenVerifier(audience=idp.audience, issuer=idp.issuer, jwks_url=None)
    try:
        error = await refused(verifier, idp.fetch_token("test-client", "test-secret"), 503)
        assert "signing keys" in error.message
    finally:
        await verifier.aclose()
    assert any("TOOLBRIDGE_API_ISSUER" in line for line in logs.messages("ERROR"))


async def test_concurrent_unknown_kids_share_one_fetch(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    verifier = make_verifier(jwks_refetch_min_interval_seconds=0)
    await verifier.verify(jwks.mint())
    new_key = jwks.rotate()
    jwks.hold()
    tasks = [
        asyncio.create_task(verifier.verify(jwks.mint(key=new_key, sub=f"user-{n}")))
        for n in range(20)
    ]
    await settle(lambda: jwks.fetches == 2)
    jwks.release()
    assert await asyncio.gather(*tasks) == [f"user-{n}" for n in range(20)]
    assert jwks.fetches == 2


async def test_a_caller_giving_up_does_not_cancel_the_shared_fetch(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    verifier = make_verifier()
    jwks.hold()
    quitter = asyncio.create_task(verifier.verify(jwks.mint()))
    stayer = asyncio.create_task(verifier.verify(jwks.mint(sub="stayer")))
    await settle(lambda: jwks.fetches == 1)
    quitter.cancel()
    jwks.release()
    assert await stayer == "stayer"
    assert quitter.cancelled()
    assert jwks.fetches == 1


async def test_cold_start_concurrent_callers_share_one_fetch(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    verifier = make_verifier(jwks_refetch_min_interval_seconds=0)
    jwks.hold()
    tasks = [asyncio.create_task(verifier.verify(jwks.mint())) for _ in range(10)]
    await settle(lambda: jwks.fetches == 1)
    jwks.release()
    assert len(await asyncio.gather(*tasks)) == 10
    assert jwks.fetches == 1


async def test_token_without_kid(jwks: JWKSServer, make_verifier: Factory) -> None:
    assert await make_verifier().verify(jwks.mint(kid=None)) == "auth0|user-1"
    jwks.rotate()
    error = await refused(make_verifier(), jwks.mint(kid=None))
    assert error.message == (
        "access token has no kid header and the issuer has 2 signing keys "
        "(a kid is needed unless there is exactly one)"
    )


async def test_published_key_without_kid(jwks: JWKSServer, make_verifier: Factory) -> None:
    key = jwks.key
    jwks.publish([key], document={"keys": [key.jwk(with_kid=False)]})
    verifier = make_verifier(jwks_refetch_min_interval_seconds=0)
    assert await verifier.verify(jwks.mint(kid=None)) == "auth0|user-1"
    assert "kid does not match" in (await refused(verifier, jwks.mint())).message


async def test_aclose_stops_a_fetch_in_flight(jwks: JWKSServer, make_verifier: Factory) -> None:
    verifier = make_verifier()
    jwks.hold()
    waiting = asyncio.create_task(verifier.verify(jwks.mint()))
    await settle(lambda: jwks.fetches == 1)
    await verifier.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_published_rsa_key_under_2048_bits_verifies_nothing(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    weak = SigningKey.generate("weak", bits=1024)
    jwks.publish([weak, *jwks.keys])
    error = await refused(make_verifier(), jwks.mint(key=weak))
    assert error.message == "access token is invalid (InvalidKeyError)"


async def test_keys_for_other_algorithms_or_uses_are_ignored(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    key = jwks.key
    encryption = {**key.jwk(), "use": "enc"}
    jwks.publish([key], document={"keys": [encryption, key.jwk(alg="RS512")]})
    error = await refused(make_verifier(), jwks.mint())
    assert "kid does not match" in error.message


async def test_jwks_down_on_cold_start_is_a_clear_503(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    jwks.fail(503)
    verifier = make_verifier(jwks_refetch_min_interval_seconds=30)
    error = await refused(verifier, jwks.mint(), status=503)
    assert "JWKS fetch failed" in error.message
    assert error.retry_after == 30
    clock.advance(10)
    error = await refused(verifier, jwks.mint(), status=503)
    assert error.retry_after == 20
    assert jwks.fetches == 1, "a down IdP is not retried inside the interval"
    jwks.fail(None)
    clock.advance(20)
    assert await verifier.verify(jwks.mint()) == "auth0|user-1"


async def test_a_failed_start_up_prefetch_does_not_hold_back_the_first_request(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    jwks.fail(503)
    verifier = make_verifier(jwks_refetch_min_interval_seconds=30)
    prefetch = verifier.prefetch()
    assert prefetch is not None
    await prefetch
    assert jwks.fetches == 1
    jwks.fail(None)
    assert await verifier.verify(jwks.mint()) == "auth0|user-1"
    assert jwks.fetches == 2, "the first request fetched at once, not after the pacing"


async def test_a_successful_prefetch_serves_the_first_request_and_paces_refetches(
    jwks: JWKSServer, make_verifier: Factory
) -> None:
    verifier = make_verifier(jwks_refetch_min_interval_seconds=30)
    prefetch = verifier.prefetch()
    assert prefetch is not None
    await prefetch
    assert await verifier.verify(jwks.mint()) == "auth0|user-1"
    await refused(verifier, jwks.mint(key=SigningKey.generate()))
    assert jwks.fetches == 1, "an unknown kid right after the prefetch waits for the pacing"


async def test_a_withdrawn_key_stops_verifying_once_the_keys_are_re_read(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    verifier = make_verifier(jwks_max_age_seconds=300)
    old = jwks.mint()
    assert await verifier.verify(old) == "auth0|user-1"
    replacement = SigningKey.generate()
    jwks.publish(jwks.keys, document={"keys": [replacement.jwk()]})
    clock.advance(299)
    assert await verifier.verify(old) == "auth0|user-1"
    assert jwks.fetches == 1, "fresh keys are not re-read"
    clock.advance(1)
    assert await verifier.verify(old) == "auth0|user-1", "served while the re-read runs"
    await settle(lambda: jwks.fetches == 2)

    async def accepted(token: str) -> bool:
        try:
            await verifier.verify(token)
        except AuthError:
            return False
        return True

    async with asyncio.timeout(5):
        while await accepted(old):  # noqa: ASYNC110 - until the background re-read lands
            await asyncio.sleep(0.005)
    assert "kid does not match" in (await refused(verifier, old)).message
    assert await verifier.verify(jwks.mint(key=replacement)) == "auth0|user-1"
    assert jwks.fetches == 2


async def test_cached_keys_keep_working_while_jwks_is_down(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock, logs: LogCapture
) -> None:
    verifier = make_verifier(jwks_refetch_min_interval_seconds=30)
    assert await verifier.verify(jwks.mint()) == "auth0|user-1"
    jwks.fail(500)
    clock.advance(60)
    stranger = jwks.mint(key=SigningKey.generate())
    error = await refused(verifier, stranger, status=503)
    assert "unavailable" in error.message
    assert any("JWKS fetch" in line and "failed" in line for line in logs.messages("WARNING"))
    assert await verifier.verify(jwks.mint(sub="still-served")) == "still-served"
    jwks.fail(None)
    clock.advance(30)
    error = await refused(verifier, stranger)
    assert "kid does not match" in error.message, "healed: an unknown kid is the token's fault"


async def test_broken_key_set_keeps_the_cached_keys(
    jwks: JWKSServer, make_verifier: Factory, clock: FakeClock
) -> None:
    verifier = make_verifier(jwks_refetch_min_interval_seconds=0)
    await verifier.verify(jwks.mint())
    broken: list[Any] = [
        {"keys": []},
        {"keys": "nope"},
        {"keys": [{"kty": "RSA", "n": "x"}]},
        {"keys": [{"kty": "RSA", "alg": ["RS256"]}]},
        ["not", "an", "object"],
    ]
    for document in broken:
        jwks.publish(jwks.keys, document=document)
        await refused(verifier, jwks.mint(key=SigningKey.generate()), status=503)
        assert await verifier.verify(jwks.mint()) == "auth0|user-1"


async def test_unreachable_jwks_url(make_verifier: Factory, jwks: JWKSServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = make_verifier(jwks_url=f"http://127.0.0.1:{port}/.well-known/jwks.json")
    error = await refused(verifier, jwks.mint(), status=503)
    assert "signing keys of the identity provider are unavailable" in error.message


async def test_real_issuer_tokens_verify(idp: IdP) -> None:
    """Tokens from the project's fake Auth0 (client credentials) pass, as the MCP side
    would send them."""
    verifier = TokenVerifier(
        audience=idp.audience,
        issuer=f"{idp.base_url}/",
        jwks_url=f"{idp.base_url}/.well-known/jwks.json",
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(
            idp.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": "test-client",
                "client_secret": "test-secret",
                "audience": idp.audience,
            },
        )
    token = response.json()["access_token"]
    try:
        assert await verifier.verify(token) == "test-client@clients"
    finally:
        await verifier.aclose()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_CLAIM_NAMES = st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "jti", "azp"])


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=200))
def test_arbitrary_bearer_text_is_refused_cleanly(token: str) -> None:
    verifier = TokenVerifier(
        audience="api", issuer=None, jwks_url=None, hs256_secret=SecretStr(HS256_SECRET)
    )
    with pytest.raises(AuthError) as info:
        asyncio.run(verifier.verify(token))
    assert info.value.status == 401


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(_CLAIM_NAMES, _JSON, max_size=8),
    header=st.dictionaries(st.sampled_from(["kid", "typ", "crit", "b64"]), _JSON, max_size=2),
)
def test_validly_signed_tokens_with_arbitrary_claims_never_crash(
    body: dict[str, Any], header: dict[str, Any]
) -> None:
    """Signature checks pass, so every claim check sees hostile types; each answer is either
    a subject or an AuthError, never another exception."""
    verifier = TokenVerifier(
        audience="api", issuer="iss", jwks_url=None, hs256_secret=SecretStr(HS256_SECRET)
    )
    token = mint(body, key=HS256_SECRET, alg="HS256", kid=None, headers=header)
    result = asyncio.run(_outcome(verifier, token))
    if isinstance(result, AuthError):
        assert result.status == 401
        assert not leaked(result.message, [token])
    else:
        assert body.get("iss") == "iss"


async def _outcome(verifier: TokenVerifier, token: str) -> str | AuthError:
    try:
        return await verifier.verify(token)
    except AuthError as error:
        return error

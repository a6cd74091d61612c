"""Authenticator end to end: bearer tokens from a real JWKS server, tenant headers, the
debug-sub mode, and the key of the per-principal rate limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.conftest import LogCapture
from tests.support.jwks import HS256_SECRET, JWKSServer, leaked
from toolbridge_api.security import (
    Authenticator,
    AuthError,
    Principal,
    TenantVerifier,
    TokenVerifier,
    tenant_signature,
)

TENANT_SECRET = "tenant-secret-for-authenticator"
Factory = Callable[..., Authenticator]


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


@pytest.fixture
def jwks(jwks_server: JWKSServer) -> Iterator[JWKSServer]:
    jwks_server.reset()
    yield jwks_server
    jwks_server.release()


@pytest.fixture(autouse=True)
def _no_leaks(logs: LogCapture, jwks: JWKSServer) -> Iterator[None]:
    yield
    found = leaked(logs.text(), [*jwks.issued, HS256_SECRET, TENANT_SECRET])
    assert not found, f"{len(found)} token(s) or secret(s) appeared in the logs"


@pytest.fixture
async def make_authenticator(jwks: JWKSServer) -> AsyncIterator[Factory]:
    made: list[Authenticator] = []

    def factory(*, tenants: bool = False, **options: Any) -> Authenticator:
        tokens = TokenVerifier(audience=jwks.audience, issuer=jwks.issuer, jwks_url=jwks.jwks_url)
        authenticator = Authenticator(
            tokens=tokens,
            tenants=TenantVerifier(SecretStr(TENANT_SECRET)) if tenants else None,
            **options,
        )
        made.append(authenticator)
        return authenticator

    yield factory
    for authenticator in made:
        await authenticator.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tenant_headers(tenant: str = "acme", *, secret: str = TENANT_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000))
    return {
        "X-TB-Tenant-ID": tenant,
        "X-TB-Timestamp": timestamp,
        "X-TB-Signature": tenant_signature(secret, tenant, timestamp),
    }


async def refused(authenticator: Authenticator, headers: dict[str, str], status: int) -> AuthError:
    with pytest.raises(AuthError) as info:
        await authenticator.authenticate(headers)
    error = info.value
    assert error.status == status, error.message
    assert not leaked(error.message, [*headers.values(), TENANT_SECRET])
    return error


async def test_token_and_signed_tenant_give_the_principal(
    jwks: JWKSServer, make_authenticator: Factory
) -> None:
    authenticator = make_authenticator(tenants=True)
    headers = bearer(jwks.mint(sub="auth0|alice")) | tenant_headers("acme")
    assert await authenticator.authenticate(headers) == Principal("acme", "auth0|alice")


async def test_starlette_headers_and_lowercase_dicts(
    jwks: JWKSServer, make_authenticator: Factory
) -> None:
    authenticator = make_authenticator(tenants=True)
    headers = {k.lower(): v for k, v in (bearer(jwks.mint()) | tenant_headers()).items()}
    assert (await authenticator.authenticate(headers)).tenant_id == "acme"
    assert (await authenticator.authenticate(Headers(headers=headers))).tenant_id == "acme"


async def test_missing_authorization(make_authenticator: Factory) -> None:
    error = await refused(make_authenticator(), {}, 401)
    assert error.message == (
        "missing Authorization header: send Authorization: Bearer <access token>"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Basic dXNlcjpwYXNz", "Authorization must use the Bearer scheme"),
        ("Token abc.def.ghi", "Authorization must use the Bearer scheme"),
        ("Bearer", "Authorization: Bearer must be followed by exactly one token"),
        ("Bearer    ", "Authorization: Bearer must be followed by exactly one token"),
        ("Bearer a.b.c d.e.f", "Authorization: Bearer must be followed by exactly one token"),
    ],
)
async def test_malformed_authorization(
    make_authenticator: Factory, value: str, message: str
) -> None:
    error = await refused(make_authenticator(), {"Authorization": value}, 401)
    assert error.message.startswith(message)


async def test_scheme_is_case_insensitive(jwks: JWKSServer, make_authenticator: Factory) -> None:
    principal = await make_authenticator().authenticate({"authorization": f"bearer {jwks.mint()}"})
    assert principal.user_id == "auth0|user-1"


async def test_rejected_token_reaches_the_caller(
    jwks: JWKSServer, make_authenticator: Factory
) -> None:
    error = await refused(make_authenticator(), bearer(jwks.mint(alg="none")), 401)
    assert error.message == "access token algorithm none is not accepted (allowed: RS256)"


async def test_tenant_defaults_without_a_tenant_secret(
    jwks: JWKSServer, make_authenticator: Factory
) -> None:
    authenticator = make_authenticator()
    assert (await authenticator.authenticate(bearer(jwks.mint()))).tenant_id == "default"
    claimed = bearer(jwks.mint()) | {"X-TB-Tenant-ID": "team-7"}
    assert (await authenticator.authenticate(claimed)).tenant_id == "team-7"
    bad = bearer(jwks.mint()) | {"X-TB-Tenant-ID": "x" * 200}
    error = await refused(authenticator, bad, 401)
    assert error.message.startswith("X-TB-Tenant-ID must be")


async def test_tenant_headers_are_required_with_a_secret(
    jwks: JWKSServer, make_authenticator: Factory
) -> None:
    authenticator = make_authenticator(tenants=True)
    error = await refused(authenticator, bearer(jwks.mint()), 401)
    assert error.message.startswith("missing X-TB-Tenant-ID header")
    forged = bearer(jwks.mint()) | tenant_headers(secret="guessed-secret")
    error = await refused(authenticator, forged, 401)
    assert error.message.startswith("X-TB-Signature does not match")


async def test_tenant_is_checked_before_the_identity_provider_is_asked(
    jwks: JWKSServer, make_authenticator: Factory
) -> None:
    authenticator = make_authenticator(tenants=True)
    await refused(authenticator, bearer(jwks.mint()) | tenant_headers(secret="nope"), 401)
    assert jwks.fetches == 0


async def test_debug_sub_refused_when_off(make_authenticator: Factory) -> None:
    error = await refused(make_authenticator(), {"X-Debug-Sub": "alice"}, 401)
    assert error.message.startswith("X-Debug-Sub is refused: debug mode is off")


async def test_debug_sub_when_on_warns_loudly(
    jwks: JWKSServer, make_authenticator: Factory, logs: LogCapture
) -> None:
    authenticator = make_authenticator(debug_sub_enabled=True)
    warnings = logs.messages("WARNING")
    assert any("DEBUG MODE" in line and "ANY user" in line for line in warnings)
    assert await authenticator.authenticate({"x-debug-sub": "alice"}) == Principal(
        "default", "alice"
    )
    assert await authenticator.authenticate({"X-Debug-Sub": "alice"}) == Principal(
        "default", "alice"
    )
    used = [line for line in logs.messages("WARNING") if "authenticated as 'alice'" in line]
    assert len(used) == 1, "one warning per debug user, not one per request"
    assert any("alice" in line for line in logs.messages("DEBUG"))


async def test_debug_sub_still_needs_tenant_headers(make_authenticator: Factory) -> None:
    authenticator = make_authenticator(tenants=True, debug_sub_enabled=True)
    error = await refused(authenticator, {"X-Debug-Sub": "alice"}, 401)
    assert error.message.startswith("missing X-TB-Tenant-ID header")
    headers = {"X-Debug-Sub": "alice"} | tenant_headers("acme")
    assert await authenticator.authenticate(headers) == Principal("acme", "alice")


async def test_a_token_wins_over_debug_sub(jwks: JWKSServer, make_authenticator: Factory) -> None:
    authenticator = make_authenticator(debug_sub_enabled=True)
    headers = bearer(jwks.mint(sub="auth0|real")) | {"X-Debug-Sub": "someone-else"}
    assert (await authenticator.authenticate(headers)).user_id == "auth0|real"
    await refused(authenticator, bearer(jwks.mint(alg="none")) | {"X-Debug-Sub": "x"}, 401)


@pytest.mark.parametrize("value", ["", "   ", "bad\x01user", "x" * 300])
async def test_unusable_debug_sub(make_authenticator: Factory, value: str) -> None:
    authenticator = make_authenticator(debug_sub_enabled=True)
    error = await refused(authenticator, {"X-Debug-Sub": value}, 401)
    assert error.message.startswith("X-Debug-Sub must be")


async def test_rate_key_is_the_user_or_the_signed_tenant_and_user(
    jwks: JWKSServer, make_authenticator: Factory
) -> None:
    """The rate limit (per route group, in the routes) keys buckets with ``rate_key``: an
    unsigned tenant id is the caller's free choice and must not buy a fresh budget."""
    unsigned = make_authenticator()
    alice = bearer(jwks.mint(sub="alice"))
    keys = {
        unsigned.rate_key(await unsigned.authenticate(alice | {"X-TB-Tenant-ID": f"t-{n}"}))
        for n in range(3)
    }
    assert keys == {"alice"}
    signed = make_authenticator(tenants=True)
    acme = await signed.authenticate(alice | tenant_headers("acme"))
    globex = await signed.authenticate(alice | tenant_headers("globex"))
    assert signed.rate_key(acme) == "acme\x00alice"
    assert signed.rate_key(globex) == "globex\x00alice"


async def test_jwks_outage_is_a_503(jwks: JWKSServer, make_authenticator: Factory) -> None:
    jwks.fail(503)
    error = await refused(make_authenticator(), bearer(jwks.mint()), 503)
    assert error.retry_after is not None


async def test_no_token_or_secret_in_any_message_or_log(
    jwks: JWKSServer, make_authenticator: Factory, logs: LogCapture
) -> None:
    authenticator = make_authenticator(tenants=True, debug_sub_enabled=True)
    tenant = tenant_headers()
    attempts = [
        bearer(jwks.mint(alg="none")) | tenant,
        bearer(jwks.mint(alg="HS256", key=jwks.key.public_pem)) | tenant,
        bearer(jwks.mint(exp=1)) | tenant,
        bearer(jwks.mint(audience="nope")) | tenant,
        bearer(jwks.mint(kid="unknown")) | tenant,
        bearer(jwks.mint(alg="HS256", key=HS256_SECRET, kid=None)) | tenant,
        {"Authorization": f"Basic {jwks.mint()}"} | tenant,
        bearer(jwks.mint()) | tenant_headers(secret="wrong"),
    ]
    messages = []
    for headers in attempts:
        with pytest.raises(AuthError) as info:
            await authenticator.authenticate(headers)
        messages.append(info.value.message)
    secrets = [*jwks.issued, HS256_SECRET, TENANT_SECRET]
    assert not leaked("\n".join(messages), secrets)
    assert not leaked(logs.text(), secrets)


_HEADER_NAMES = st.sampled_from(
    [
        "Authorization",
        "authorization",
        "X-Debug-Sub",
        "X-TB-Tenant-ID",
        "X-TB-Timestamp",
        "X-TB-Signature",
        "x-tb-signature",
        "Other",
    ]
)
_HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.builds(lambda rest: f"Bearer {rest}", st.text(max_size=40)),
    st.builds(str, st.integers()),
)


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=6))
def test_arbitrary_headers_are_refused_cleanly(headers: dict[str, str]) -> None:
    async def attempt() -> Principal | AuthError:
        authenticator = Authenticator(
            tokens=TokenVerifier(
                audience="api", issuer=None, jwks_url=None, hs256_secret=SecretStr(HS256_SECRET)
            ),
            tenants=TenantVerifier(SecretStr(TENANT_SECRET)),
            debug_sub_enabled=True,
        )
        try:
            return await authenticator.authenticate(headers)
        except AuthError as error:
            return error
        finally:
            await authenticator.aclose()

    result = asyncio.run(attempt())
    assert isinstance(result, AuthError), "random headers cannot carry a tenant signature"
    assert result.status == 401
    assert TENANT_SECRET not in result.message

"""TenantVerifier and tenant_signature: HMAC tenant headers with a timestamp window."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from tests.conftest import LogCapture
from tests.support.clock import FakeClock
from toolbridge_api.security import AuthError, TenantVerifier, tenant_signature

SECRET = "tenant-secret"
NOW = 1_700_000_000.0


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(start=NOW)


@pytest.fixture
def verifier(wall: FakeClock) -> TenantVerifier:
    return TenantVerifier(SecretStr(SECRET), max_skew_seconds=300, clock=wall)


@pytest.fixture(autouse=True)
def _secret_never_logged(logs: LogCapture) -> Iterator[None]:
    yield
    assert SECRET not in logs.text()


def signed(
    tenant: str = "acme", *, at: float = NOW, secret: str = SECRET, sign_as: str | None = None
) -> dict[str, str]:
    timestamp = str(int(at * 1000))
    return {
        "X-TB-Tenant-ID": tenant,
        "X-TB-Timestamp": timestamp,
        "X-TB-Signature": tenant_signature(secret, sign_as or tenant, timestamp),
    }


def refused(verifier: TenantVerifier, headers: dict[str, str]) -> str:
    """The message of a refusal, which is always a 401 (as the original answers)."""
    with pytest.raises(AuthError) as info:
        verifier.verify(headers)
    assert info.value.status == 401, info.value.message
    assert SECRET not in info.value.message
    signature = headers.get("X-TB-Signature", "")
    assert len(signature) < 16 or signature not in info.value.message
    return info.value.message


def test_signature_is_hex_hmac_sha256_of_tenant_and_timestamp() -> None:
    # printf 'acme:1700000000000' | openssl dgst -sha256 -hmac 'tenant-secret'
    expected = "f05ea7e70603dfa33b6f9fac34f956a71377e90b01322c151ace9736bc8c3360"
    assert tenant_signature(SECRET, "acme", "1700000000000") == expected


def test_valid_headers_give_the_tenant(verifier: TenantVerifier) -> None:
    assert verifier.verify(signed("acme")) == "acme"
    assert verifier.verify(signed("tenant-b", at=NOW - 299)) == "tenant-b"
    assert verifier.verify(signed("tenant-c", at=NOW + 299)) == "tenant-c"


def test_header_names_in_any_case(verifier: TenantVerifier) -> None:
    lower = {name.lower(): value for name, value in signed().items()}
    assert verifier.verify(lower) == "acme"
    assert verifier.verify(Headers(headers=lower)) == "acme"
    upper = {name.upper(): value for name, value in signed().items()}
    assert verifier.verify(upper) == "acme"


def test_uppercase_hex_signature_is_accepted(verifier: TenantVerifier) -> None:
    headers = signed()
    headers["X-TB-Signature"] = headers["X-TB-Signature"].upper()
    assert verifier.verify(headers) == "acme"


def test_stale_timestamp(verifier: TenantVerifier) -> None:
    message = refused(verifier, signed(at=NOW - 301))
    assert message.startswith("X-TB-Timestamp is too old by 301 s (allowed: 300 s)")


def test_future_timestamp(verifier: TenantVerifier) -> None:
    message = refused(verifier, signed(at=NOW + 301))
    assert message.startswith("X-TB-Timestamp is in the future by 301 s")


def test_window_follows_the_clock(verifier: TenantVerifier, wall: FakeClock) -> None:
    headers = signed()
    assert verifier.verify(headers) == "acme"
    wall.advance(300)
    assert verifier.verify(headers) == "acme"
    wall.advance(1)
    refused(verifier, headers)


def test_forged_signature_is_401_like_every_tenant_failure(verifier: TenantVerifier) -> None:
    message = refused(verifier, signed(secret="wrong-secret"))
    assert message == "X-TB-Signature does not match: check the tenant secret and tenant id"


def test_signature_of_another_tenant_is_refused(verifier: TenantVerifier) -> None:
    refused(verifier, signed("victim", sign_as="attacker"))


def test_signature_of_another_timestamp_is_refused(verifier: TenantVerifier) -> None:
    headers = signed()
    headers["X-TB-Timestamp"] = str(int(NOW * 1000) + 1)
    refused(verifier, headers)


def test_the_timestamp_is_signed_as_sent(verifier: TenantVerifier) -> None:
    """As the original checks it: the signed message is the header's text, so a signature
    of "01700000000000" is not one of "1700000000000"."""
    stamp = str(int(NOW * 1000))
    headers = {
        "X-TB-Tenant-ID": "acme",
        "X-TB-Timestamp": "0" + stamp,
        "X-TB-Signature": tenant_signature(SECRET, "acme", "0" + stamp),
    }
    assert verifier.verify(headers) == "acme"
    headers["X-TB-Signature"] = tenant_signature(SECRET, "acme", stamp)
    refused(verifier, headers)


@pytest.mark.parametrize("missing", ["X-TB-Tenant-ID", "X-TB-Timestamp", "X-TB-Signature"])
def test_missing_header_is_named(verifier: TenantVerifier, missing: str) -> None:
    headers = signed()
    del headers[missing]
    assert refused(verifier, headers).startswith(f"missing {missing} header")
    headers[missing] = "  "
    assert refused(verifier, headers).startswith(f"missing {missing} header")


@pytest.mark.parametrize("timestamp", ["abc", "1.7e12", "-1700000000000", "1700000000000.5"])
def test_non_numeric_timestamp(verifier: TenantVerifier, timestamp: str) -> None:
    headers = signed()
    headers["X-TB-Timestamp"] = timestamp
    message = refused(verifier, headers)
    assert message == "X-TB-Timestamp must be Unix time in milliseconds (digits only)"


def test_timestamp_in_seconds_is_explained_as_too_old(verifier: TenantVerifier) -> None:
    headers = signed()
    headers["X-TB-Timestamp"] = str(int(NOW))
    assert "too old" in refused(verifier, headers)


@pytest.mark.parametrize("signature", ["xyz", "ab" * 31, "ab" * 33, "zz" * 32])
def test_malformed_signature(verifier: TenantVerifier, signature: str) -> None:
    headers = signed()
    headers["X-TB-Signature"] = signature
    assert refused(verifier, headers) == "X-TB-Signature must be 64 hex characters (HMAC-SHA256)"


@pytest.mark.parametrize("tenant", ["has space", "x" * 129, "tab\there", "é"])
def test_unusable_tenant_id(verifier: TenantVerifier, tenant: str) -> None:
    message = refused(verifier, signed(tenant))
    assert message.startswith("X-TB-Tenant-ID must be 1-128 printable ASCII")


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        TenantVerifier(SecretStr(""))
    with pytest.raises(ValueError, match="max_skew_seconds"):
        TenantVerifier(SecretStr(SECRET), max_skew_seconds=0)


def test_default_clock_is_the_wall_clock() -> None:
    verifier = TenantVerifier(SecretStr(SECRET))
    assert verifier.verify(signed(at=time.time())) == "acme"
    refused(verifier, signed(at=time.time() - 3600))

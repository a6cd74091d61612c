"""The signing key on disk: created once (safely under concurrency), reused across restarts
with the same kid, and never overwritten when it cannot be read."""

from __future__ import annotations

import errno
import stat
import threading
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.dev_issuer import RunningIssuer, verify
from toolbridge_dev.issuer.keys import (
    SigningKeyError,
    jwk_thumbprint,
    key_path,
    load_or_create_signing_key,
)

RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
    "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
    "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
    "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_kid_is_the_rfc7638_thumbprint() -> None:
    """The worked example of RFC 7638 §3.1."""
    n = int.from_bytes(jwt.utils.base64url_decode(RFC7638_N), "big")
    public_key = rsa.RSAPublicNumbers(e=65537, n=n).public_key()
    assert jwk_thumbprint(public_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_key_file_is_private_pkcs8(tmp_path: Path) -> None:
    state_dir = tmp_path / "state" / "issuer"
    key = load_or_create_signing_key(state_dir)
    path = key_path(state_dir)
    assert path == state_dir / "signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert [p.name for p in state_dir.iterdir()] == ["signing-key.pem"]
    assert load_or_create_signing_key(state_dir).kid == key.kid


def test_restart_keeps_the_key_and_old_tokens_verify(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with RunningIssuer(state_dir) as first:
        assert first.key is not None
        kid, old_issuer = first.key.kid, first.issuer_url
        token = first.fetch()
    with RunningIssuer(state_dir) as second:
        (key,) = httpx.get(second.jwks_url).json()["keys"]
        assert key["kid"] == kid
        claims = verify(token, second.jwks_url, issuer=old_issuer)
    assert claims["sub"] == "test-client@clients"


def test_concurrent_first_starts_share_one_key(tmp_path: Path) -> None:
    """Every thread finds no key, generates its own and races to publish it; one wins and
    all of them end up with the winner's."""
    state_dir = tmp_path / "state"
    start = threading.Barrier(4)
    kids: list[str] = []

    def first_start() -> None:
        start.wait()
        kids.append(load_or_create_signing_key(state_dir).kid)

    threads = [threading.Thread(target=first_start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(kids) == 4
    assert len(set(kids)) == 1
    assert [p.name for p in state_dir.iterdir()] == ["signing-key.pem"]
    assert load_or_create_signing_key(state_dir).kid == kids[0]


def _ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
    ids=["empty", "garbage", "broken PEM"],
)
def test_corrupt_key_file_is_an_error_naming_it_and_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    path = key_path(tmp_path)
    path.write_bytes(content)
    with pytest.raises(SigningKeyError) as caught:
        load_or_create_signing_key(tmp_path)
    assert str(path) in str(caught.value)
    assert "not an unencrypted RSA private key" in str(caught.value)
    assert path.read_bytes() == content


def test_a_key_of_another_type_is_refused(tmp_path: Path) -> None:
    pem = _ec_key_pem()
    key_path(tmp_path).write_bytes(pem)
    with pytest.raises(SigningKeyError, match="not an unencrypted RSA private key"):
        load_or_create_signing_key(tmp_path)
    assert key_path(tmp_path).read_bytes() == pem


def test_state_dir_that_is_a_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(SigningKeyError, match=r"cannot create the signing key .*signing-key\.pem"):
        load_or_create_signing_key(blocker)


def test_a_state_dir_that_cannot_be_searched_is_an_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of another user (e.g. made by a run with sudo): stat fails with EACCES, which
    root, running these tests, never sees; injected."""

    def denied(self: Path, **kwargs: object) -> bool:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", denied)
    with pytest.raises(
        SigningKeyError, match=r"cannot create the signing key .*: Permission denied"
    ):
        load_or_create_signing_key(tmp_path / "theirs")

"""Refresh tokens rotate: every refresh answers a new one and retires the old; a retired one
presented again revokes the whole family (every token of that sign-in)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from tests.conftest import LogCapture
from tests.dev_issuer.flow import code_for, error, redeem, refresh, register
from tests.support.dev_issuer import OTHER_AUDIENCE, RunningIssuer, issuer_messages


@pytest.fixture(scope="module")
def client_id(issuer: RunningIssuer) -> str:
    client: str = register(issuer)["client_id"]
    return client


def _signed_in(issuer: RunningIssuer, client_id: str, **extra: str) -> dict[str, str]:
    code, verifier = code_for(issuer, client_id, **extra)
    response = redeem(issuer, client_id, code, verifier)
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def test_refresh_rotates_and_keeps_user_audience_and_scope(
    issuer: RunningIssuer, client_id: str, logs: LogCapture
) -> None:
    first = _signed_in(
        issuer, client_id, user="bob", resource=OTHER_AUDIENCE, scope="offline_access"
    )
    response = refresh(issuer, client_id, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == "offline_access"
    claims = jwt.decode(second["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["aud"], claims["client_id"]) == ("bob", OTHER_AUDIENCE, client_id)
    third = refresh(issuer, client_id, second["refresh_token"])
    assert third.status_code == 200
    assert (
        f"Issued a token for user bob to client {client_id} for {OTHER_AUDIENCE}, valid 3600 s "
        "(refresh, with a refresh token)"
    ) in issuer_messages(logs, "INFO")


def test_reusing_a_rotated_token_revokes_the_family(
    issuer: RunningIssuer, client_id: str, logs: LogCapture
) -> None:
    first = _signed_in(issuer, client_id)
    second = refresh(issuer, client_id, first["refresh_token"]).json()
    assert error(refresh(issuer, client_id, first["refresh_token"])) == (
        400,
        "invalid_grant",
        "Refresh token was already used; every refresh token of this sign-in is now revoked",
    )
    assert error(refresh(issuer, client_id, second["refresh_token"])) == (
        400,
        "invalid_grant",
        "Refresh token was revoked",
    )
    assert (
        f"Refused a refresh token that was already rotated, from client {client_id}; revoked "
        "its token family"
    ) in issuer_messages(logs, "WARNING")
    other = _signed_in(issuer, client_id)  # another sign-in is another family
    assert refresh(issuer, client_id, other["refresh_token"]).status_code == 200


def test_a_refresh_token_belongs_to_its_client(issuer: RunningIssuer, client_id: str) -> None:
    tokens = _signed_in(issuer, client_id)
    thief = register(issuer)["client_id"]
    assert error(refresh(issuer, thief, tokens["refresh_token"])) == (
        400,
        "invalid_grant",
        "Refresh token was issued to another client",
    )
    assert refresh(issuer, client_id, tokens["refresh_token"]).status_code == 200  # not spent


def test_scope_may_narrow_but_not_widen(issuer: RunningIssuer, client_id: str) -> None:
    narrow = _signed_in(issuer, client_id)  # no scope granted
    assert error(refresh(issuer, client_id, narrow["refresh_token"], scope="offline_access")) == (
        400,
        "invalid_scope",
        "scope offline_access was not granted to this refresh token",
    )
    wide = _signed_in(issuer, client_id, scope="offline_access")
    answer = refresh(issuer, client_id, wide["refresh_token"], scope="offline_access")
    assert answer.json()["scope"] == "offline_access"


def test_resource_must_stay_the_same(issuer: RunningIssuer, client_id: str) -> None:
    tokens = _signed_in(issuer, client_id, resource=OTHER_AUDIENCE)
    assert error(
        refresh(issuer, client_id, tokens["refresh_token"], resource="https://api.toolbridge.local")
    ) == (
        400,
        "invalid_target",
        f"resource https://api.toolbridge.local is not the one authorized ({OTHER_AUDIENCE})",
    )
    assert (
        refresh(issuer, client_id, tokens["refresh_token"], resource=OTHER_AUDIENCE).status_code
        == 200
    )


def test_unknown_and_missing_refresh_tokens(issuer: RunningIssuer, client_id: str) -> None:
    assert error(refresh(issuer, client_id, "not-a-token")) == (
        400,
        "invalid_grant",
        "Refresh token is invalid or expired",
    )
    assert error(refresh(issuer, client_id, "")) == (
        400,
        "invalid_request",
        "Missing required parameter: refresh_token",
    )


def test_a_client_without_the_refresh_grant_gets_none(issuer: RunningIssuer) -> None:
    client = register(issuer, grant_types=["authorization_code"])["client_id"]
    tokens = _signed_in(issuer, client)
    assert "refresh_token" not in tokens


def test_expired_refresh_token(tmp_path: Path) -> None:
    with RunningIssuer(tmp_path / "state", refresh_token_lifetime_seconds=1) as running:
        client = register(running)["client_id"]
        tokens = _signed_in(running, client)
        time.sleep(1.1)
        assert error(refresh(running, client, tokens["refresh_token"])) == (
            400,
            "invalid_grant",
            "Refresh token is invalid or expired",
        )

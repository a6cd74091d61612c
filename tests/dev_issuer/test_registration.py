"""RFC 7591 dynamic client registration of public clients: what is accepted, what is refused
and why, and that registrations survive a restart (the state folder) while codes do not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LogCapture
from tests.dev_issuer.flow import REDIRECT_URI, code_for, error, redeem, register
from tests.support.dev_issuer import RunningIssuer, cli_env, issuer_messages, run_cli
from toolbridge_dev.issuer.app import create_app
from toolbridge_dev.issuer.clients import ClientStoreError
from toolbridge_dev.issuer.config import IssuerSettings
from toolbridge_dev.issuer.keys import load_or_create_signing_key


def test_registration_answers_the_client_information(
    issuer: RunningIssuer, logs: LogCapture
) -> None:
    response = httpx.post(
        f"{issuer.url}/oauth/register",
        json={
            "redirect_uris": [
                REDIRECT_URI,
                "com.example.app:/oauth2redirect",
                "https://a.example/cb",
            ],
            "client_name": "MCP Inspector",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": "offline_access",
            "application_type": "native",
            "software_id": "inspector",
            "unknown_member": {"ignored": True},
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    client_id = body.pop("client_id")
    assert client_id.startswith("dev-")
    assert isinstance(body.pop("client_id_issued_at"), int)
    assert body == {
        "redirect_uris": [REDIRECT_URI, "com.example.app:/oauth2redirect", "https://a.example/cb"],
        "client_name": "MCP Inspector",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "offline_access",
        "application_type": "native",
        "software_id": "inspector",
    }
    assert "client_secret" not in response.text
    assert issuer_messages(logs, "INFO") == [
        f"Registered public client {client_id} (MCP Inspector) with redirect URIs "
        f"{REDIRECT_URI}, com.example.app:/oauth2redirect, https://a.example/cb"
    ]


def test_defaults_are_a_public_code_client_without_refresh_tokens(issuer: RunningIssuer) -> None:
    body = register(issuer, grant_types=None, client_name=None)
    assert body["token_endpoint_auth_method"] == "none"
    assert body["grant_types"] == ["authorization_code"]
    assert body["response_types"] == ["code"]
    code, verifier = code_for(issuer, body["client_id"])
    answer = redeem(issuer, body["client_id"], code, verifier).json()
    assert "refresh_token" not in answer


def _register_raw(issuer: RunningIssuer, metadata: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{issuer.url}/oauth/register", json=metadata)


REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("no redirect URIs", {}, "invalid_redirect_uri", "redirect_uris must be a non-empty list"),
    (
        "http on a public host",
        {"redirect_uris": ["http://client.example/cb"]},
        "invalid_redirect_uri",
        "http://client.example/cb: http is allowed for loopback hosts only; use https",
    ),
    (
        "fragment",
        {"redirect_uris": ["https://client.example/cb#x"]},
        "invalid_redirect_uri",
        "https://client.example/cb#x has a fragment",
    ),
    (
        "javascript",
        {"redirect_uris": ["javascript:alert(1)"]},
        "invalid_redirect_uri",
        "javascript:alert(1): scheme javascript is not allowed",
    ),
    (
        "relative",
        {"redirect_uris": ["/callback"]},
        "invalid_redirect_uri",
        "/callback is not an absolute URI",
    ),
    (
        "not a string",
        {"redirect_uris": [7]},
        "invalid_redirect_uri",
        "a redirect URI must be a non-empty string",
    ),
    (
        "confidential",
        {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "client_secret_basic"},
        "invalid_client_metadata",
        "only public clients (token_endpoint_auth_method none) register here; clients with a "
        "secret are configured in TOOLBRIDGE_DEV_ISSUER_CLIENTS",
    ),
    (
        "private_key_jwt",
        {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt"},
        "invalid_client_metadata",
        "token_endpoint_auth_method private_key_jwt is not supported; use none",
    ),
    (
        "implicit",
        {"redirect_uris": [REDIRECT_URI], "grant_types": ["implicit"]},
        "invalid_client_metadata",
        "grant_types must be authorization_code, optionally with refresh_token",
    ),
    (
        "token response type",
        {"redirect_uris": [REDIRECT_URI], "response_types": ["token"]},
        "invalid_client_metadata",
        'response_types must be ["code"]',
    ),
    (
        "unknown scope",
        {"redirect_uris": [REDIRECT_URI], "scope": "offline_access admin"},
        "invalid_client_metadata",
        "scope admin is not offered (offered: offline_access)",
    ),
    (
        "client_name not a string",
        {"redirect_uris": [REDIRECT_URI], "client_name": ["x"]},
        "invalid_client_metadata",
        "client_name must be a string",
    ),
    ("not an object", ["x"], "invalid_client_metadata", "the body must be a JSON object"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(
    ("metadata", "expected_error", "description"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refused_registrations(
    issuer: RunningIssuer,
    logs: LogCapture,
    metadata: dict[str, Any],
    expected_error: str,
    description: str,
) -> None:
    assert error(_register_raw(issuer, metadata)) == (400, expected_error, description)
    assert issuer_messages(logs, "WARNING") == [f"Refused a client registration: {description}"]


def test_registration_needs_json(issuer: RunningIssuer) -> None:
    response = httpx.post(f"{issuer.url}/oauth/register", data={"redirect_uris": REDIRECT_URI})
    assert error(response) == (
        400,
        "invalid_client_metadata",
        "Send the client metadata as application/json",
    )
    malformed = httpx.post(
        f"{issuer.url}/oauth/register",
        content=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert error(malformed) == (400, "invalid_client_metadata", "Malformed JSON body")


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:6274/oauth/callback",
        "http://localhost:6274/oauth/callback",
        "http://[::1]:8080/cb",
        "https://claude.ai/api/mcp/auth_callback",
        "cursor://anysphere.cursor-retrieval/oauth/user-toolbridge/callback",
        "com.example.app:/oauth2redirect",
    ],
)
def test_accepted_redirect_uris(issuer: RunningIssuer, uri: str) -> None:
    assert register(issuer, redirect_uris=[uri])["redirect_uris"] == [uri]


def test_registrations_survive_a_restart_codes_do_not(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with RunningIssuer(state) as first:
        client = register(first)["client_id"]
        code, verifier = code_for(first, client)
    assert (state / "registered-clients.json").stat().st_mode & 0o777 == 0o600
    stored = json.loads((state / "registered-clients.json").read_text())
    assert list(stored["clients"]) == [client]
    with RunningIssuer(state) as second:
        assert error(redeem(second, client, code, verifier)) == (
            400,
            "invalid_grant",
            "Authorization code is invalid or expired",
        )
        code, verifier = code_for(second, client)
        assert redeem(second, client, code, verifier).status_code == 200


def test_a_corrupt_registration_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = load_or_create_signing_key(state)
    (state / "registered-clients.json").write_text('{"clients": [1]}')
    settings = IssuerSettings(_env_file=None, state_dir=state)  # type: ignore[call-arg]
    with pytest.raises(ClientStoreError, match=r"registered-clients\.json is not what"):
        create_app(settings, key)
    result = run_cli(tmp_path, cli_env(state), "serve", "--port", "1")
    assert result.returncode == 1
    assert "registered-clients.json is not what the dev issuer wrote" in result.stderr
    assert (state / "registered-clients.json").read_text() == '{"clients": [1]}'


def test_browser_clients_may_call_across_origins(issuer: RunningIssuer) -> None:
    """The MCP Inspector runs in a browser: discovery, registration and the token endpoint
    answer CORS preflights (nothing here uses cookies)."""
    origin = {"Origin": "http://localhost:6274"}
    for path in ("/oauth/register", "/oauth/token"):
        preflight = httpx.options(
            f"{issuer.url}{path}",
            headers=origin
            | {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, mcp-protocol-version",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "mcp-protocol-version" in preflight.headers["access-control-allow-headers"]
    discovery = httpx.get(f"{issuer.url}/.well-known/oauth-authorization-server", headers=origin)
    assert discovery.headers["access-control-allow-origin"] == "*"

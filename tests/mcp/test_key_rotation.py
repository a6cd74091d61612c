"""Signing-key rotation end to end: the identity provider rotates its key right after the
API read its JWKS, the MCP server's next token is signed with the new key, and the call still
succeeds — the API refetches within about a second and the MCP server sends the token again
after a short wait instead of reporting a configuration error. Real API, real fake IdP, real
HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from pydantic import SecretStr

from tests.conftest import AUDIENCE
from tests.support.api import ApiServer
from tests.support.idp import IdP
from tests.support.jwks import SigningKey, mint
from tests.support.mcp_server import TENANT_ID, TENANT_SECRET, mcp_settings
from toolbridge_mcp.auth.tenant import TenantSigner
from toolbridge_mcp.backend.runtime import Backend

NOTES = ("GET", "/v1/notes")


async def make_the_api_read_its_keys(api: ApiServer, idp: IdP) -> None:
    """A token with a kid the API has never seen: it refetches the JWKS (after its pacing
    interval has surely passed) and refuses the token."""
    await asyncio.sleep(1.1)
    stranger = mint(
        {
            "iss": idp.issuer,
            "aud": AUDIENCE,
            "sub": "nobody",
            "exp": int(time.time()) + 60,
        },
        key=SigningKey.generate(f"unknown-{uuid.uuid4().hex[:8]}"),
    )
    headers = TenantSigner(TENANT_ID, SecretStr(TENANT_SECRET)).headers()
    async with httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get(
            "/v1/notes", headers=headers | {"Authorization": f"Bearer {stranger}"}
        )
    assert response.status_code == 401
    assert "kid does not match any signing key" in response.json()["error"]


async def test_a_key_rotated_right_after_a_jwks_fetch_costs_no_call(
    api: ApiServer, idp: IdP
) -> None:
    backend = Backend(mcp_settings(api.url, idp))
    await backend.open()
    try:
        await backend.client.call("GET", "/v1/notes", params={"limit": "1"})
        manager = backend.auth.manager
        assert manager is not None
        await make_the_api_read_its_keys(api, idp)
        idp.rotate_key()
        old = await manager.get_token()
        assert manager.invalidate(old)  # as the scheduled refresh would: a new-key token
        api.reset_counters()

        body = await backend.client.call("GET", "/v1/notes", params={"limit": "1"})

        assert isinstance(body, dict)
        notes_requests = [path for path in api.counter.paths if path == NOTES]
        assert len(notes_requests) >= 2, "refused at first: the API had just read its keys"
        assert len(idp.issued) == 2, "the same token was sent again, no new one fetched"
        health = backend.auth.health()
        assert health.status == "ok"
        api.reset_counters()
        await backend.client.call("GET", "/v1/notes", params={"limit": "1"})
        assert api.counter.paths == [NOTES], "the rotated key is known now"
    finally:
        await backend.close()

"""BearerAuth over real HTTP: a resource server that verifies the fake IdP's JWTs and can
revoke them, so the 401 → invalidate → retry-once path runs exactly as in production."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.conftest import AUDIENCE, CLIENT_ID, LogCapture, ManagerFactory
from tests.support.api_stub import ApiStub
from tests.support.idp import IdP, Reply
from tests.support.server import ServerThread
from toolbridge_mcp.auth.bearer import BearerAuth
from toolbridge_mcp.tokens import TokenManager


@pytest.fixture(scope="module")
def api_stub(idp_server: IdP) -> ApiStub:
    return ApiStub(idp_server.public_key, audience=AUDIENCE)


@pytest.fixture(scope="module")
def api_server(api_stub: ApiStub) -> Iterator[ServerThread]:
    with ServerThread(api_stub.app, name="toolbridge-api-stub") as server:
        yield server


@pytest.fixture
def api(api_stub: ApiStub, api_server: ServerThread) -> ApiStub:
    api_stub.reset()
    return api_stub


@pytest.fixture
def manager(make_manager: ManagerFactory) -> TokenManager:
    return make_manager()


@pytest.fixture
async def client(
    manager: TokenManager, api_server: ServerThread
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(auth=BearerAuth(manager), base_url=api_server.url) as client:
        yield client


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_cached_token_signs_every_call(
    client: httpx.AsyncClient, api: ApiStub, idp: IdP
) -> None:
    """The token is fetched once and reused; the API accepts it as a valid JWT."""
    for _ in range(3):
        response = await client.get("/whoami")
        assert response.status_code == 200
        assert response.json() == {"sub": f"{CLIENT_ID}@clients"}
    assert len(idp.requests) == 1
    assert api.authorizations == [bearer(idp.issued[0])] * 3


async def test_revoked_token_heals_on_the_next_call(
    client: httpx.AsyncClient, manager: TokenManager, api: ApiStub, idp: IdP
) -> None:
    """A token revoked before it expires costs one retry, not a failed call or a day."""
    revoked = await manager.get_token()
    api.revoked.add(revoked)

    response = await client.get("/whoami")

    assert response.status_code == 200
    assert len(idp.requests) == 2
    fresh = idp.issued[1]
    assert fresh != revoked
    assert api.authorizations == [bearer(revoked), bearer(fresh)]

    for _ in range(2):
        assert (await client.get("/whoami")).status_code == 200
    assert len(idp.requests) == 2
    assert api.authorizations[2:] == [bearer(fresh)] * 2


async def test_rejection_of_every_token_is_returned_after_one_retry(
    client: httpx.AsyncClient, api: ApiStub, idp: IdP
) -> None:
    """If fresh tokens are refused too (wrong audience, missing grant), the caller gets the
    401 after a single retry instead of a loop hammering the IdP and the API."""
    api.reject_all = True

    response = await client.get("/whoami")

    assert response.status_code == 401
    assert "invalid_token" in response.headers["www-authenticate"]
    assert len(idp.requests) == 2
    assert api.authorizations == [bearer(idp.issued[0]), bearer(idp.issued[1])]


async def test_other_errors_are_not_retried(
    client: httpx.AsyncClient, api: ApiStub, idp: IdP
) -> None:
    """Only a 401 means "this token"; a 403 comes back as it is, with no new token."""
    response = await client.get("/forbidden")
    assert response.status_code == 403
    assert api.request_count == 1
    assert len(idp.requests) == 1


async def test_concurrent_rejections_share_one_refetch(
    client: httpx.AsyncClient, manager: TokenManager, api: ApiStub, idp: IdP
) -> None:
    """Twenty calls hitting the same revoked token must not stampede the IdP. The refetch is
    slowed so that every 401 arrives while it is still in flight."""
    revoked = await manager.get_token()
    api.revoked.add(revoked)
    idp.script(Reply(delay=0.2))

    responses = await asyncio.gather(*(client.get("/whoami") for _ in range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    assert len(idp.requests) == 2
    fresh = idp.issued[1]
    assert Counter(api.authorizations) == {bearer(revoked): 20, bearer(fresh): 20}


class GatedTransport(httpx.AsyncHTTPTransport):
    """Holds requests until ``gate`` is set, so one signed with an old token lands late."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.holding.set()
        await self.gate.wait()
        return await super().handle_async_request(request)


async def test_late_rejection_keeps_the_replacement_token(
    client: httpx.AsyncClient,
    manager: TokenManager,
    api: ApiStub,
    api_server: ServerThread,
    idp: IdP,
) -> None:
    """A 401 for a token that was already replaced must not discard the replacement, or
    every straggler of a burst would cost another token request."""
    revoked = await manager.get_token()
    api.revoked.add(revoked)
    transport = GatedTransport()
    async with httpx.AsyncClient(
        auth=BearerAuth(manager), base_url=api_server.url, transport=transport
    ) as late_client:
        straggler = asyncio.create_task(late_client.get("/whoami"))
        async with asyncio.timeout(2):
            await transport.holding.wait()
        assert (await client.get("/whoami")).status_code == 200
        transport.gate.set()
        assert (await straggler).status_code == 200

    assert len(idp.requests) == 2
    fresh = idp.issued[1]
    assert api.authorizations == [bearer(revoked), bearer(fresh), bearer(revoked), bearer(fresh)]


def test_sync_client_is_refused(
    manager: TokenManager, api: ApiStub, api_server: ServerThread, idp: IdP
) -> None:
    """TokenManager is async-only, so a sync client must fail loudly before sending
    anything, rather than send the request without credentials."""
    with (
        httpx.Client(auth=BearerAuth(manager), base_url=api_server.url) as client,
        pytest.raises(RuntimeError, match="AsyncClient"),
    ):
        client.get("/whoami")
    assert api.request_count == 0
    assert idp.requests == []


class KeyRotationApi:
    """Answers ``refusals`` requests as the ToolBridge API answers a token whose signing key
    it does not know yet, then 200."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.authorizations: list[str | None] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.authorizations.append(request.headers.get("authorization"))
        if len(self.authorizations) <= self.refusals:
            message = "access token kid does not match any signing key of the issuer"
            return httpx.Response(401, json={"error": message, "correlation_id": "c"})
        return httpx.Response(200, json={"ok": True})


async def test_an_unknown_signing_key_is_retried_with_the_same_token(
    manager: TokenManager, idp: IdP
) -> None:
    """The API has not read the identity provider's new key yet: the same token is sent
    again after short waits, with no new token and no cool-down."""
    api = KeyRotationApi(refusals=2)
    auth = BearerAuth(manager, unknown_key_waits=(0.01, 0.02, 0.03))
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api)) as client:
        response = await client.get("https://api.test/v1/notes")
    assert response.status_code == 200
    assert api.authorizations == [bearer(idp.issued[0])] * 3
    assert len(idp.requests) == 1


async def test_a_key_that_stays_unknown_is_passed_on_then_not_waited_for(
    manager: TokenManager, idp: IdP, logs: LogCapture
) -> None:
    """A token from another identity provider than the API's keys: after the waits the 401
    is the caller's, the token is not thrown away, and for the cool-down such 401s pass at
    once."""
    api = KeyRotationApi(refusals=100)
    auth = BearerAuth(manager, unknown_key_waits=(0.01, 0.01))
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api)) as client:
        first = await client.get("https://api.test/v1/notes")
        assert first.status_code == 401
        assert len(api.authorizations) == 3
        second = await client.get("https://api.test/v1/notes")
        assert second.status_code == 401
        assert len(api.authorizations) == 4
    assert len(idp.requests) == 1
    assert any("still does not know the key" in m for m in logs.messages("ERROR"))

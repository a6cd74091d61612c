"""Per-user mode of issue 12, checked over the API: tokens need ``exp`` and ``sub`` and may
not be issued in the future; cursors reveal nothing of other users' rows."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from tests.api.conftest import SQLITE_ONLY, Api
from tests.support.jwks import mint
from toolbridge_common.contract import parse_timestamp


async def _notes_status(api: Api, token: str) -> tuple[int, str]:
    response = await api.http.post(
        "/v1/sync/sessions", headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code, response.json().get("error", "")


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"exp": None}, "access token has no exp claim"),
        ({"sub": None}, "access token has no sub claim"),
        ({"iat": 3600}, "access token is not valid yet (nbf or iat in the future)"),
        ({"iat": 45}, "access token is not valid yet (nbf or iat in the future)"),
        ({"iat": "soon"}, "access token is invalid (InvalidIssuedAtError)"),
    ],
    ids=["no-exp", "no-sub", "iat-an-hour-ahead", "iat-past-the-leeway", "iat-not-a-number"],
)
async def test_tokens_need_exp_and_sub_and_an_iat_not_in_the_future(
    api: Api, change: dict[str, Any], error: str
) -> None:
    """``iat`` later than now plus the 30 s leeway is refused, as is a token that never
    expires or names no user."""
    now = int(time.time())
    claims = api.jwks.claims(sub="auth0|claims", lifetime=7200)
    for name, value in change.items():
        if value is None:
            del claims[name]
        elif name == "iat" and isinstance(value, int):
            claims["iat"] = now + value
        else:
            claims[name] = value
    token = api.jwks.track(mint(claims, key=api.jwks.key))
    assert await _notes_status(api, token) == (401, error)


@SQLITE_ONLY
async def test_iat_within_the_leeway_is_accepted(api: Api) -> None:
    """Clocks differ by a few seconds: an ``iat`` 20 s ahead (inside the leeway) passes."""
    claims = api.jwks.claims(sub="auth0|claims", iat=int(time.time()) + 20)
    token = api.jwks.track(mint(claims, key=api.jwks.key))
    status, _ = await _notes_status(api, token)
    assert status == 201


def _decoded(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


async def test_cursors_depend_only_on_the_callers_own_rows(api: Api) -> None:
    """A cursor is ``base64url("<updated ms>|<uid>")`` of the caller's own last item (the
    original's format): no row number, so nothing of how much others write shows, and the
    same page gives the same cursor however many rows others add meanwhile."""
    alice = await api.user("auth0|alice")
    bob = await api.user("auth0|bob")
    for n in range(3):
        await alice.create("notes", {"n": n})
    first = (await alice.request("GET", "/v1/notes", params={"limit": 2})).json()
    last = first["items"][-1]
    assert _decoded(first["nextCursor"]) == f"{_ms(last['updatedAt'])}|{last['uid']}"

    for n in range(40):
        await bob.create("notes", {"n": n})
    again = (await alice.request("GET", "/v1/notes", params={"limit": 2})).json()
    assert again == first
    rest = (await alice.request("GET", "/v1/notes", params={"cursor": first["nextCursor"]})).json()
    assert [item["payload"]["n"] for item in rest["items"]] == [2]
    # The same cursor in Bob's hands shows only Bob's own items after that position.
    bobs = (await bob.request("GET", "/v1/notes", params={"cursor": first["nextCursor"]})).json()
    assert {item["uid"] for item in bobs["items"]}.isdisjoint(
        item["uid"] for item in first["items"] + rest["items"]
    )
    pulled = (await alice.request("GET", "/v1/sync/notes/pull", params={"limit": 2})).json()
    assert pulled["nextCursor"] == first["nextCursor"], "pull pages the same way"


def _ms(updated_at: str) -> int:
    ms = parse_timestamp(updated_at)
    assert ms is not None
    return ms

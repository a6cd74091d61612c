"""Helpers for the item tests: valid payloads for every entity (comments and messages need a
live parent), push and pull calls, and cursors encoded the way the original Go API does."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from tests.api.conftest import User

PARENTS: dict[str, tuple[str, str]] = {
    "comments": ("notes", "parentUid"),
    "chat_messages": ("chats", "chatUid"),
}
"""Entities whose items need a live parent: (parent entity, payload key)."""


async def valid_payload(user: User, entity: str, **fields: Any) -> dict[str, Any]:
    """``fields`` plus, for comments and chat messages, a freshly created live parent."""
    if entity not in PARENTS:
        return dict(fields)
    parent_entity, key = PARENTS[entity]
    parent = await user.create(parent_entity, {"title": f"parent of a {entity} item"})
    payload = {key: parent["uid"], **fields}
    if entity == "comments":
        payload.setdefault("parentType", "note")
    return payload


async def create(user: User, entity: str, **fields: Any) -> dict[str, Any]:
    """A new item of ``entity`` (with a parent where it needs one) through REST."""
    return await user.create(entity, await valid_payload(user, entity, **fields))


async def push(user: User, entity: str, *items: dict[str, Any]) -> list[dict[str, Any]]:
    response = await user.request("POST", f"/v1/sync/{entity}/push", json={"items": list(items)})
    assert response.status_code == 200, response.text
    acks: list[dict[str, Any]] = response.json()
    return acks


async def pull(user: User, entity: str, **params: Any) -> dict[str, Any]:
    response = await user.request("GET", f"/v1/sync/{entity}/pull", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def pull_all(user: User, entity: str, limit: int = 100) -> dict[str, list[Any]]:
    """Every page until an empty one (as the original's clients loop)."""
    upserts: list[Any] = []
    deletes: list[Any] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        page = await pull(user, entity, **params)
        if not page["upserts"] and not page["deletes"]:
            assert "nextCursor" not in page
            return {"upserts": upserts, "deletes": deletes}
        upserts += page["upserts"]
        deletes += page["deletes"]
        params["cursor"] = page["nextCursor"]


def go_cursor(updated_ms: int, uid: str) -> str:
    """A cursor as the Go API encodes it (``syncx.EncodeCursor``): base64url without padding
    of ``"<ms>|<uuid>"``; written here independently of the contract module's codec."""
    raw = f"{updated_ms}|{uuid.UUID(uid)}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_uid() -> str:
    return str(uuid.uuid4())

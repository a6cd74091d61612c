"""One router factory for every entity in :data:`toolbridge_api.entities.ENTITIES`."""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import Field, create_model
from pydantic_core import to_json

from toolbridge_api.db.store import Change, Item
from toolbridge_api.entities import ARCHIVE, Entity
from toolbridge_api.errors import ApiError
from toolbridge_api.routes.context import StoreDep, SyncedCaller
from toolbridge_api.routes.models import ItemOut, ItemPage, ProcessIn, error_responses

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_CURSOR_PREFIX = "s:"

Payload = Annotated[dict[str, Any], Body(description="The item's payload: a JSON object.")]
IfMatch = Annotated[
    str | None,
    Header(
        description="Only change the item if its version is this one (else 412); * is any.",
        pattern=r'^(\*|(W/)?"?[0-9]{1,18}"?)$',
    ),
]
Uid = uuid.UUID


MAX_PAYLOAD_DEPTH = 64


def checked_json(value: Any, where: str) -> Any:
    """``value`` if every database and client can store it: nesting at most
    ``MAX_PAYLOAD_DEPTH`` deep, finite numbers only, text that is valid Unicode; 400 if not.

    Python's JSON parser accepts NaN, Infinity and lone surrogates, which PostgreSQL refuses
    and JSON cannot represent; refusing them here means nothing unreadable is ever stored.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH and isinstance(node, dict | list):
            raise ApiError(400, f"{where} is nested more than {MAX_PAYLOAD_DEPTH} levels deep")
        if isinstance(node, float) and not math.isfinite(node):
            raise ApiError(400, f"{where} contains NaN or Infinity, which JSON does not allow")
        if isinstance(node, str):
            _check_text(node, where)
        elif isinstance(node, dict):
            for key, item in node.items():
                _check_text(key, where)
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
    return value


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{where} contains invalid Unicode (a lone surrogate)") from None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor continues after; 400 for anything this server did not issue."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    number = text.removeprefix(_CURSOR_PREFIX)
    valid = number.isascii() and number.isdigit() and len(number) <= 18
    if not text.startswith(_CURSOR_PREFIX) or not valid:
        raise ApiError(400, "cursor is invalid: pass the nextCursor of a previous page as is")
    return int(number)


def parse_if_match(value: str | None) -> int | None:
    """The version in ``If-Match`` (``3``, ``"3"`` or ``W/"3"``); 400 if it is not one.
    ``*`` (RFC 9110: any current representation) is no version constraint."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ApiError(400, "If-Match must be an item version, e.g. If-Match: 3")
    return int(text)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes a key."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _json(item: Item) -> dict[str, Any]:
    return {
        "uid": item.uid,
        "version": item.version,
        "updatedAt": item.updated_at,
        "deletedAt": item.deleted_at,
        "payload": item.payload,
    }


def _answer(item: Item, status_code: int = 200) -> Response:
    """The item as JSON with its version as ETag. Serialised directly: the response models
    document the shape, re-validating what the store just returned would only cost time."""
    return Response(
        to_json(_json(item)),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": f'"{item.version}"'},
    )


def _process_model(entity: Entity) -> type[ProcessIn]:
    """``ProcessIn`` whose ``action`` lists this entity's actions in the schema (as an enum)
    while validation stays with the route, which answers with the valid actions."""
    return create_model(
        f"{entity.title.title().replace(' ', '')}Process",
        __base__=ProcessIn,
        action=(
            str,
            Field(description=ProcessIn.ACTION, json_schema_extra={"enum": [*entity.actions]}),
        ),
    )


def entity_router(entity: Entity) -> APIRouter:
    """The REST routes of one entity: list, create, get, replace, patch, delete, archive,
    process. Every route needs a valid sync session and epoch, and sees only the caller's
    items (others' uids are 404, never 403, so they cannot be probed)."""
    name = entity.name
    router = APIRouter(
        prefix=f"/v1/{name}",
        tags=[name],
        responses=error_responses(400, 401, 403, 404, 409, 410, 412, 413, 428, 429, 503),
    )
    valid_actions = ", ".join(entity.actions)

    @router.get("", response_model=ItemPage, operation_id=f"list_{name}", summary=f"List {name}")
    async def list_items(
        caller: SyncedCaller,
        store: StoreDep,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
    ) -> Response:
        after = decode_cursor(cursor) if cursor else 0
        items, last = await store.list_items(
            caller, name, after=after, limit=limit, include_deleted=include_deleted
        )
        page = {
            "items": [_json(item) for item in items],
            "nextCursor": None if last is None else encode_cursor(last),
        }
        return Response(to_json(page), media_type="application/json")

    @router.post(
        "",
        status_code=201,
        response_model=ItemOut,
        operation_id=f"create_{name}",
        summary=f"Create {name}",
    )
    async def create_item(caller: SyncedCaller, store: StoreDep, payload: Payload) -> Response:
        checked_json(payload, "body")
        return _answer(await store.create_item(caller, name, payload), 201)

    @router.get(
        "/{uid}", response_model=ItemOut, operation_id=f"get_{name}", summary=f"Get one of {name}"
    )
    async def get_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        include_deleted: Annotated[bool, Query(alias="includeDeleted")] = False,
    ) -> Response:
        item = await store.get_item(caller, name, str(uid))
        if item is None:
            raise ApiError(404, f"no such item in {name}: {uid}")
        if item.deleted_at is not None and not include_deleted:
            raise ApiError(410, f"the item was deleted (add includeDeleted=true to see it): {uid}")
        return _answer(item)

    async def change(
        caller: SyncedCaller,
        store: StoreDep,
        uid: uuid.UUID,
        how: Change | None,
        if_match: str | None = None,
    ) -> Response:
        item = await store.change_item(
            caller, name, str(uid), how, expected_version=parse_if_match(if_match)
        )
        return _answer(item)

    @router.put(
        "/{uid}",
        response_model=ItemOut,
        operation_id=f"replace_{name}",
        summary=f"Replace one of {name}",
    )
    async def replace_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        payload: Payload,
        if_match: IfMatch = None,
    ) -> Response:
        checked_json(payload, "body")
        return await change(caller, store, uid, lambda _old, _now: payload, if_match)

    @router.patch(
        "/{uid}",
        response_model=ItemOut,
        operation_id=f"patch_{name}",
        summary=f"Merge-patch one of {name} (RFC 7396: null removes a key)",
    )
    async def patch_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        patch: Payload,
        if_match: IfMatch = None,
    ) -> Response:
        checked_json(patch, "body")

        def merged(old: dict[str, Any], _now: datetime) -> dict[str, Any]:
            result: dict[str, Any] = merge_patch(old, patch)
            return result

        return await change(caller, store, uid, merged, if_match)

    @router.delete(
        "/{uid}",
        response_model=ItemOut,
        operation_id=f"delete_{name}",
        summary=f"Soft-delete one of {name}",
    )
    async def delete_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        if_match: IfMatch = None,
    ) -> Response:
        return await change(caller, store, uid, None, if_match)

    @router.post(
        "/{uid}/archive",
        response_model=ItemOut,
        operation_id=f"archive_{name}",
        summary=f"Archive one of {name}",
    )
    async def archive_item(caller: SyncedCaller, store: StoreDep, uid: Uid) -> Response:
        return await change(caller, store, uid, ARCHIVE.apply)

    async def process_item(
        caller: SyncedCaller, store: StoreDep, uid: Uid, body: ProcessIn
    ) -> Response:
        checked_json(body.metadata, "body.metadata")
        action = entity.actions.get(body.action)
        if action is None:
            raise ApiError(
                400,
                f"unknown action {body.action[:64]!a} for {name}: "
                f"valid actions are {valid_actions}",
            )

        def processed(old: dict[str, Any], now: datetime) -> dict[str, Any]:
            result = action.apply(old, now)
            result["lastAction"] = body.action
            if body.metadata is None:
                result.pop("lastActionMetadata", None)
            else:
                result["lastActionMetadata"] = body.metadata
            return result

        return await change(caller, store, uid, processed)

    # The body model of this entity documents its actions as an enum in the OpenAPI schema.
    process_item.__annotations__["body"] = _process_model(entity)
    router.post(
        "/{uid}/process",
        response_model=ItemOut,
        operation_id=f"process_{name}",
        summary=f"Apply an action to one of {name}: {valid_actions}",
    )(process_item)

    return router

"""Delta sync, one router per entity: ``POST /v1/sync/{entity}/push`` and
``GET /v1/sync/{entity}/pull``, as the original API defines them (last writer wins on the
item's time, per-item acks, tombstones, cursors in (updated time, uid) order)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from toolbridge_api.db.store import now_ms
from toolbridge_api.entities import Entity, Incoming, InvalidItem, extract
from toolbridge_api.routes.context import DeltaCaller, StoreDep
from toolbridge_api.routes.entities import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    checked_json,
    clamp_limit,
    json_response,
    next_cursor,
    parse_cursor,
)
from toolbridge_api.routes.models import PullOut, PushAck, PushIn, error_responses
from toolbridge_common.contract import format_ms


def _read(kind: Entity, item: dict[str, Any]) -> Incoming | str:
    try:
        return extract(kind, item, now_ms())
    except InvalidItem as invalid:
        return str(invalid)


def delta_router(kind: Entity) -> APIRouter:
    """Push and pull of one entity. Like the REST routes, they need a sync session and the
    current epoch, and see only the caller's items; push and REST share the same rows."""
    name = kind.name
    router = APIRouter(
        prefix=kind.sync_path,
        tags=["sync"],
        responses=error_responses(400, 401, 403, 408, 409, 413, 428, 429, 431, 503),
    )

    @router.post(
        "/push",
        response_model=list[PushAck],
        operation_id=f"push_{name}",
        summary=f"Push changed {name}: one ack per item, in order",
    )
    async def push(caller: DeltaCaller, store: StoreDep, body: PushIn) -> Response:
        """Applies the items in order in one transaction (each item sees what the earlier
        ones wrote). An item is stored as sent only if its time is strictly newer
        than the stored one's; an older or equal one changes nothing and its ack shows the
        server's version and time. ``sync.isDeleted: true`` makes a tombstone, a newer live
        push brings it back. Refused items get an ack with ``error``; the rest still apply."""
        items = body.items or []
        for index, item in enumerate(items):
            # Each item is measured as it is stored (as REST writes and pulls show it), not
            # one level down inside the body, so what was pulled can be pushed back.
            checked_json(item, f"body.items[{index}]")
        results = await store.push(caller, kind, [_read(kind, item) for item in items])
        acks = []
        for result in results:
            ack: dict[str, Any] = {
                "uid": result.uid,
                "version": result.version,
                "updatedAt": "" if result.updated_ms is None else format_ms(result.updated_ms),
            }
            if result.error:
                ack["error"] = result.error
            acks.append(ack)
        return json_response(acks)

    @router.get(
        "/pull",
        response_model=PullOut,
        operation_id=f"pull_{name}",
        summary=f"Pull changed {name} after a cursor",
    )
    async def pull(
        caller: DeltaCaller,
        store: StoreDep,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Response:
        """Changes in (updated time, uid) order after ``cursor``: live items as their
        payloads, deleted ones as tombstones. Continue with ``nextCursor`` until a page is
        empty; keep the last cursor to fetch only newer changes later."""
        items = list(
            await store.list_items(
                caller,
                name,
                after=parse_cursor(cursor),
                limit=clamp_limit(limit),
                include_deleted=True,
            )
        )
        upserts: list[dict[str, Any]] = []
        deletes: list[dict[str, Any]] = []
        for item in items:
            if item.deleted_ms is None:
                upserts.append(item.payload)
            else:
                deletes.append({"uid": item.uid, "deletedAt": format_ms(item.deleted_ms)})
        page: dict[str, Any] = {"upserts": upserts, "deletes": deletes}
        if (following := next_cursor(items)) is not None:
            page["nextCursor"] = following
        return json_response(page)

    return router

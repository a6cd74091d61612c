"""The framework floor for ``bench.api``: a minimal Starlette app on the API's own database and
tables, served by the same uvicorn set-up as ``toolbridge-api serve``, doing only what reaching
the data takes — get one item by uid, create one, list 100 — with SQLAlchemy Core and the
API's engine. No token, tenant, session or epoch check, rate limit, stamping or error mapping:
what the API spends beyond this is the price of those.

Run: ``python -m bench.floor_api DATABASE_URL PORT`` (``bench.api`` starts it next to the API,
on the API's database once the API has migrated it).
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json
from sqlalchemy import insert, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from toolbridge_api.config import ApiSettings
from toolbridge_api.db.models import EntityRow
from toolbridge_api.db.schema import create_engine
from toolbridge_api.serving import run_server, server_config

TENANT, USER = "default", "auth0|bench"
"""Whose rows the floor reads and writes: the benchmark's API user."""
_COLUMNS = (
    EntityRow.uid,
    EntityRow.version,
    EntityRow.updated_at_ms,
    EntityRow.deleted_at_ms,
    EntityRow.payload,
)
_MINE = (EntityRow.tenant_id == TENANT, EntityRow.user_id == USER)


def _json(row: Any) -> dict[str, Any]:
    return {"uid": row.uid, "version": row.version, "payload": row.payload}


def build(database_url: str) -> Starlette:
    engine = create_engine(database_url)

    async def get_item(request: Request) -> Response:
        uid = request.path_params["uid"]
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).where(
                        *_MINE, EntityRow.entity == "notes", EntityRow.uid == uid
                    )
                )
            ).one_or_none()
        if row is None:
            return Response(b'{"error":"not found"}', 404, media_type="application/json")
        return Response(to_json(_json(row)), media_type="application/json")

    async def list_items(request: Request) -> Response:
        limit = min(int(request.query_params.get("limit", "100")), 1000)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_COLUMNS)
                    .where(*_MINE, EntityRow.entity == "notes")
                    .order_by(EntityRow.updated_at_ms, EntityRow.uid)
                    .limit(limit)
                )
            ).all()
        return Response(
            to_json({"items": [_json(row) for row in rows]}), media_type="application/json"
        )

    async def create_item(request: Request) -> Response:
        payload = await request.json()
        now_ms = time.time_ns() // 1_000_000
        now = datetime.now(UTC)
        uid = str(uuid.uuid4())
        async with engine.begin() as conn:
            await conn.execute(
                insert(EntityRow).values(
                    tenant_id=TENANT,
                    user_id=USER,
                    entity="tasks",
                    uid=uid,
                    version=1,
                    payload=payload,
                    created_at=now,
                    updated_at=now,
                    updated_at_ms=now_ms,
                )
            )
        body = {"uid": uid, "version": 1, "payload": payload}
        return Response(to_json(body), 201, media_type="application/json")

    async def healthz(request: Request) -> Response:
        del request
        return Response(b'{"status":"ok"}', media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        yield
        await engine.dispose()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/notes", list_items),
            Route("/v1/notes/{uid}", get_item),
            Route("/v1/tasks", create_item, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    database_url, port = sys.argv[1], int(sys.argv[2])
    # Only the server's limits are read from these settings (the floor checks no token).
    settings = ApiSettings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=database_url,
        host="127.0.0.1",
        port=port,
        debug_sub_enabled=True,
    )
    run_server(server_config(build(database_url), settings, log_level="warning"))


if __name__ == "__main__":
    main()

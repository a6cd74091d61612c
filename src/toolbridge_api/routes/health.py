"""The open routes: liveness with a database check, and server info for clients."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request
from loguru import logger

from toolbridge_api.config import ApiSettings
from toolbridge_api.entities import ENTITIES
from toolbridge_api.errors import ApiError
from toolbridge_api.routes.context import StoreDep
from toolbridge_api.routes.entities import DEFAULT_LIMIT, MAX_LIMIT
from toolbridge_api.routes.models import HealthOut, InfoOut, LimitsOut, error_responses

router = APIRouter()


@cache
def server_version() -> str:
    """The installed version; cached, as reading package metadata scans the disk."""
    try:
        return version("toolbridge-mcp")
    except PackageNotFoundError:
        return "0+unknown"


@router.get("/healthz", tags=["health"], operation_id="healthz", responses=error_responses(503))
async def healthz(store: StoreDep) -> HealthOut:
    """200 when the database answers, 503 otherwise (the error says which part failed)."""
    try:
        await store.ping()
    except Exception as exc:
        logger.warning("health check: database unavailable ({})", type(exc).__name__)
        raise ApiError(503, "database unavailable", extra={"database": "unavailable"}) from None
    return HealthOut(status="ok", database="ok")


@router.get("/v1/sync/info", tags=["sync"], operation_id="sync_info")
async def info(request: Request) -> InfoOut:
    """What this server supports: entities and their actions, limits. No auth needed."""
    settings: ApiSettings = request.app.state.settings
    return InfoOut(
        name="toolbridge-api",
        version=server_version(),
        entities={entity.name: list(entity.actions) for entity in ENTITIES},
        limits=LimitsOut(
            listDefaultLimit=DEFAULT_LIMIT,
            listMaxLimit=MAX_LIMIT,
            maxBodyBytes=settings.max_body_bytes,
            sessionTtlSeconds=settings.session_ttl_seconds,
            rateLimitRequests=settings.rate_limit_requests,
            rateLimitWindowSeconds=settings.rate_limit_window_seconds,
            rateLimitBurst=settings.rate_limit_burst,
        ),
        tenantHeadersRequired=settings.tenant_secret is not None,
    )

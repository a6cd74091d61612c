"""The open routes: liveness with a database check, and server info for clients."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from loguru import logger

from toolbridge_api.errors import ApiError
from toolbridge_api.routes.context import StoreDep
from toolbridge_api.routes.models import HealthOut, RateLimitHealthOut, error_responses
from toolbridge_api.security import RateLimitBackend
from toolbridge_common import contract

router = APIRouter()


@cache
def server_version() -> str:
    """The installed version; cached, as reading package metadata scans the disk."""
    try:
        return version("toolbridge-mcp")
    except PackageNotFoundError:
        return "0+unknown"


@router.get("/healthz", tags=["health"], operation_id="healthz", responses=error_responses(503))
async def healthz(request: Request, store: StoreDep) -> HealthOut:
    """200 when the database answers, 503 otherwise (the error says which part failed). The
    rate limits' state is shown, never failed on: without Redis the API still serves."""
    try:
        await store.ping()
    except Exception as exc:
        logger.warning("health check: database unavailable ({})", type(exc).__name__)
        raise ApiError(503, "database unavailable", extra={"database": "unavailable"}) from None
    rate_limits: RateLimitBackend = request.app.state.rate_limits
    limits = await rate_limits.health()
    return HealthOut(
        status="ok",
        database="ok",
        rate_limit=RateLimitHealthOut(backend=limits.backend, shared=limits.shared),
    )


@router.get(
    "/v1/sync/info",
    tags=["sync"],
    operation_id="sync_info",
    responses={
        200: {
            "description": "API version, server time, entities, locking, rate limit and hints,"
            " as the original API answers.",
            "content": {
                "application/json": {"example": contract.info(datetime(2025, 1, 1, tzinfo=UTC))}
            },
        }
    },
)
async def info() -> JSONResponse:
    """What this server supports, from the shared contract. No auth needed."""
    return JSONResponse(contract.info(datetime.now(UTC)))

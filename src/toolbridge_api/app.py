"""The application factory. Nothing happens at import: the lifespan opens the database,
migrates the schema and builds the authenticator; shutdown closes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from loguru import logger
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from toolbridge_api.config import ApiSettings
from toolbridge_api.db.schema import create_engine, migrate
from toolbridge_api.db.store import DatabaseBusy, Store
from toolbridge_api.db.sync_state import SyncState
from toolbridge_api.entities import ENTITIES
from toolbridge_api.errors import install_error_handlers
from toolbridge_api.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    CorrelationIdMiddleware,
    DeferredHeadersMiddleware,
    HeaderLimitMiddleware,
)
from toolbridge_api.routes import health, sync, token_exchange
from toolbridge_api.routes.delta import delta_router
from toolbridge_api.routes.entities import entity_router
from toolbridge_api.routes.health import server_version
from toolbridge_api.security import (
    Authenticator,
    RateLimitBackend,
    RateLimiter,
    RateLimits,
    TenantVerifier,
    TokenVerifier,
)
from toolbridge_api.security.own_keys import OwnTokens
from toolbridge_api.security.shared_ratelimit import RedisRateLimits

DEBUG_ONLY_AUDIENCE = "urn:toolbridge:no-token-verification"
"""Stands in for the audience when only X-Debug-Sub is configured: no token can pass then."""


def build_token_verifier(settings: ApiSettings, audience: str) -> TokenVerifier:
    """A verifier of the identity provider's tokens for ``audience`` (the API's, or the MCP
    server's for token exchange)."""
    return TokenVerifier(
        audience=audience,
        issuer=settings.issuer,
        jwks_url=settings.jwks_url,
        hs256_secret=settings.hs256_secret,
    )


def build_authenticator(
    settings: ApiSettings, own_tokens: OwnTokens | None = None
) -> Authenticator:
    """The security layer as the settings describe it; ``own_tokens``: the API's own
    (exchanged) tokens are accepted too."""
    tokens = build_token_verifier(settings, settings.audience or DEBUG_ONLY_AUDIENCE)
    tenants = (
        None
        if settings.tenant_secret is None
        else TenantVerifier(
            settings.tenant_secret, max_skew_seconds=settings.max_timestamp_skew_seconds
        )
    )
    return Authenticator(
        tokens=tokens,
        tenants=tenants,
        debug_sub_enabled=settings.debug_sub_enabled,
        own_tokens=own_tokens,
    )


def build_rate_limits(settings: ApiSettings) -> RateLimitBackend:
    """A bucket per caller in each group: REST and push/pull alike, sessions/wipe/state less;
    in Redis, shared by every API process, when ``TOOLBRIDGE_API_REDIS_URL`` is set."""

    def entity_limiter() -> RateLimiter:
        return RateLimiter(
            requests=settings.rate_limit_requests,
            window_seconds=settings.rate_limit_window_seconds,
            burst=settings.rate_limit_burst,
        )

    auth = RateLimiter(
        requests=settings.auth_rate_limit_requests,
        window_seconds=settings.auth_rate_limit_window_seconds,
        burst=settings.auth_rate_limit_burst,
    )
    local = RateLimits({"rest": entity_limiter(), "sync": entity_limiter(), "auth": auth})
    if settings.redis_url is None:
        return local
    return RedisRateLimits.from_url(
        local,
        settings.redis_url.get_secret_value(),
        key_prefix=settings.redis_key_prefix,
        timeout=settings.redis_timeout_seconds,
    )


async def _purge_expired_keys(store: Store) -> None:
    """Forgets expired idempotency keys, best effort: a busy or unreachable database must not
    stop the start (each user's expired keys are also purged as they write)."""
    try:
        purged = await store.purge_idempotency_keys()
    except (DatabaseBusy, DBAPIError, OSError) as exc:
        logger.warning("expired idempotency keys not purged at start ({})", type(exc).__name__)
        return
    if purged:
        logger.info("{} expired idempotency keys purged", purged)


def create_app(settings: ApiSettings) -> FastAPI:
    """The API for ``settings``; serve it with uvicorn (lifespan on) or enter
    ``app.router.lifespan_context(app)`` yourself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url,
            timeout_seconds=settings.database_timeout_seconds,
            log_parameters=settings.log_sql_parameters,
        )
        try:
            await migrate(engine)
            exchange = token_exchange.build_token_exchange(
                settings, lambda audience: build_token_verifier(settings, audience)
            )
            app.state.token_exchange = exchange
            authenticator = build_authenticator(
                settings, None if exchange is None else exchange.own
            )
            authenticator.tokens.prefetch()  # the signing keys, while the database opens
            store = Store(engine, timeout_seconds=settings.database_timeout_seconds)
            await _purge_expired_keys(store)
            app.state.store = store
            app.state.sync_state = SyncState(
                store, session_ttl=timedelta(seconds=settings.session_ttl_seconds)
            )
            app.state.authenticator = authenticator
            rate_limits = build_rate_limits(settings)
            if isinstance(rate_limits, RedisRateLimits):
                await rate_limits.start()
            app.state.rate_limits = rate_limits
            url = make_url(settings.database_url)
            logger.info(
                "toolbridge-api ready: database {} ({}), tenant headers {}",
                url.get_backend_name(),
                url.render_as_string(hide_password=True),
                "required" if settings.tenant_secret is not None else "not required",
            )
            try:
                yield
            finally:
                await rate_limits.aclose()
                await authenticator.aclose()
                if exchange is not None:
                    await exchange.aclose()
        finally:
            await engine.dispose()

    app = FastAPI(
        title="ToolBridge API",
        version=server_version(),
        description="Notes, tasks, comments, chats and chat messages, synced per user.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.token_exchange = None
    install_error_handlers(app)
    # The last added runs first: the correlation id exists before anything answers, and the
    # access log sees every answer, the limits' included.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    app.add_middleware(DeferredHeadersMiddleware)
    app.add_middleware(
        HeaderLimitMiddleware,
        max_header_count=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
    app.include_router(health.router)
    app.include_router(sync.router)
    app.include_router(token_exchange.router)
    for entity in ENTITIES:
        app.include_router(entity_router(entity))
        app.include_router(delta_router(entity))
    _document_400_not_422(app)
    return app


def _document_400_not_422(app: FastAPI) -> None:
    """FastAPI documents validation failures as 422; this API answers them with 400 (the
    contract's status), so the generated document must not promise a 422."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.get("422", {}).get("description") == "Validation Error":
                        del responses["422"]
            schemas = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]

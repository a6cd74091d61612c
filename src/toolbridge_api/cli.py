"""The ``toolbridge-api`` command line: serve the API, or migrate its database."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
from fastapi import FastAPI
from loguru import logger
from sqlalchemy.engine import make_url

from toolbridge_api.app import create_app
from toolbridge_api.config import ApiSettings, DatabaseSettings, env_name, load_api_settings
from toolbridge_api.db.schema import HEAD, create_engine, current_revision, migrate
from toolbridge_api.serving import run_server, server_config
from toolbridge_common.logs import configure_logging
from toolbridge_common.settings import ConfigError

WORKER_APP = f"{__name__}:worker_app"
"""What each ``serve --workers N`` process imports and calls to build its app."""
WORKER_PING_SECONDS = 30
"""How long uvicorn's supervisor waits for a worker to answer its ping before it kills it as
hung. A new worker imports the whole app first, seconds on a busy machine: with uvicorn's 5 s
the workers were killed and restarted in a loop."""

app = typer.Typer(
    name="toolbridge-api",
    help="ToolBridge REST API: notes, tasks, comments, chats and chat messages, synced per user.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """ToolBridge REST API: notes, tasks, comments, chats and chat messages, synced per user."""


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default TOOLBRIDGE_API_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind (default TOOLBRIDGE_API_PORT).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="API processes serving the one port (default TOOLBRIDGE_API_WORKERS, 1).",
        ),
    ] = None,
) -> None:
    """Serve the API with uvicorn; settings from TOOLBRIDGE_API_* variables and .env.

    The database is created (SQLite) and migrated to the latest schema on start, once, before
    any worker starts. Request headers and bodies are limited in size and in the time they may
    take to arrive (TOOLBRIDGE_API_MAX_HEADER_BYTES, …, docs/operations.md). Several workers
    share the rate limits through Redis (TOOLBRIDGE_API_REDIS_URL).
    """
    overrides = {
        k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None
    }
    try:
        settings = load_api_settings(ApiSettings, **overrides)
        _check_workers(settings)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    configure_logging(settings.log_level)
    if settings.workers == 1:
        run_server(server_config(create_app(settings), settings))
        return
    if settings.redis_url is None:
        logger.warning(
            "{} workers without {}: each keeps its own rate-limit buckets, so a user gets up to "
            "{} times the limit",
            settings.workers,
            env_name("redis_url"),
            settings.workers,
        )
    try:
        asyncio.run(_migrate(settings.database_url, HEAD))
    except Exception as exc:
        raise _fail(f"migration failed: {type(exc).__name__}: {exc}", 1) from None
    # The workers read the settings from the environment they inherit: the options too.
    os.environ.update({env_name(name): str(value) for name, value in overrides.items()})
    run_server(
        server_config(
            WORKER_APP,
            settings,
            factory=True,
            workers=settings.workers,
            timeout_worker_healthcheck=WORKER_PING_SECONDS,
        )
    )


def _check_workers(settings: ApiSettings) -> None:
    """Workers must share one database: an in-memory SQLite database would be one per
    worker, each with its own sessions and items."""
    if settings.workers == 1:
        return
    url = make_url(settings.database_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or url.query.get("mode") == "memory"
    ):
        raise ConfigError(
            f"{env_name('workers')} (--workers) above 1 needs a database every worker shares: "
            f"{env_name('database_url')} is an in-memory SQLite database; use a SQLite file or "
            "PostgreSQL"
        )


def worker_app() -> FastAPI:
    """The app of one ``serve --workers N`` process: the settings re-read from the environment
    the parent validated (the schema is already migrated), its log set up as the parent's."""
    settings = load_api_settings(ApiSettings)
    configure_logging(settings.log_level)
    return create_app(settings)


async def _migrate(database_url: str, revision: str) -> tuple[str | None, str | None]:
    engine = create_engine(database_url)
    try:
        before = await current_revision(engine)
        await migrate(engine, revision)
        return before, await current_revision(engine)
    finally:
        await engine.dispose()


@app.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Option(help="Schema revision to upgrade to.")] = HEAD,
) -> None:
    """Upgrade the database (TOOLBRIDGE_API_DATABASE_URL) to the latest schema, keeping its
    data. ``serve`` does this on start too; run it alone before rolling out new processes."""
    try:
        settings = load_api_settings(DatabaseSettings)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    configure_logging(settings.log_level)
    try:
        before, after = asyncio.run(_migrate(settings.database_url, revision))
    except Exception as exc:
        raise _fail(f"migration failed: {type(exc).__name__}: {exc}", 1) from None
    typer.echo(f"database schema: {before or 'empty'} -> {after}")

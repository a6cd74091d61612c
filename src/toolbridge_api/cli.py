"""The ``toolbridge-api`` command line: serve the API, or migrate its database."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
import uvicorn

from toolbridge_api.app import create_app
from toolbridge_api.config import ApiSettings, DatabaseSettings, load_api_settings
from toolbridge_api.db.schema import HEAD, create_engine, current_revision, migrate
from toolbridge_api.serving import uvicorn_options
from toolbridge_common.logs import configure_logging
from toolbridge_common.settings import ConfigError

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
) -> None:
    """Serve the API with uvicorn; settings from TOOLBRIDGE_API_* variables and .env.

    The database is created (SQLite) and migrated to the latest schema on start. Request
    headers and bodies are limited in size and in the time they may take to arrive
    (TOOLBRIDGE_API_MAX_HEADER_BYTES, …, docs/operations.md).
    """
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    try:
        settings = load_api_settings(ApiSettings, **overrides)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), **uvicorn_options(settings))


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

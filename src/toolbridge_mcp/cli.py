"""The ``toolbridge-mcp`` command line."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from loguru import logger

from toolbridge_common.logs import configure_logging
from toolbridge_common.settings import ConfigError
from toolbridge_mcp.auth.modes.client_credentials import (
    CLIENT_CREDENTIALS_SETTINGS,
    JWT_NEEDED,
    granted_scope,
    scope_report,
)
from toolbridge_mcp.config import Settings, load_settings
from toolbridge_mcp.oauth import TokenError, unverified_claims
from toolbridge_mcp.tokens import TokenManager

app = typer.Typer(
    name="toolbridge-mcp",
    help="ToolBridge MCP server: the ToolBridge API as MCP tools, with automatic OAuth2 tokens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """ToolBridge MCP server: the ToolBridge API as MCP tools, with automatic OAuth2 tokens."""


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    configure_logging(settings.log_level)
    return settings


async def _fetch(manager: TokenManager, settings: Settings) -> tuple[str, dict[str, Any]]:
    async with manager:
        token = await manager.get_token()
        claims = unverified_claims(token)
        expires_at = manager.expires_at or datetime.now(UTC)
        audience = claims.get("aud", manager.audience)
        granted = granted_scope(manager.scope, claims)
        _, scope_warning = scope_report(settings.auth0_scope, granted)
        warnings = [w for w in (None if claims else JWT_NEEDED, scope_warning) if w]
        report: dict[str, Any] = {
            "token_endpoint": manager.token_url,
            "expires_at": expires_at.isoformat(timespec="seconds"),
            "expires_in": f"{(expires_at - datetime.now(UTC)).total_seconds():.0f}s",
            "audience": " ".join(audience) if isinstance(audience, list) else str(audience or "-"),
            "subject": str(claims.get("sub", "-")),
            "scopes": granted or "-",
            "scopes_requested": settings.auth0_scope or "-",
            "format": "JWT" if claims else "opaque (not a JWT)",
            "warnings": warnings,
        }
        return token, report


def _token_failure(message: str, code: int, as_json: bool) -> typer.Exit:
    """One error, printed once: a JSON object on stdout with ``--json``, else a line on
    stderr."""
    if as_json:
        typer.echo(json.dumps({"error": message, "exit_code": code}, indent=2))
        return typer.Exit(code)
    return _fail(message, code)


@app.command()
def token(
    show_token: Annotated[
        bool, typer.Option("--show-token", help="Also print the access token itself.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (also on failure).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show the log (on stderr).")
    ] = False,
) -> None:
    """Fetch an access token with the current settings and describe it.

    Prints expiry, lifetime, audience, subject, the scopes granted and asked for, and
    warnings (a token that is not a JWT, scopes not granted); replaces the old
    refresh-flyio-auth0-token.sh for debugging. Exits 1 if no token can be had, 2 on bad
    settings.
    """
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise _token_failure(str(exc), 2, as_json) from None
    configure_logging(settings.log_level if verbose else "CRITICAL")
    try:
        manager = TokenManager.from_settings(settings)
    except ValueError:
        raise _token_failure(
            f"no client credentials configured: set {CLIENT_CREDENTIALS_SETTINGS}", 2, as_json
        ) from None
    try:
        access_token, report = asyncio.run(_fetch(manager, settings))
    except TokenError as exc:
        raise _token_failure(str(exc), 1, as_json) from None
    if show_token:
        report["access_token"] = access_token
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    warnings: list[str] = report.pop("warnings")
    width = max(len(key) for key in report) + 2
    for key, value in report.items():
        typer.echo(f"{key.replace('_', ' ').capitalize():<{width}}{value}")
    if not show_token:
        typer.echo(f"{'Access token':<{width}}hidden (pass --show-token to print it)")
    for warning in warnings:
        typer.echo(f"Warning: {warning}", err=True)


@app.command()
def check(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON list (also on bad settings).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show the log (on stderr).")
    ] = False,
) -> None:
    """Check the configuration end to end, one line per step.

    Validates the settings, gets a token, reaches the API (/healthz), opens a sync session
    and lists one page of notes; each failure says which setting to fix. Exits 0 when every
    step passes, 1 otherwise, 2 on bad settings.
    """
    from toolbridge_mcp.check import CheckResult, exit_code, run_checks

    try:
        settings = load_settings()
    except ConfigError as exc:
        results = [CheckResult("settings", "fail", str(exc))]
        code = 2
    else:
        configure_logging(settings.log_level if verbose else "CRITICAL")
        results = asyncio.run(run_checks(settings))
        code = exit_code(results)
    if as_json:
        typer.echo(json.dumps([result.as_dict() for result in results], indent=2))
    else:
        for result in results:
            typer.echo(result.line())
    raise typer.Exit(code)


class Transport(StrEnum):
    """MCP transports: stdio for desktop clients, streamable HTTP (at ``/mcp``) or legacy SSE."""

    stdio = "stdio"
    sse = "sse"
    http = "http"


@app.command()
def serve(
    transport: Annotated[
        Transport, typer.Option("--transport", "-t", help="stdio, sse or http (streamable).")
    ] = Transport.http,
    host: Annotated[
        str | None, typer.Option(help="Bind address (default TOOLBRIDGE_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default TOOLBRIDGE_PORT, 8001).")] = None,
) -> None:
    """Run the MCP server. HTTP serves MCP at /mcp and liveness at /healthz.

    Exits 2 on bad settings, naming the variables to fix.
    """
    from toolbridge_mcp.server import create_server

    # The flags are settings too: the OAuth metadata's default public URL and its checks
    # must see the address actually bound.
    flags = {"host": host, "port": port}
    settings = _settings(**{name: value for name, value in flags.items() if value is not None})
    from toolbridge_mcp.http_guard import exposure_problem, exposure_warning, uvicorn_options

    if Transport(transport) is Transport.sse and settings.stateless_http:
        raise _fail(
            "TOOLBRIDGE_STATELESS_HTTP=true is for streamable HTTP: the SSE transport keeps "
            "each client's stream in one process. Use --transport http, or unset it",
            2,
        )
    if Transport(transport) is not Transport.stdio:
        problem = exposure_problem(settings)
        if problem is not None:
            raise _fail(problem, 2)
        warning = exposure_warning(settings)
        if warning is not None:
            logger.warning(warning)
    server = create_server(settings)
    if Transport(transport) is Transport.stdio:
        server.run("stdio", show_banner=False)
        return
    server.run(
        str(Transport(transport)),  # type: ignore[arg-type]
        show_banner=False,
        host=settings.host,
        port=settings.port,
        uvicorn_config=uvicorn_options(settings),  # limits; our log format
    )


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def dev(ctx: typer.Context) -> None:
    """Run the whole system locally (DEVELOPMENT ONLY): a dev identity provider, the API on
    SQLite and the MCP server. Options: toolbridge-mcp dev --help.

    The stack lives in the dev package (toolbridge_dev), imported only here, when asked for.
    """
    try:
        from toolbridge_dev.stack_cli import app as dev_app
    except ImportError:
        typer.echo("toolbridge-mcp dev needs the development package toolbridge_dev", err=True)
        raise typer.Exit(2) from None
    dev_app(args=list(ctx.args), prog_name="toolbridge-mcp dev")


if __name__ == "__main__":
    app()

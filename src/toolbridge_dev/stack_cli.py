"""``toolbridge-mcp dev``: the options of the local stack (DEVELOPMENT ONLY).

A command of its own so that the production CLI only forwards to it and never imports the
dev package unless asked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolbridge_dev.issuer.config import MAX_TOKEN_LIFETIME_SECONDS
from toolbridge_dev.stack import DEFAULT_REDIS_URL, DevOptions, run

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="MCP server port.", min=1, max=65535)] = 8001,
    api_port: Annotated[int, typer.Option(help="API port.", min=1, max=65535)] = 8081,
    issuer_port: Annotated[
        int, typer.Option(help="Dev identity provider port.", min=1, max=65535)
    ] = 8090,
    token_lifetime: Annotated[
        int,
        typer.Option(
            help="Access-token lifetime in seconds; short, so refreshes show.",
            min=1,
            max=MAX_TOKEN_LIFETIME_SECONDS,
        ),
    ] = 120,
    state_dir: Annotated[
        Path, typer.Option(help="Where the SQLite database and the issuer's key are kept.")
    ] = Path(".toolbridge"),
    seed_demo: Annotated[
        bool, typer.Option("--seed-demo", help="Add a few demo notes and tasks (once).")
    ] = False,
    per_user: Annotated[
        bool,
        typer.Option(
            "--per-user",
            help="Per-user OAuth: MCP clients (the Inspector, Claude) sign their users in at "
            "the dev issuer; the MCP server accepts only tokens issued for itself and exchanges "
            "each for an API token for that user (RFC 8693), instead of using its own.",
        ),
    ] = False,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds each component may take to become ready.", min=1)
    ] = 30.0,
    replicas: Annotated[
        int | None,
        typer.Option(
            help="A fleet: this many MCP servers (stateless HTTP) behind HAProxy on --port, "
            "round-robin without sticky sessions, sharing Redis. Needs haproxy and Redis.",
            min=1,
            max=32,
        ),
    ] = None,
    api_processes: Annotated[
        int | None,
        typer.Option(
            help="A fleet: this many API processes behind HAProxy on --api-port (default 1 "
            "with --replicas).",
            min=1,
            max=32,
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            help=f"The fleet's Redis, shared by every MCP server and API process "
            f"[default: {DEFAULT_REDIS_URL}].",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="The API's database, e.g. postgresql+asyncpg://postgres@127.0.0.1/test "
            "[default: SQLite in the state folder].",
            show_default=False,
        ),
    ] = None,
    api_rate_limit: Annotated[
        int | None,
        typer.Option(
            help="Per-user API requests a minute, burst included [default: the production "
            "600]; raise it for load tests (bench/fleet.py).",
            min=1,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the whole system locally (DEVELOPMENT ONLY): a dev identity provider, the API on
    SQLite and the MCP server at http://127.0.0.1:8001/mcp, wired with generated secrets.

    Ctrl-C stops everything. Exits 2 when a port is taken (naming the flag to change), and
    with --replicas when haproxy or Redis is missing.
    """
    fleet = replicas is not None or api_processes is not None
    if redis_url is not None and not fleet:
        typer.echo(
            "Error: --redis-url is for a fleet: add --replicas N (one MCP server and one API "
            "need no Redis)",
            err=True,
        )
        raise typer.Exit(2)
    options = DevOptions(
        state_dir=state_dir,
        mcp_port=port,
        api_port=api_port,
        issuer_port=issuer_port,
        token_lifetime=token_lifetime,
        seed_demo=seed_demo,
        per_user=per_user,
        startup_timeout=startup_timeout,
        replicas=replicas,
        api_processes=api_processes,
        redis_url=redis_url or DEFAULT_REDIS_URL,
        database_url=database_url,
        api_rate_limit=api_rate_limit,
    )
    raise typer.Exit(run(options))

"""``toolbridge-mcp dev``: the options of the local stack (DEVELOPMENT ONLY).

A command of its own so that the production CLI only forwards to it and never imports the
dev package unless asked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolbridge_dev.issuer.config import MAX_TOKEN_LIFETIME_SECONDS
from toolbridge_dev.stack import DevOptions, run

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
) -> None:
    """Run the whole system locally (DEVELOPMENT ONLY): a dev identity provider, the API on
    SQLite and the MCP server at http://127.0.0.1:8001/mcp, wired with generated secrets.

    Ctrl-C stops everything. Exits 2 when a port is taken (naming the flag to change).
    """
    options = DevOptions(
        state_dir=state_dir,
        mcp_port=port,
        api_port=api_port,
        issuer_port=issuer_port,
        token_lifetime=token_lifetime,
        seed_demo=seed_demo,
        per_user=per_user,
        startup_timeout=startup_timeout,
    )
    raise typer.Exit(run(options))

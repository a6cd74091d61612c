"""The ``toolbridge-dev-issuer`` command line: serve the DEVELOPMENT ONLY issuer, or mint a
user's access token with its key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
import uvicorn

from toolbridge_common.logs import configure_logging
from toolbridge_common.settings import ConfigError
from toolbridge_dev.issuer.app import create_app
from toolbridge_dev.issuer.client_auth import KeyParseError
from toolbridge_dev.issuer.clients import ClientStoreError
from toolbridge_dev.issuer.config import (
    MAX_TOKEN_LIFETIME_SECONDS,
    IssuerSettings,
    env_name,
    load_issuer_settings,
)
from toolbridge_dev.issuer.keys import SigningKey, SigningKeyError, load_or_create_signing_key
from toolbridge_dev.issuer.tokens import mint_user_token

_HELP = (
    "DEVELOPMENT ONLY: a local, Auth0-shaped OAuth authorization server that issues ToolBridge "
    "access tokens (client credentials; users sign in on its login page with the authorization "
    "code flow; or `mint` for a user). Never expose it or use it in production."
)

app = typer.Typer(
    name="toolbridge-dev-issuer",
    help=_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """DEVELOPMENT ONLY: a local, Auth0-shaped OAuth authorization server that issues ToolBridge
    access tokens (client credentials; users sign in on its login page with the authorization
    code flow; or `mint` for a user). Never expose it or use it in production."""


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: object) -> IssuerSettings:
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        settings = load_issuer_settings(**given)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    configure_logging(settings.log_level)
    return settings


def _key(settings: IssuerSettings) -> SigningKey:
    try:
        return load_or_create_signing_key(settings.state_dir)
    except SigningKeyError as exc:
        raise _fail(str(exc), 1) from None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default TOOLBRIDGE_DEV_ISSUER_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind (default TOOLBRIDGE_DEV_ISSUER_PORT).")
    ] = None,
) -> None:
    """DEVELOPMENT ONLY: serve the token endpoint, the authorization endpoint with its login
    page, client registration, the JWKS and discovery metadata with uvicorn; settings from
    TOOLBRIDGE_DEV_ISSUER_* variables and .env.

    The signing key and the registered clients are kept in TOOLBRIDGE_DEV_ISSUER_STATE_DIR,
    so tokens and registrations survive restarts; codes and refresh tokens do not.
    """
    settings = _settings(host=host, port=port)
    try:
        application = create_app(settings, _key(settings))
    except ClientStoreError as exc:
        raise _fail(str(exc), 1) from None
    except KeyParseError as exc:  # a key file changed since the settings were read
        raise _fail(f"{env_name('client_keys')}: {exc}", 2) from None
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        # h11 refuses a request line plus headers past the limit while reading them (the
        # default parser, httptools, buffers headers of any size); the app limits the rest.
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        ws="none",
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )


@app.command()
def mint(
    sub: Annotated[str, typer.Option(help="The user the token is for (its sub claim).")],
    audience: Annotated[
        str | None,
        typer.Option(help="One of TOOLBRIDGE_DEV_ISSUER_AUDIENCES (default: the first)."),
    ] = None,
    lifetime: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_TOKEN_LIFETIME_SECONDS,
            help="Seconds until it expires (default TOOLBRIDGE_DEV_ISSUER_TOKEN_LIFETIME_SECONDS).",
        ),
    ] = None,
    scope: Annotated[str | None, typer.Option(help="Space-separated scopes to include.")] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print token, sub, aud and expires_at as JSON.")
    ] = False,
) -> None:
    """DEVELOPMENT ONLY: print a user's access token signed with the issuer's key (created if
    absent), for trying the API or the MCP server's per-user mode as that user."""
    settings = _settings()
    if not sub.strip():
        raise _fail("--sub must not be empty", 2)
    chosen = audience or settings.default_audience
    if chosen not in settings.audiences:
        raise _fail(
            f"audience {chosen} is not registered; use one of {', '.join(settings.audiences)} "
            f"or add it to {env_name('audiences')}",
            2,
        )
    minted = mint_user_token(
        _key(settings),
        issuer=settings.issuer_url,
        subject=sub,
        audience=chosen,
        lifetime_seconds=lifetime or settings.token_lifetime_seconds,
        scope=scope,
    )
    if not json_output:
        typer.echo(minted.token)
        return
    expires_at = datetime.fromtimestamp(minted.expires_at, UTC)
    report = {
        "token": minted.token,
        "sub": sub,
        "aud": chosen,
        "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
    }
    typer.echo(json.dumps(report))

"""Writes docs/configuration.md from the settings classes; ``--check`` only compares.

    uv run python scripts/gen_config_docs.py           # regenerate docs/configuration.md
    uv run python scripts/gen_config_docs.py --check   # exit 1 if it is out of date

Each variable's name, type, constraints and default come from the pydantic field; its
description from the field's ``description``. ``PENDING_DESCRIPTIONS`` holds the text of the
fields that have none yet: move an entry into ``Field(description=...)`` and delete it here
(tests/test_docs.py fails while an entry is shadowed by a real description, or names a field
that no longer exists). This script lives outside the packages because it imports all three
settings modules, which no package may do (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from toolbridge_api.config import ApiSettings, DatabaseSettings
from toolbridge_dev.issuer.config import IssuerSettings
from toolbridge_mcp.config import Settings

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"


@dataclass(frozen=True)
class Section:
    """One settings class and the prose around its table."""

    title: str
    settings: type[BaseSettings]
    intro: str


SECTIONS: tuple[Section, ...] = (
    Section(
        "MCP server",
        Settings,
        """\
Read by `toolbridge-mcp serve`, `check` and `token` and by `python -m toolbridge_mcp.server`.
An empty value of an optional variable (`FOO=` in a `.env` file or a Fly secret) counts as unset.

How the server authenticates to the API follows from what is set (`Settings.auth_mode()`):
**auth0** when the client-credentials block is set (client id; secret, or a private key for
`private_key_jwt`; token URL, issuer to discover it from, or Auth0 domain with an audience);
**static** when only `TOOLBRIDGE_JWT_TOKEN` is set;
**passthrough** (each MCP caller's own token, forwarded: legacy, not MCP-spec conformant) only
with `TOOLBRIDGE_OAUTH_PASSTHROUGH=true`; **token_exchange** otherwise — per-user: callers sign
in at `TOOLBRIDGE_OAUTH_ISSUER` and their tokens are exchanged for API tokens for
`TOOLBRIDGE_OAUTH_EXCHANGE_AUDIENCE` ([per-user OAuth](OAUTH-PER-USER-AUTH.md)); with neither
set the server starts, but every tool call says what to configure. A half-configured
client-credentials block, a tenant id without its secret (or the reverse), half of the
per-user settings, or `TOOLBRIDGE_OAUTH_*` variables outside the per-user modes are start-up
errors naming the variables — never a silent fall-back to another mode. See
[the MCP server](mcp-server.md#auth-modes).

URLs that tokens travel to or are vouched for by (`TOOLBRIDGE_AUTH0_TOKEN_URL`,
`TOOLBRIDGE_OAUTH_ISSUER`, `TOOLBRIDGE_OAUTH_JWKS_URL`, `TOOLBRIDGE_OAUTH_EXCHANGE_URL`,
`TOOLBRIDGE_PUBLIC_URL`) must be `https://`, except on loopback hosts;
`TOOLBRIDGE_AUTH0_DOMAIN` also accepts `https://host/`. `TOOLBRIDGE_OAUTH_ISSUER` is the
callers' `iss` exactly (Auth0: with the trailing slash). Callers' tokens must be issued for
this server: `TOOLBRIDGE_OAUTH_AUDIENCE`, by default its resource URL
`{TOOLBRIDGE_PUBLIC_URL}/mcp`; `TOOLBRIDGE_PUBLIC_URL` is needed when `TOOLBRIDGE_HOST` is not
a loopback address. `TOOLBRIDGE_GO_API_BASE_URL` must not contain a user name or password.""",
    ),
    Section(
        "ToolBridge API",
        ApiSettings,
        """\
Read by `toolbridge-api serve`. Token verification needs a JWKS URL (given, derived from
`TOOLBRIDGE_API_AUTH0_DOMAIN` as `https://{domain}/.well-known/jwks.json`, with the issuer
`https://{domain}/`, or discovered from `TOOLBRIDGE_API_ISSUER` alone: its metadata's
`jwks_uri`) or the development HS256 secret, and then an audience; a JWKS URL needs an issuer.
With neither, only the development-only `X-Debug-Sub` mode can authenticate, so it
must be switched on explicitly (`TOOLBRIDGE_API_DEBUG_SUB_ENABLED=true`), else the start fails.
Token exchange (`POST /auth/token-exchange`, RFC 8693) is on when
`TOOLBRIDGE_API_EXCHANGE_SUBJECT_AUDIENCE` is set (the MCP server's resource URL); the API then
signs short-lived tokens with its own key (created on first start) and accepts them next to the
identity provider's ([per-user OAuth](OAUTH-PER-USER-AUTH.md)). See [the API](api.md#security).""",
    ),
    Section(
        "Dev identity provider (development only)",
        IssuerSettings,
        """\
Read by `toolbridge-dev-issuer serve` and `mint`. `toolbridge-mcp dev` sets these itself for the
issuer it starts (and runs every component inside its state folder, so neither a `.env` of
your working folder nor `TOOLBRIDGE_*` variables of your shell reach them).
`TOOLBRIDGE_DEV_ISSUER_CLIENTS` registers the clients that may get tokens;
`TOOLBRIDGE_DEV_ISSUER_ISSUER_URL` is the `iss` of its tokens (with a trailing slash) and the
base of its metadata. See [the dev issuer](dev-issuer.md).""",
    ),
)

PENDING_DESCRIPTIONS: dict[tuple[type[BaseSettings], str], str] = {
    # MCP server
    (Settings, "tenant_id"): "Tenant the server acts for: sent, HMAC-signed, as "
    "`X-TB-Tenant-ID` on every API request; set together with `TOOLBRIDGE_TENANT_HEADER_SECRET`.",
    (Settings, "tenant_header_secret"): "Secret the tenant headers are signed with (the API's "
    "`TOOLBRIDGE_API_TENANT_SECRET`); set both or neither.",
    (Settings, "go_api_base_url"): "Base URL of the ToolBridge API.",
    (Settings, "auth0_client_id"): "OAuth2 client id (Auth0: a machine-to-machine application); "
    "setting it selects auth0 mode.",
    (Settings, "auth0_client_secret"): "Its secret; never logged or shown.",
    (Settings, "auth0_audience"): "API identifier asked for (`audience`); required with a domain.",
    (Settings, "auth0_scope"): "Space-separated scopes to ask for.",
    (Settings, "auth0_timeout_seconds"): "HTTP timeout of one token request.",
    (Settings, "log_level"): "Log level (case-insensitive).",
    (Settings, "host"): "Where the MCP server listens; `serve --host` overrides it. Beyond "
    "loopback only in per-user mode or with TOOLBRIDGE_ALLOW_UNAUTHENTICATED_NETWORK.",
    (Settings, "port"): "Its port; `serve --port` overrides it.",
    (Settings, "max_timestamp_skew_seconds"): "Tenant-signature clock window.",
    # API
    (ApiSettings, "database_url"): "SQLAlchemy async URL: SQLite (file created on first "
    "start) or `postgresql+asyncpg://user@host/db`.",
    (ApiSettings, "log_level"): "Log level.",
    (ApiSettings, "auth0_domain"): "Auth0 tenant host; derives the JWKS URL and the issuer.",
    (ApiSettings, "jwks_url"): "Signing keys of any other OAuth2 server; needs "
    "`TOOLBRIDGE_API_ISSUER`.",
    (ApiSettings, "issuer"): "The `iss` tokens must carry exactly. Alone (no JWKS URL, domain "
    "or HS256 secret) it is enough: the JWKS URL is its metadata's `jwks_uri`.",
    (ApiSettings, "audience"): "Audience access tokens must carry; required to verify tokens.",
    (ApiSettings, "hs256_secret"): "Development only: also accept HS256 tokens signed with it "
    "(at least 32 bytes).",
    (ApiSettings, "debug_sub_enabled"): "Development only: trust an `X-Debug-Sub` header as the "
    "user, without a token (logged loudly).",
    (ApiSettings, "tenant_secret"): "Require HMAC tenant headers signed with it.",
    (ApiSettings, "max_timestamp_skew_seconds"): "Tenant-signature clock window.",
    (ApiSettings, "host"): "Where the API listens; `serve --host` overrides it.",
    (ApiSettings, "port"): "Its port; `serve --port` overrides it.",
    (ApiSettings, "rate_limit_requests"): "Per-user rate limit: requests per window.",
    (ApiSettings, "rate_limit_window_seconds"): "Per-user rate limit: the window.",
    (ApiSettings, "rate_limit_burst"): "Per-user rate limit: requests allowed at once.",
    (ApiSettings, "session_ttl_seconds"): "Sync session lifetime, counted from creation.",
    (ApiSettings, "max_body_bytes"): "Larger request bodies get 413.",
    # Dev issuer
    (IssuerSettings, "host"): "Where it listens; loopback only unless "
    "`TOOLBRIDGE_DEV_ISSUER_ALLOW_REMOTE=true`.",
    (IssuerSettings, "port"): "Its port.",
    (IssuerSettings, "state_dir"): "Where the signing key is kept (`signing-key.pem`).",
    (IssuerSettings, "token_lifetime_seconds"): "`expires_in` of issued tokens.",
    (IssuerSettings, "audiences"): "APIs tokens may be issued for; the first is the default.",
    (IssuerSettings, "log_level"): "Log level (case-insensitive).",
}


def description(settings: type[BaseSettings], name: str, info: FieldInfo) -> str:
    """The field's description (reST ````code```` made Markdown), else the pending one."""
    text = info.description or PENDING_DESCRIPTIONS.get((settings, name), "")
    return re.sub(r"``([^`]+)``", r"`\1`", text).replace("|", "\\|").replace("\n", " ")


def type_name(annotation: Any) -> str:
    """A reader's name for a field type, as a value in an environment variable."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args if arg is not type(None))
    if origin is Literal:
        return " or ".join(f"`{value}`" for value in args)
    if origin is list:
        return f"JSON list of {type_name(args[0])}s"
    if origin is dict:
        return f"JSON object of {type_name(args[1])}s"
    names = {
        str: "string",
        SecretStr: "secret",
        bool: "boolean",
        int: "integer",
        float: "number",
        Path: "path",
    }
    if annotation in names:
        return names[annotation]
    raise TypeError(f"no documented name for the settings type {annotation!r}: add one")


def constraints(info: FieldInfo) -> Iterator[str]:
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge):
            yield f"≥ {rule.ge}"
        elif isinstance(rule, annotated_types.Gt):
            yield f"> {rule.gt}"
        elif isinstance(rule, annotated_types.Le):
            yield f"≤ {rule.le}"
        elif isinstance(rule, annotated_types.Lt):
            yield f"< {rule.lt}"
        elif isinstance(rule, annotated_types.MinLen):
            yield f"at least {rule.min_length}"
        elif isinstance(rule, annotated_types.MaxLen):
            yield f"at most {rule.max_length}"


def type_cell(info: FieldInfo) -> str:
    rules = list(constraints(info))
    return type_name(info.annotation) + (f" ({', '.join(rules)})" if rules else "")


def default_cell(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def env_var(settings: type[BaseSettings], name: str) -> str:
    return f"{settings.model_config.get('env_prefix', '')}{name}".upper()


def table(settings: type[BaseSettings]) -> list[str]:
    lines = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for name, info in settings.model_fields.items():
        lines.append(
            f"| `{env_var(settings, name)}` | {type_cell(info)} | {default_cell(info)} "
            f"| {description(settings, name, info)} |"
        )
    return lines


def render() -> str:
    """The whole page."""
    out = [
        "<!-- Generated by scripts/gen_config_docs.py from the settings classes: do not edit. -->",
        "<!-- Regenerate: uv run python scripts/gen_config_docs.py; tests/test_docs.py checks. -->",
        "",
        "# Configuration",
        "",
        "Every component is configured through environment variables, or a `.env` file in the",
        "working directory (variable names are case-insensitive; variables of the environment",
        "win over the file). A setting that cannot be used stops the command with exit code 2",
        "and one line per problem, each naming the variable to fix; values are never echoed, so",
        "no secret reaches the terminal or a log.",
        "",
        "Command-line flags, where a command has them (`--host`, `--port`), override the",
        "variables. A `secret` is never logged or shown.",
    ]
    for section in SECTIONS:
        settings = section.settings
        prefix = settings.model_config.get("env_prefix", "")
        out += [
            "",
            f"## {section.title}",
            "",
            f"`{settings.__module__}.{settings.__qualname__}`, variables `{prefix}*`.",
            "",
            section.intro,
            "",
            *table(settings),
        ]
        if settings is ApiSettings:
            names = ", ".join(
                f"`{env_var(DatabaseSettings, n)}`" for n in DatabaseSettings.model_fields
            )
            out += [
                "",
                f"`toolbridge-api migrate` reads only `{DatabaseSettings.__module__}."
                f"{DatabaseSettings.__qualname__}`: {names}.",
            ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    page = render()
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if args.check:
        if current != page:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run {Path(__file__).name}")
            return 1
        return 0
    if current != page:
        OUTPUT.write_text(page, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

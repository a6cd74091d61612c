"""The two HTML pages of the DEVELOPMENT ONLY issuer: the login page (pick a dev user, no
password) and the error page shown when an authorization request cannot be sent back to the
client. Every value is HTML-escaped; the pages load nothing and may not be framed."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from starlette.responses import HTMLResponse

from toolbridge_dev.issuer.config import USER_NAME
from toolbridge_dev.issuer.grants import Authorization

_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;
color:#1a1a1a}
.dev{background:#b00020;color:#fff;padding:.6rem .8rem;border-radius:.3rem;font-weight:600}
.error{background:#fdecea;border:1px solid #b00020;padding:.6rem .8rem;border-radius:.3rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem}dt{color:#555}
dd{margin:0;overflow-wrap:anywhere}form{margin:.5rem 0}
button{font-size:1rem;padding:.4rem .9rem;margin:.2rem .3rem .2rem 0;cursor:pointer}
input[type=text]{font-size:1rem;padding:.35rem}.deny button{background:none;border:none;
color:#555;text-decoration:underline;padding:0}
"""

_BANNER = (
    '<p class="dev">DEVELOPMENT ONLY — the ToolBridge dev identity provider. There are no '
    "passwords: anyone who can open this page can sign in as anyone. Never use it in "
    "production.</p>"
)


def _page(title: str, body: str, status: int) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} — ToolBridge dev issuer (DEVELOPMENT ONLY)</title>"
        f"<style>{_STYLE}</style></head><body><main>{_BANNER}{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def login_page(
    request_id: str,
    authorization: Authorization,
    users: Sequence[str],
    *,
    allow_any_user: bool,
    action: str,
    login_hint: str | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    """Pick a user: one button per configured user, a name field if any name may sign in,
    and a way to decline (``access_denied`` back to the client). Consent is implied."""
    hidden = f'<input type="hidden" name="request" value="{escape(request_id)}">'
    rows = [
        ("Application", authorization.client_label),
        ("Returns to", authorization.redirect_uri),
        ("Access for", authorization.resource),
    ]
    if authorization.scope:
        rows.append(("Scope", authorization.scope))
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    parts = [
        "<h1>Sign in</h1>",
        f"<p>{escape(authorization.client_label)} asks for access as the user you choose. "
        "Signing in grants it (consent is implied).</p>",
        f"<dl>{details}</dl>",
    ]
    if problem:
        parts.append(f'<p class="error" role="alert">{escape(problem)}</p>')
    if users:
        buttons = "".join(
            f'<form method="post" action="{escape(action)}">{hidden}'
            f'<button type="submit" name="user" value="{escape(user)}">'
            f"Sign in as {escape(user)}</button></form>"
            for user in users
        )
        parts.append(f"<h2>Dev users</h2>{buttons}")
    if allow_any_user:
        value = f' value="{escape(login_hint)}"' if login_hint else ""
        parts.append(
            f'<h2>Another user</h2><form method="post" action="{escape(action)}">{hidden}'
            '<label for="username">User name</label> '
            f'<input type="text" id="username" name="username" required maxlength="64"'
            f' pattern="{escape(USER_NAME.pattern)}" autocomplete="username"{value}> '
            '<button type="submit">Sign in</button></form>'
        )
    parts.append(
        f'<form class="deny" method="post" action="{escape(action)}">{hidden}'
        '<button type="submit" name="deny" value="1">Cancel and return to the application'
        "</button></form>"
    )
    return _page("Sign in", "".join(parts), 400 if problem else 200)


def error_page(title: str, description: str, status: int = 400) -> HTMLResponse:
    """An authorization request that cannot be answered to the client (RFC 6749 §4.1.2.1:
    unknown client, or a redirect URI that is missing, invalid or not registered)."""
    return _page(
        title,
        f'<h1>{escape(title)}</h1><p class="error" role="alert">{escape(description)}</p>'
        "<p>The application could not be told, because where to send the answer is not "
        "known to be the application's. Fix the request (or the client's registration) and "
        "start the sign-in again.</p>",
        status,
    )

"""Redis as the fleet uses it, said once for the API, the MCP server and the dev stack: which
URLs are accepted, how they are shown (never with a password), and a client that gives up
quickly instead of retrying — a process that cannot reach Redis falls back to its own state,
so waiting longer on Redis would only hold up the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
EXAMPLE = "redis://127.0.0.1:6379/0"


def redis_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a Redis URL (to follow the setting's name in a message;
    it never repeats the URL, which may hold a password), or ``None`` if it is usable."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if not port_ok:
        return "is not a valid URL (check the host and port)"
    if parts.scheme not in REDIS_SCHEMES:
        return f"must start with redis://, rediss:// (TLS) or unix:// (e.g. {EXAMPLE})"
    if parts.scheme == "unix":
        return None if parts.path else "needs the socket's path, e.g. unix:///run/redis.sock"
    if not parts.hostname:
        return f"needs a host, e.g. {EXAMPLE}"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "must end in a database number, e.g. /0"
    return None


def redacted_url(url: str) -> str:
    """``url`` for messages and logs: its password (if any) shown as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def redis_client(url: str, *, timeout: float, decode_responses: bool = False) -> Redis:
    """An asyncio client of ``url`` that gives up after ``timeout`` seconds (connecting, or
    waiting for an answer) and never retries."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=decode_responses,
    )
    return client

"""A stand-in for the ToolBridge API that answers from memory: a sync session, one note and a
page of notes, each a fixed JSON body. It costs the caller nothing but the HTTP exchange, so
a client's own CPU per call can be measured against it. Serves until killed.

Run: ``python -m bench.fake_api PORT`` (the benchmarks start it as a child process).
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UID = "0b8c6d3e-5a1f-4c2b-9d7e-3f4a5b6c7d8e"
PAGE_SIZE = 10


def _item(n: int) -> dict[str, object]:
    uid = UID if n == 0 else f"0b8c6d3e-5a1f-4c2b-9d7e-{n:012d}"
    return {
        "uid": uid,
        "version": 3,
        "updatedAt": "2026-11-27T10:00:00.000Z",
        "deletedAt": None,
        "payload": {
            "uid": uid,
            "title": f"note {n}",
            "content": "Some text of a note, a sentence or two long, as notes are.",
            "tags": ["work", "ideas"],
            "pinned": False,
            "sync": {"version": 3, "isDeleted": False},
            "updatedTs": "2026-11-27T10:00:00.000Z",
        },
    }


ITEM = json.dumps(_item(0)).encode()
PAGE = json.dumps(
    {"items": [_item(n) for n in range(PAGE_SIZE)], "nextCursor": "Y3Vyc29y"}
).encode()
SESSION = json.dumps(
    {"id": "session-1", "epoch": 1, "userId": "bench", "expiresAt": "2099-01-01T00:00:00Z"}
).encode()


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type="application/json")


async def session(request: Request) -> Response:
    del request
    return _json(SESSION, 201)


async def note(request: Request) -> Response:
    del request
    return _json(ITEM)


async def notes(request: Request) -> Response:
    del request
    return _json(PAGE)


async def healthz(request: Request) -> Response:
    del request
    return _json(b'{"status":"ok"}')


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/v1/sync/sessions", session, methods=["POST"]),
        Route("/v1/notes", notes),
        Route("/v1/notes/{uid}", note),
    ]
)


def main() -> None:
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()

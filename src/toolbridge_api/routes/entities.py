"""One router factory for every entity of the contract (:data:`toolbridge_api.entities.ENTITIES`):
the REST routes with the original API's semantics (docs/adr/0004-original-contract.md)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError, create_model
from pydantic_core import to_json

from toolbridge_api.db.store import (
    Gone,
    Item,
    KeyReused,
    NotFound,
    Once,
    ParentMissing,
    Refused,
    VersionMismatch,
    Written,
)
from toolbridge_api.entities import MAX_PAYLOAD_DEPTH, Entity, canonical_uid
from toolbridge_api.errors import ApiError
from toolbridge_api.routes.context import StoreDep, SyncedCaller
from toolbridge_api.routes.models import ItemOut, ItemPage, ProcessIn, error_responses
from toolbridge_common.contract import (
    DEFAULT_LIST_LIMIT,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_IDEMPOTENT_REPLAYED,
    MAX_LIST_LIMIT,
    decode_cursor,
    encode_cursor,
    format_ms,
)

DEFAULT_LIMIT = DEFAULT_LIST_LIMIT
MAX_LIMIT = MAX_LIST_LIMIT
IGNORED_PATCH_KEYS = frozenset({"uid", "sync"})
"""Top-level keys a PATCH cannot change (the server owns them), as in the original."""

_BODY_AFTER_LOOKUP = frozenset({"task_lists", "task_list_categories"})
"""Entities whose ``process`` looks the item up before reading the body (the original's
handlers for these two do it in that order: 404/410 win over a malformed body)."""

Limit = Annotated[
    int,
    Query(
        ge=1,
        description=f"Page size: {DEFAULT_LIST_LIMIT} if absent; larger than {MAX_LIST_LIMIT}"
        f" is read as {MAX_LIST_LIMIT}.",
    ),
]
Cursor = Annotated[
    str | None,
    Query(
        max_length=200,
        description="The nextCursor of a previous page (of this API or the original's).",
    ),
]
IncludeDeleted = Annotated[
    Literal["true", "false"],
    Query(alias="includeDeleted", description="true: soft-deleted items too."),
]
IfMatch = Annotated[
    str | None,
    Header(
        description="Only change the item if its version is this one (else 412); * is any.",
        pattern=r'^(\*|(W/)?"?[0-9]{1,18}"?)$',
    ),
]
IDEMPOTENCY_KEY_HEADER = HEADER_IDEMPOTENCY_KEY
REPLAYED_HEADER = HEADER_IDEMPOTENT_REPLAYED
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        description="Makes a retried write safe: the first request with this key is applied "
        "and its result remembered (24 h by default); a repeat with the same key, method, path, "
        "If-Match and body gets that result again (with Idempotent-Replayed: true) and writes "
        "nothing; the key with a different request is a 422. 1-255 visible ASCII characters, "
        "e.g. a UUID; per user.",
    ),
]
Uid = uuid.UUID

_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """OpenAPI for a JSON body the route reads itself (to check it in the original's order)."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def checked_json(value: Any, where: str) -> Any:
    """``value`` if every database and client can store it: nesting at most
    ``MAX_PAYLOAD_DEPTH`` deep, finite numbers only, text that is valid Unicode; 400 if not.

    Python's JSON parser accepts NaN, Infinity and lone surrogates, which PostgreSQL refuses
    and JSON cannot represent; refusing them here means nothing unreadable is ever stored.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH and isinstance(node, dict | list):
            raise ApiError(400, f"{where} is nested more than {MAX_PAYLOAD_DEPTH} levels deep")
        if isinstance(node, float) and not math.isfinite(node):
            raise ApiError(400, f"{where} contains NaN or Infinity, which JSON does not allow")
        if isinstance(node, str):
            _check_text(node, where)
        elif isinstance(node, dict):
            for key, item in node.items():
                _check_text(key, where)
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
    return value


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{where} contains invalid Unicode (a lone surrogate)") from None


def _invalid(kind: str, msg: str, loc: tuple[Any, ...] = ("body",), **extra: Any) -> Exception:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None, **extra}])


def read_json(raw: bytes) -> Any:
    """The JSON value of a request body; 400 (as FastAPI words it) if there is none."""
    if not raw.strip():
        raise _invalid("missing", "Field required")
    try:
        return json.loads(raw)
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "the body is not UTF-8"
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else 0
        raise _invalid(
            "json_invalid", "JSON decode error", ("body", position), ctx={"error": detail}
        ) from None


def read_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (checked with :func:`checked_json`)."""
    value = read_json(raw)
    if not isinstance(value, dict):
        raise _invalid("dict_type", "Input should be a valid dictionary")
    result: dict[str, Any] = checked_json(value, "body")
    return result


def read_process(raw: bytes) -> ProcessIn:
    """A ``process`` body: ``{"action": str, "metadata": object}``, nothing else."""
    value = checked_json(read_json(raw), "body")
    try:
        return ProcessIn.model_validate(value)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


def clamp_limit(limit: int) -> int:
    return min(limit, MAX_LIST_LIMIT)


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The position a cursor continues after (None: the beginning); 400 if it is no cursor."""
    if cursor is None:
        return None
    position = decode_cursor(cursor)
    if position is None:
        raise ApiError(400, "cursor is invalid: pass the nextCursor of a previous page as is")
    return position


def next_cursor(items: list[Item]) -> str | None:
    """The cursor after the last item of a page; None for an empty page (the end)."""
    return encode_cursor(items[-1].updated_ms, items[-1].uid) if items else None


def parse_if_match(value: str | None) -> int | None:
    """The version in ``If-Match`` (``3``, ``"3"`` or ``W/"3"``); 400 if it is not one.
    ``*`` (RFC 9110: any current representation) is no version constraint."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ApiError(400, "If-Match must be an item version, e.g. If-Match: 3")
    return int(text)


def item_json(item: Item) -> dict[str, Any]:
    """An item as the original answers it: ``deletedAt`` only when deleted."""
    body: dict[str, Any] = {
        "uid": item.uid,
        "version": item.version,
        "updatedAt": format_ms(item.updated_ms),
    }
    if item.deleted_ms is not None:
        body["deletedAt"] = format_ms(item.deleted_ms)
    body["payload"] = item.payload
    return body


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``body`` serialised directly: the response models document the shape, re-validating
    what the store just returned would only cost time."""
    return Response(
        to_json(body), status_code=status_code, media_type="application/json", headers=headers
    )


def _answer(item: Item, status_code: int = 200, *, replayed: bool = False) -> Response:
    """The item as JSON with its version as ETag."""
    headers = {"ETag": f'"{item.version}"'}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return json_response(item_json(item), status_code, headers)


def _answer_written(written: Written, status_code: int = 200) -> Response:
    """A write's item; a remembered one (same Idempotency-Key) says so in a header."""
    return _answer(written.item, status_code, replayed=written.replayed)


def parse_idempotency_key(value: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header (a quoted string's content, as the IETF draft
    sends it, or the bare value); 400 if it is not 1-255 visible ASCII characters."""
    if value is None:
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not _IDEMPOTENCY_KEY.fullmatch(text):
        raise ApiError(
            400,
            f"{IDEMPOTENCY_KEY_HEADER} must be 1-255 visible ASCII characters (e.g. a UUID)",
        )
    return text


def _fingerprint(operation: str, if_match: str | None, raw: bytes) -> str:
    """What identifies a request for its Idempotency-Key: the operation (route and uid), the
    If-Match value and the body (as canonical JSON when it is JSON, else its bytes)."""
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        body = raw
    digest = hashlib.sha256()
    for part in (operation.encode(), (if_match or "").strip().encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def once(
    request: Request,
    key: str | None,
    operation: str,
    status: int,
    *,
    if_match: str | None = None,
    raw: bytes = b"",
) -> Once | None:
    """The store's :class:`Once` for a write carrying ``Idempotency-Key`` (None without)."""
    parsed = parse_idempotency_key(key)
    if parsed is None:
        return None
    ttl = timedelta(seconds=request.app.state.settings.idempotency_key_ttl_seconds)
    return Once(parsed, _fingerprint(operation, if_match, raw), status, ttl)


def _gone(kind: Entity, uid: str, deleted_ms: int, *, already: bool = False) -> ApiError:
    what = "already deleted" if already else "deleted"
    hint = "" if already else " (GET with includeDeleted=true still shows it)"
    return ApiError(
        410, f"{kind.label} {what}: {uid}{hint}", extra={"deletedAt": format_ms(deleted_ms)}
    )


@contextlib.contextmanager
def _answers(kind: Entity, uid: str, *, deleting: bool = False) -> Iterator[None]:
    """Turns the store's refusals into this entity's error answers."""
    try:
        yield
    except NotFound:
        raise ApiError(404, f"{kind.label} not found: {uid}") from None
    except Gone as gone:
        raise _gone(kind, uid, gone.deleted_ms, already=deleting) from None
    except VersionMismatch as mismatch:
        raise ApiError(
            412,
            f"version mismatch: If-Match is {mismatch.expected}, current version is"
            f" {mismatch.current}",
            extra={"version": mismatch.current},
        ) from None
    except ParentMissing as missing:
        parent = {"type": missing.parent.label, "uid": missing.parent.uid}
        raise ApiError(404, str(missing), extra={"parent": parent}) from None
    except Refused as refused:
        raise ApiError(400, str(refused)) from None
    except KeyReused as reused:
        raise ApiError(
            422,
            f"{IDEMPOTENCY_KEY_HEADER} {reused.key[:64]} was already used for a different request"
            " (another route, item, If-Match or body): send a new key for a new request",
        ) from None


def _client_uid(body: dict[str, Any]) -> str:
    """The uid a create keeps: the client's (a UUID) or, if it sent none, a new one."""
    raw = body.get("uid")
    if raw is None:
        return str(uuid.uuid4())
    uid = canonical_uid(raw)
    if uid is None:
        raise ApiError(400, "uid must be a UUID string, or left out for the server to choose one")
    return uid


def _process_schema(kind: Entity) -> dict[str, Any]:
    """``ProcessIn`` whose ``action`` lists this entity's actions in the schema (as an enum)
    while validation stays with the route, which answers with the valid actions."""
    model = create_model(
        f"{kind.singular.title().replace('_', '')}Process",
        __base__=ProcessIn,
        action=(
            str,
            Field(description=ProcessIn.ACTION, json_schema_extra={"enum": [*kind.actions]}),
        ),
    )
    return model.model_json_schema()


def entity_router(kind: Entity) -> APIRouter:
    """The REST routes of one entity: list, create, get, replace, patch, delete, archive,
    process. Every route needs a valid sync session and epoch, and sees only the caller's
    items (others' uids are 404, never 403, so they cannot be probed)."""
    name = kind.name
    router = APIRouter(
        prefix=kind.path,
        tags=[name],
        responses=error_responses(
            400, 401, 403, 404, 408, 409, 410, 412, 413, 422, 428, 429, 431, 503
        ),
    )
    valid_actions = ", ".join(kind.actions)

    @router.get("", response_model=ItemPage, operation_id=f"list_{name}", summary=f"List {name}")
    async def list_items(
        caller: SyncedCaller,
        store: StoreDep,
        limit: Limit = DEFAULT_LIST_LIMIT,
        cursor: Cursor = None,
        include_deleted: IncludeDeleted = "false",
    ) -> Response:
        """A page in (updated time, uid) order: an item changed later moves to the end."""
        items = list(
            await store.list_items(
                caller,
                name,
                after=parse_cursor(cursor),
                limit=clamp_limit(limit),
                include_deleted=include_deleted == "true",
            )
        )
        page: dict[str, Any] = {"items": [item_json(item) for item in items]}
        if (following := next_cursor(items)) is not None:
            page["nextCursor"] = following
        return json_response(page)

    @router.post(
        "",
        status_code=201,
        response_model=ItemOut,
        operation_id=f"create_{name}",
        summary=f"Create {name} (a client uid is kept; an existing uid is updated)",
        openapi_extra=_json_body(_OBJECT_SCHEMA, "The item's payload: a JSON object."),
    )
    async def create_item(
        caller: SyncedCaller,
        store: StoreDep,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """With ``Idempotency-Key``, a retry of this create (say after a timeout) gets the
        first result instead of creating a second item when the server chose the uid."""
        raw = await request.body()
        body = read_object(raw)
        uid = _client_uid(body)
        key = once(request, idempotency_key, f"create {name}", 201, raw=raw)
        with _answers(kind, uid):
            written = await store.write_item(
                caller, kind, uid, lambda _old: body, create=True, once=key
            )
        return _answer_written(written, 201)

    @router.get(
        "/{uid}", response_model=ItemOut, operation_id=f"get_{name}", summary=f"Get one of {name}"
    )
    async def get_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        include_deleted: IncludeDeleted = "false",
    ) -> Response:
        item = await store.get_item(caller, name, str(uid))
        if item is None:
            raise ApiError(404, f"{kind.label} not found: {uid}")
        if item.deleted_ms is not None and include_deleted != "true":
            raise _gone(kind, str(uid), item.deleted_ms)
        return _answer(item)

    @router.put(
        "/{uid}",
        response_model=ItemOut,
        operation_id=f"replace_{name}",
        summary=f"Replace one of {name}",
        openapi_extra=_json_body(_OBJECT_SCHEMA, "The item's new payload: a JSON object."),
    )
    async def replace_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        request: Request,
        if_match: IfMatch = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        expected = parse_if_match(if_match)
        raw = await request.body()
        key = once(
            request, idempotency_key, f"replace {name} {uid}", 200, if_match=if_match, raw=raw
        )

        def replaced(_old: dict[str, Any]) -> dict[str, Any]:
            return {**read_object(raw), "uid": str(uid)}

        with _answers(kind, str(uid)):
            written = await store.write_item(
                caller, kind, str(uid), replaced, expected_version=expected, once=key
            )
        return _answer_written(written)

    @router.patch(
        "/{uid}",
        response_model=ItemOut,
        operation_id=f"patch_{name}",
        summary=f"Patch one of {name}: each top-level key replaces the stored one",
        openapi_extra=_json_body(
            _OBJECT_SCHEMA,
            "Top-level keys to set (null is stored as null; uid and sync are ignored)."
            " An empty object changes nothing.",
        ),
    )
    async def patch_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        request: Request,
        if_match: IfMatch = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        expected = parse_if_match(if_match)
        raw = await request.body()
        key = once(request, idempotency_key, f"patch {name} {uid}", 200, if_match=if_match, raw=raw)

        def merged(old: dict[str, Any]) -> dict[str, Any] | None:
            changes = {
                key: value
                for key, value in read_object(raw).items()
                if key not in IGNORED_PATCH_KEYS
            }
            return {**old, **changes} if changes else None

        with _answers(kind, str(uid)):
            written = await store.write_item(
                caller, kind, str(uid), merged, expected_version=expected, once=key
            )
        return _answer_written(written)

    @router.delete(
        "/{uid}",
        response_model=ItemOut,
        operation_id=f"delete_{name}",
        summary=f"Soft-delete one of {name}",
    )
    async def delete_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        request: Request,
        if_match: IfMatch = None,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """A second delete is 410; with the first one's ``Idempotency-Key`` it gets the
        first delete's answer again."""
        expected = parse_if_match(if_match)
        key = once(request, idempotency_key, f"delete {name} {uid}", 200, if_match=if_match)
        with _answers(kind, str(uid), deleting=True):
            written = await store.write_item(
                caller, kind, str(uid), None, expected_version=expected, once=key
            )
        return _answer_written(written)

    @router.post(
        "/{uid}/archive",
        response_model=ItemOut,
        operation_id=f"archive_{name}",
        summary=f"Archive one of {name}: {kind.archive.about}",
    )
    async def archive_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        key = once(request, idempotency_key, f"archive {name} {uid}", 200)
        with _answers(kind, str(uid)):
            written = await store.write_item(caller, kind, str(uid), kind.archive.apply, once=key)
        return _answer_written(written)

    @router.post(
        "/{uid}/process",
        response_model=ItemOut,
        operation_id=f"process_{name}",
        summary=f"Apply an action to one of {name}: {kind.action_help()}",
        openapi_extra=_json_body(_process_schema(kind), "The action and optional metadata."),
    )
    async def process_item(
        caller: SyncedCaller,
        store: StoreDep,
        uid: Uid,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        raw = await request.body()
        key = once(request, idempotency_key, f"process {name} {uid}", 200, raw=raw)
        early = None if name in _BODY_AFTER_LOOKUP else read_process(raw)

        def processed(old: dict[str, Any]) -> dict[str, Any]:
            body = early or read_process(raw)
            effect = kind.actions.get(body.action)
            if effect is None:
                refused = kind.unknown_action.format(action=body.action[:64])
                raise ApiError(400, f"{refused} (valid actions for {name}: {valid_actions})")
            result = effect.apply(old)
            result["lastAction"] = body.action
            if body.metadata is None:
                result.pop("lastActionMetadata", None)
            else:
                result["lastActionMetadata"] = body.metadata
            return result

        with _answers(kind, str(uid)):
            written = await store.write_item(caller, kind, str(uid), processed, once=key)
        return _answer_written(written)

    return router

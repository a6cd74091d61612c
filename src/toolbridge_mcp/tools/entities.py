"""The eight entity tools, defined once and generated for each of the five entities.

``list_<plural>``, ``get_``, ``create_``, ``update_``, ``patch_``, ``delete_``, ``archive_``
and ``process_<singular>``: each is one API request, with the entity's own fields as
parameters (snake_case here, camelCase in the payload) and a typed result.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal, cast
from urllib.parse import quote

from fastmcp.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from toolbridge_mcp.auth.modes import MissingAuthenticationError
from toolbridge_mcp.auth.oauth import TokenError
from toolbridge_mcp.backend.errors import ApiError, BackendError, ErrorContext, to_tool_error
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.tools.fields import (
    ChatFields,
    ChatMessageFields,
    ChatMessagePayload,
    ChatPayload,
    CommentFields,
    CommentPayload,
    JsonObject,
    NoteFields,
    NotePayload,
    TaskFields,
    TaskPayload,
    to_camel,
)

_ERRORS = (BackendError, MissingAuthenticationError, TokenError)
UNTYPED_KEY = "untypedFields"
"""Payload keys whose stored value does not have the documented type are kept under this."""
DEFAULT_PAGE = 50
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One entity as the tools see it."""

    plural: str
    singular: str
    fields: type[BaseModel]
    payload: type[BaseModel]
    actions: dict[str, str]
    """``process`` actions and what each does."""
    about: str

    @property
    def label(self) -> str:
        return self.singular.replace("_", " ")

    @property
    def path(self) -> str:
        return f"/v1/{self.plural}"


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec(
        "notes",
        "note",
        NoteFields,
        NotePayload,
        {
            "pin": "pin it (pinned=true)",
            "unpin": "unpin it",
            "archive": "mark it archived",
            "unarchive": "mark it not archived",
        },
        "Notes are titled texts with tags.",
    ),
    EntitySpec(
        "tasks",
        "task",
        TaskFields,
        TaskPayload,
        {
            "start": "status in_progress",
            "complete": "status done, completedAt set",
            "reopen": "status todo again",
        },
        "Tasks have a title, status (todo, in_progress, done), priority and due date.",
    ),
    EntitySpec(
        "comments",
        "comment",
        CommentFields,
        CommentPayload,
        {"resolve": "status resolved, resolvedAt set", "reopen": "status open again"},
        "Comments are attached to a note or a task.",
    ),
    EntitySpec(
        "chats",
        "chat",
        ChatFields,
        ChatPayload,
        {"resolve": "status resolved, resolvedAt set", "reopen": "status open again"},
        "Chats are conversations with participants; their messages are chat_messages.",
    ),
    EntitySpec(
        "chat_messages",
        "chat_message",
        ChatMessageFields,
        ChatMessagePayload,
        {"mark_read": "readAt set to now", "mark_delivered": "deliveredAt set to now"},
        "Chat messages belong to a chat (chat_uid).",
    ),
)


class Item(BaseModel):
    """A stored item: its uid, version (for if_version), timestamps and payload."""

    uid: str
    version: int = Field(description="Pass as if_version to update/patch only this version.")
    updated_at: str | None = None
    deleted_at: str | None = Field(default=None, description="Set when the item is deleted.")
    payload: BaseModel


class Deleted(BaseModel):
    """Outcome of a delete (a soft delete: the item stays readable with include_deleted)."""

    uid: str
    deleted: bool = True
    version: int | None = None
    deleted_at: str | None = None


@dataclass(frozen=True, slots=True)
class _Models:
    item: type[Item]
    page: type[BaseModel]
    action: Any


def _models(spec: EntitySpec) -> _Models:
    title = "".join(part.capitalize() for part in spec.singular.split("_"))
    item = create_model(title, __base__=Item, payload=(spec.payload, ...))
    page = create_model(
        f"{title}Page",
        items=(list[item], ...),  # type: ignore[valid-type]
        next_cursor=(
            str | None,
            Field(default=None, description="Pass as cursor for the next page; null at the end."),
        ),
    )
    action = Literal.__getitem__(tuple(spec.actions))
    return _Models(item, page, action)


def _item(model: type[Item], body: Any) -> Item:
    """API item (camelCase) → result model."""
    if not isinstance(body, dict):
        raise ApiError(200, "the API answered with something that is not an item")
    payload_model = cast(type[BaseModel], model.model_fields["payload"].annotation)
    try:
        return model.model_validate(
            {
                "uid": body.get("uid"),
                "version": body.get("version"),
                "updated_at": body.get("updatedAt"),
                "deleted_at": body.get("deletedAt"),
                "payload": _lenient_payload(payload_model, body.get("payload")),
            }
        )
    except ValidationError as exc:
        fields = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        raise ApiError(
            200, f"the API answered with an item this server cannot read ({', '.join(fields)})"
        ) from None


def _lenient_payload(model: type[BaseModel], payload: Any) -> BaseModel:
    """The payload as ``model``; other sync clients may store a known key with another type
    (``"tags": "x"``), which must not fail a whole page: such keys move, unchanged, under
    ``UNTYPED_KEY``."""
    raw = dict(payload) if isinstance(payload, dict) else {}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    untyped = {key: raw.pop(key) for key in sorted(bad) if key in raw}
    return model.model_validate({**raw, UNTYPED_KEY: untyped})


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def _field_params(fields: type[BaseModel], *, optional: bool) -> list[inspect.Parameter]:
    """Tool parameters from a fields model; ``optional`` makes all of them omittable."""
    params = []
    annotated = cast(Any, Annotated)
    for name, info in fields.model_fields.items():
        described = Field(description=info.description)
        if optional:
            base = info.annotation | None  # type: ignore[operator]
            params.append(_param(name, annotated[(base, *info.metadata, described)], None))
        else:
            default = _default(info)
            null = (
                ()
                if default is inspect.Parameter.empty
                else (_null_means(partial(info.get_default, call_default_factory=True)),)
            )
            annotation = annotated[(info.annotation, *info.metadata, described, *null)]
            params.append(_param(name, annotation, default))
    return params


def _null_means(default: Callable[[], Any]) -> BeforeValidator:
    """LLM clients send ``null`` for an argument they leave alone; it means the default."""
    return BeforeValidator(lambda value: default() if value is None else value)


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return inspect.Parameter.empty
    return info.default


def _payload(fields: type[BaseModel], args: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    values = {k: v for k, v in args.items() if k in fields.model_fields}
    if partial:
        values = {k: v for k, v in values.items() if v is not None}
    return {to_camel(k): to_jsonable_python(v) for k, v in values.items()}


Uid = Annotated[str, Field(min_length=1, description="uid of the item (from list or create).")]
IncludeDeleted = Annotated[
    bool,
    Field(description="Also return deleted items (they are soft-deleted)."),
    _null_means(lambda: False),
]
IfVersion = Annotated[
    int | None,
    Field(
        description="Only apply if the item is still at this version (optimistic "
        "concurrency); omit to overwrite whatever is there."
    ),
]


ToolBody = Callable[[dict[str, Any]], Awaitable[Any]]


def _tool(
    name: str,
    description: str,
    params: list[inspect.Parameter],
    returns: Any,
    body: ToolBody,
    hints: ToolAnnotations,
) -> Tool:
    """A FastMCP tool whose signature is ``params``; its arguments reach ``body`` as a dict."""

    async def run(**arguments: Any) -> Any:
        return await body(arguments)

    run.__name__ = name
    run.__doc__ = description
    run.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    return Tool.from_function(run, name=name, description=description, annotations=hints)


class EntityTools:
    """Generates one entity's eight tools over a :class:`Backend`."""

    def __init__(self, spec: EntitySpec, backend: Backend) -> None:
        self.spec = spec
        self.backend = backend
        self.models = _models(spec)

    def tools(self) -> Iterator[Tool]:
        """The eight tools of this entity."""
        yield self._list()
        yield self._get()
        yield self._create()
        yield self._update()
        yield self._patch()
        yield self._delete()
        yield self._archive()
        yield self._process()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        uid: str | None = None,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One API request; a failure becomes a :class:`ToolError` a person can act on."""
        try:
            return await self.backend.client.call(
                method, path, params=params, json=json, headers=headers
            )
        except _ERRORS as exc:
            current = None
            if isinstance(exc, ApiError) and exc.status == 412 and uid is not None:
                current = await self._current_version(uid)
            raise to_tool_error(exc, self._context(uid, current)) from None

    def _tool(
        self,
        name: str,
        description: str,
        params: list[inspect.Parameter],
        returns: Any,
        body: ToolBody,
        hints: ToolAnnotations,
    ) -> Tool:
        """:func:`_tool`, with answers the tool cannot use (an :class:`ApiError` raised while
        reading a successful response) mapped like every other API error."""

        async def guarded(args: dict[str, Any]) -> Any:
            try:
                return await body(args)
            except ApiError as exc:
                raise to_tool_error(exc, self._context(args.get("uid"))) from None

        return _tool(name, description, params, returns, guarded, hints)

    def _context(self, uid: str | None, current: int | None = None) -> ErrorContext:
        return self.backend.error_context(
            entity=self.spec.label,
            uid=uid,
            get_tool=f"get_{self.spec.singular}",
            list_tool=f"list_{self.spec.plural}",
            current_version=current,
        )

    async def _current_version(self, uid: str) -> int | None:
        """After a 412, the version the item is at now, so the caller can retry."""
        try:
            body = await self.backend.client.call(
                "GET", self._item_path(uid), params={"includeDeleted": "true"}
            )
        except _ERRORS:
            return None
        version = body.get("version") if isinstance(body, dict) else None
        return version if isinstance(version, int) else None

    def _item_path(self, uid: str) -> str:
        return f"{self.spec.path}/{_path_segment(uid)}"

    def _list(self) -> Tool:
        spec, page = self.spec, self.models.page

        async def body(args: dict[str, Any]) -> Any:
            params = {"limit": str(args["limit"])}
            if args["cursor"]:
                params["cursor"] = args["cursor"]
            if args["include_deleted"]:
                params["includeDeleted"] = "true"
            result = await self._call("GET", spec.path, params=params)
            if not isinstance(result, dict):
                result = {}
            items = [_item(self.models.item, raw) for raw in result.get("items") or []]
            return page(items=items, next_cursor=result.get("nextCursor"))

        params = [
            _param(
                "limit",
                Annotated[
                    int,
                    Field(ge=1, le=MAX_PAGE, description="Items per page."),
                    _null_means(lambda: DEFAULT_PAGE),
                ],
                DEFAULT_PAGE,
            ),
            _param(
                "cursor",
                Annotated[str | None, Field(description="next_cursor from the previous page.")],
                None,
            ),
            _param("include_deleted", IncludeDeleted, False),
        ]
        return self._tool(
            f"list_{spec.plural}",
            f"List {spec.label}s, one page at a time. {spec.about} Returns items and "
            "next_cursor; call again with cursor=next_cursor for more.",
            params,
            page,
            body,
            ToolAnnotations(read_only_hint=True),
        )

    def _get(self) -> Tool:
        spec, item = self.spec, self.models.item

        async def body(args: dict[str, Any]) -> Any:
            params = {"includeDeleted": "true"} if args["include_deleted"] else None
            uid = args["uid"]
            return _item(
                item, await self._call("GET", self._item_path(uid), uid=uid, params=params)
            )

        return self._tool(
            f"get_{spec.singular}",
            f"Get one {spec.label} by uid. {spec.about}",
            [_param("uid", Uid), _param("include_deleted", IncludeDeleted, False)],
            item,
            body,
            ToolAnnotations(read_only_hint=True),
        )

    def _create(self) -> Tool:
        spec, item = self.spec, self.models.item

        async def body(args: dict[str, Any]) -> Any:
            payload = _payload(spec.fields, args, partial=False)
            return _item(item, await self._call("POST", spec.path, json=payload))

        return self._tool(
            f"create_{spec.singular}",
            f"Create a {spec.label}. {spec.about} Returns it with its new uid and version 1.",
            _field_params(spec.fields, optional=False),
            item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=False),
        )

    def _update(self) -> Tool:
        return self._write(
            partial=False,
            name=f"update_{self.spec.singular}",
            description=f"Replace all fields of a {self.spec.label} (fields not given get their "
            f"defaults; to change only some, use patch_{self.spec.singular}). "
            "Returns the new version.",
        )

    def _patch(self) -> Tool:
        return self._write(
            partial=True,
            name=f"patch_{self.spec.singular}",
            description=f"Change some fields of a {self.spec.label}; omitted fields stay as "
            "they are. Returns the new version.",
        )

    def _write(self, *, partial: bool, name: str, description: str) -> Tool:
        """update_ (PUT, every field) and patch_ (PATCH, merge of the given fields) differ
        only in the method and in which fields are required."""
        spec, item = self.spec, self.models.item
        method = "PATCH" if partial else "PUT"

        async def body(args: dict[str, Any]) -> Any:
            uid = args["uid"]
            payload = _payload(spec.fields, args, partial=partial)
            return _item(
                item,
                await self._call(
                    method,
                    self._item_path(uid),
                    uid=uid,
                    json=payload,
                    headers=_if_match(args["if_version"]),
                ),
            )

        return self._tool(
            name,
            description,
            [
                _param("uid", Uid),
                *_field_params(spec.fields, optional=partial),
                _param("if_version", IfVersion, None),
            ],
            item,
            body,
            # Replacing drops fields not given; merging only changes the ones given.
            ToolAnnotations(
                read_only_hint=False, destructive_hint=not partial, idempotent_hint=True
            ),
        )

    def _delete(self) -> Tool:
        spec = self.spec

        async def body(args: dict[str, Any]) -> Any:
            uid = args["uid"]
            result = await self._call("DELETE", self._item_path(uid), uid=uid)
            if isinstance(result, dict) and "uid" in result:
                return Deleted(
                    uid=str(result["uid"]),
                    version=result.get("version"),
                    deleted_at=result.get("deletedAt"),
                )
            return Deleted(uid=uid)

        return self._tool(
            f"delete_{spec.singular}",
            f"Delete a {spec.label} (soft delete: get_{spec.singular} with "
            "include_deleted=true still shows it).",
            [_param("uid", Uid)],
            Deleted,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
        )

    def _archive(self) -> Tool:
        spec, item = self.spec, self.models.item

        async def body(args: dict[str, Any]) -> Any:
            uid = args["uid"]
            return _item(item, await self._call("POST", f"{self._item_path(uid)}/archive", uid=uid))

        return self._tool(
            f"archive_{spec.singular}",
            f"Archive a {spec.label}: kept, but out of the way.",
            [_param("uid", Uid)],
            item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
        )

    def _process(self) -> Tool:
        spec, item = self.spec, self.models.item

        async def body(args: dict[str, Any]) -> Any:
            uid = args["uid"]
            request: dict[str, Any] = {"action": args["action"]}
            if args["metadata"]:
                request["metadata"] = args["metadata"]
            return _item(
                item,
                await self._call("POST", f"{self._item_path(uid)}/process", uid=uid, json=request),
            )

        actions = "; ".join(f"{name}: {effect}" for name, effect in spec.actions.items())
        return self._tool(
            f"process_{spec.singular}",
            f"Apply an action to a {spec.label}. Actions — {actions}.",
            [
                _param("uid", Uid),
                _param(
                    "action",
                    Annotated[self.models.action, Field(description=f"One of: {actions}.")],
                ),
                _param(
                    "metadata",
                    Annotated[
                        JsonObject | None,
                        Field(description="Optional extra information stored with the action."),
                    ],
                    None,
                ),
            ],
            item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=False),
        )


def _path_segment(uid: str) -> str:
    """``uid`` as exactly one path segment. Unescaped, a ``/``, ``?``, ``#`` or dot segment
    would reach another route: ``process_note(uid="../sync/wipe?")`` would wipe the user's
    data, ``delete_note(uid="../tasks/…")`` would delete a task."""
    segment = quote(uid, safe="")
    return segment.replace(".", "%2E") if not segment.strip(".") else segment


def _if_match(version: int | None) -> dict[str, str] | None:
    return None if version is None else {"If-Match": str(version)}


def entity_tools(backend: Backend) -> list[Tool]:
    """All forty entity tools."""
    return [tool for spec in ENTITIES for tool in EntityTools(spec, backend).tools()]


def tool_parameters(tools: list[Tool]) -> dict[str, frozenset[str]]:
    """Each tool's parameter names, to drop arguments a client made up."""
    return {
        tool.name: frozenset(cast(dict[str, Any], tool.parameters.get("properties", {})))
        for tool in tools
    }

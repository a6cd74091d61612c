"""The eight tools of every entity, generated from the wire contract.

For each entity of :data:`toolbridge_common.contract.ENTITIES`: ``list_<plural>``,
``get_``, ``create_``, ``update_``, ``patch_``, ``delete_``, ``archive_`` and
``process_<singular>`` — the original MCP server's names and arguments (``if_match``,
``updates``, ``additional_fields``, ``tags`` as a list or JSON string, ...), plus the
entity's fields as typed parameters. Each tool is one call of the typed API client; the
tools speak MCP only and never build a path or a header. Results have the original shape:
``uid, version, updatedAt, deletedAt, payload`` and ``items, nextCursor``.

A sixth, eighth, ... entity needs nothing here: add it to the contract (and its field
descriptions and required keys to :mod:`toolbridge_mcp.tools.fields`).
"""

from __future__ import annotations

import dataclasses
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal, Union, cast

from fastmcp.exceptions import ToolError
from fastmcp.tools import Tool, ToolResult
from mcp_types import TextContent, ToolAnnotations
from pydantic import AfterValidator, BaseModel, Field, create_model
from pydantic_core import to_json, to_jsonable_python

from toolbridge_common import contract
from toolbridge_common.contract import Entity
from toolbridge_mcp.backend.errors import BACKEND_ERRORS, ErrorContext, to_tool_error
from toolbridge_mcp.backend.models import Item, Page
from toolbridge_mcp.backend.runtime import Backend
from toolbridge_mcp.tools.exact import ExactTool
from toolbridge_mcp.tools.fields import (
    CREATE_DEFAULTS,
    REQUIRED,
    FieldSpec,
    compact_nullable,
    field_specs,
    json_object,
    payload_model,
)

KINDS = ("list", "get", "create", "update", "patch", "delete", "archive", "process")

ToolBody = Callable[[dict[str, Any]], Awaitable[Any]]


def tool_name(kind: str, entity: Entity) -> str:
    """``list_notes``, ``get_note``, ..., ``process_task_list_category``."""
    return f"{kind}_{entity.name if kind == 'list' else entity.singular}"


def _nullable(annotation: Any) -> Any:
    return cast(Any, Union)[annotation, None]


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def _optional(
    name: str, annotation: Any, description: str, default: Any = None
) -> inspect.Parameter:
    """An omittable parameter; ``null`` means the default too (clients with strict tool
    calling send every parameter)."""
    return _param(name, Annotated[_nullable(annotation), Field(description=description)], default)


def _required(name: str, annotation: Any, description: str) -> inspect.Parameter:
    return _param(name, Annotated[annotation, Field(description=description)])


def _uuid_text(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError("must be a UUID, e.g. 0b8c6d3e-5a1f-4c2b-9d7e-3f4a5b6c7d8e") from None
    return value


ClientUid = Annotated[str, AfterValidator(_uuid_text), Field(json_schema_extra={"format": "uuid"})]
Version = Annotated[int, Field(ge=0)]


def answer(result: BaseModel) -> ToolResult:
    """``result`` as the tool's answer: structured content and the same JSON as text, made
    in one pass through the model's serializer and one encoding. Given the model, FastMCP
    would serialize it four times and parse it twice (~130 µs for a page of 10 notes, 55 µs
    this way). What ``ToolResult()`` would check is true here by construction: the content
    is one text block, the structured content plain JSON values read from the API's JSON;
    a non-finite number, which JSON cannot carry, takes ``ToolResult()``'s own path."""
    structured = result.model_dump()
    text = to_json(structured, inf_nan_mode="constants")
    if b"NaN" in text or b"Infinity" in text:
        return ToolResult(structured_content=structured)
    return ToolResult.model_construct(
        content=[TextContent(type="text", text=text.decode())], structured_content=structured
    )


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
    tool = ExactTool.from_function(run, name=name, description=description, annotations=hints)
    return tool.model_copy(update={"output_schema": compact_nullable(tool.output_schema)})


def expected_version(args: dict[str, Any]) -> int | None:
    """``if_match``, or its alias ``if_version``; both given and different is an error."""
    if_match, if_version = args.get("if_match"), args.get("if_version")
    if if_match is not None and if_version is not None and if_match != if_version:
        raise ToolError(
            f"if_match={if_match} and if_version={if_version} disagree; pass one of them "
            "(if_version is another name for if_match)."
        )
    return cast(int | None, if_match if if_match is not None else if_version)


class EntityTools:
    """Generates one entity's eight tools over a :class:`Backend`."""

    def __init__(self, entity: Entity, backend: Backend) -> None:
        self.entity = entity
        self.backend = backend
        self.specs: tuple[FieldSpec, ...] = field_specs(entity)
        self.required = REQUIRED[entity.name]
        parent = entity.parent
        parent_keys = () if parent is None else (parent.key, parent.type_key)
        # A replace needs the same, except the parent: the original update_comment and
        # update_chat_message take it in additional_fields.
        self.replace_required = tuple(k for k in self.required if k not in parent_keys)
        self.label = entity.label.replace("_", " ")
        title = "".join(part.capitalize() for part in entity.singular.split("_"))
        self.payload = payload_model(entity)
        self.item: type[Item] = create_model(
            title,
            __base__=Item,
            __doc__=f"A {self.label}: uid, version (for if_match), timestamps and payload.",
            payload=(self.payload, Field(description=f"The {self.label}'s fields as stored.")),
        )
        self.page: type[Page] = create_model(
            f"{title}Page",
            __base__=Page,
            __doc__=f"One page of {self.label}s.",
            items=(list[self.item], ...),  # type: ignore[name-defined]
        )

    def tools(self) -> Iterator[Tool]:
        """The eight tools of this entity, in :data:`KINDS` order."""
        yield self._list()
        yield self._get()
        yield self._create()
        yield self._update()
        yield self._patch()
        yield self._delete()
        yield self._archive()
        yield self._process()

    # --- plumbing -------------------------------------------------------------------------

    def _name(self, kind: str) -> str:
        return tool_name(kind, self.entity)

    def _context(self, uid: str | None, kind: str | None = None) -> ErrorContext:
        context = self.backend.error_context(
            entity=self.label,
            uid=uid,
            get_tool=self._name("get"),
            list_tool=self._name("list"),
        )
        if kind in (None, "list", "get"):
            return context
        return dataclasses.replace(context, write=kind)

    def _tool(
        self,
        kind: str,
        description: str,
        params: list[inspect.Parameter],
        returns: Any,
        body: ToolBody,
        hints: ToolAnnotations,
    ) -> Tool:
        """:func:`_tool`, with every backend failure mapped to a tool error a person can
        act on."""

        async def guarded(args: dict[str, Any]) -> Any:
            try:
                return await body(args)
            except BACKEND_ERRORS as exc:
                raise to_tool_error(exc, self._context(args.get("uid"), kind)) from None

        return _tool(self._name(kind), description, params, returns, guarded, hints)

    def _uid(self) -> inspect.Parameter:
        return _required(
            "uid",
            Annotated[str, Field(min_length=1)],
            f"uid of the {self.label} (from {self._name('list')} or {self._name('create')}).",
        )

    def _field_params(self, required: tuple[str, ...] = ()) -> list[inspect.Parameter]:
        """The entity's fields, the ``required`` keys required, the others omittable."""
        params = []
        for spec in self.specs:
            if spec.key in required:
                params.append(_required(spec.param, spec.annotation, spec.description))
            else:
                params.append(_optional(spec.param, spec.annotation, spec.description))
        return params

    def _fields(self, args: dict[str, Any], *, create: bool = False) -> dict[str, Any]:
        """The given fields as payload keys; on create, the original tools' defaults."""
        payload: dict[str, Any] = {}
        for spec in self.specs:
            value = args.get(spec.param)
            if value is None and create:
                value = CREATE_DEFAULTS.get((self.entity.name, spec.key))
            if value is not None:
                payload[spec.key] = to_jsonable_python(value)
        return payload

    def _version_params(self) -> list[inspect.Parameter]:
        return [
            _optional(
                "if_match",
                Version,
                f"Only apply if the {self.label} is still at this version (its version "
                "from get/list); otherwise the call fails with a version conflict naming the "
                "current version. Omit to apply whatever the version.",
            ),
            _optional("if_version", Version, "Another name for if_match."),
        ]

    def _additional(self) -> inspect.Parameter:
        return _optional(
            "additional_fields",
            json_object("additional_fields"),
            "Any other payload keys, as an object or a JSON object string (applied last).",
        )

    # --- the eight tools ------------------------------------------------------------------

    def _list(self) -> Tool:
        entity = self.entity

        async def body(args: dict[str, Any]) -> Any:
            page = await self.backend.client.list_items(
                entity,
                limit=args["limit"] or contract.MCP_LIST_LIMIT,
                cursor=args["cursor"],
                include_deleted=bool(args["include_deleted"]),
                model=self.page,
            )
            return answer(page)

        limit = Annotated[int, Field(ge=1, le=contract.MAX_LIST_LIMIT)]
        return self._tool(
            "list",
            f"List {self.label}s, one page at a time, in the order they last changed. "
            f"{entity.about} Returns items (uid, version, updatedAt, deletedAt, payload) and "
            "nextCursor: call again with cursor=nextCursor for the next page; a page without "
            "items is the end.",
            [
                _optional(
                    "limit",
                    limit,
                    f"Items per page (1-{contract.MAX_LIST_LIMIT}, "
                    f"default {contract.MCP_LIST_LIMIT}).",
                    contract.MCP_LIST_LIMIT,
                ),
                _optional("cursor", str, "nextCursor of the previous page."),
                _optional("include_deleted", bool, "Also list deleted items.", False),
            ],
            self.page,
            body,
            ToolAnnotations(read_only_hint=True),
        )

    def _get(self) -> Tool:
        entity = self.entity

        async def body(args: dict[str, Any]) -> Any:
            item = await self.backend.client.get_item(
                entity, args["uid"], include_deleted=bool(args["include_deleted"]), model=self.item
            )
            return answer(item)

        return self._tool(
            "get",
            f"Get one {self.label} by uid. {entity.about} A deleted one only with "
            "include_deleted=true.",
            [
                self._uid(),
                _optional(
                    "include_deleted", bool, f"Also return the {self.label} if deleted.", False
                ),
            ],
            self.item,
            body,
            ToolAnnotations(read_only_hint=True),
        )

    def _create(self) -> Tool:
        entity = self.entity

        async def body(args: dict[str, Any]) -> Any:
            # The uid is chosen here when not given, so a create whose answer is lost can be
            # checked (and repeated) by it: see ErrorContext.write. The dict is the one the
            # error mapping reads the uid from.
            if args["uid"] is None:
                args["uid"] = str(uuid.uuid4())
            payload: dict[str, Any] = {"uid": args["uid"]}
            payload |= self._fields(args, create=True)
            payload |= args["additional_fields"] or {}
            return answer(await self.backend.client.create_item(entity, payload, model=self.item))

        return self._tool(
            "create",
            f"Create a {self.label}. {entity.about} Fields not given are not stored; "
            "additional_fields adds any other payload keys. Pass uid (a UUID) to choose its "
            "uid, as offline-first apps do; creating with an existing uid replaces that item. "
            "Returns it with its uid and version.",
            [
                *self._field_params(self.required),
                self._additional(),
                _optional(
                    "uid",
                    ClientUid,
                    f"The new {self.label}'s uid (a UUID); omit to get a new random one.",
                ),
            ],
            self.item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=False),
        )

    def _update(self) -> Tool:
        entity = self.entity

        async def body(args: dict[str, Any]) -> Any:
            version = expected_version(args)
            uid = args["uid"]
            payload = {"uid": uid, **self._fields(args), **(args["additional_fields"] or {})}
            item = await self.backend.client.update_item(
                entity, uid, payload, if_match=version, model=self.item
            )
            return answer(item)

        return self._tool(
            "update",
            f"Replace a {self.label}: its payload becomes exactly the fields given (plus "
            "additional_fields); fields not given are removed — to change only some, use "
            f"{self._name('patch')}. With if_match=<version> it only applies if the "
            f"{self.label} is still at that version, else a version-conflict error names the "
            "current one.",
            [
                self._uid(),
                *self._field_params(self.replace_required),
                *self._version_params(),
                self._additional(),
            ],
            self.item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
        )

    def _patch(self) -> Tool:
        entity = self.entity
        example = ", ".join(f'"{spec.key}": ...' for spec in self.specs[:2])

        async def body(args: dict[str, Any]) -> Any:
            version = expected_version(args)
            changes = self._fields(args)
            updates: dict[str, Any] = args["updates"] or {}
            clashes = sorted(k for k in updates if k in changes and changes[k] != updates[k])
            if clashes:
                raise ToolError(
                    f"updates and the named arguments give different values for "
                    f"{', '.join(clashes)}; give each field once."
                )
            changes |= updates
            if not changes:
                raise ToolError(
                    f"Nothing to change: pass updates={{{example}}} or fields such as "
                    f"{self.specs[0].param}=..."
                )
            item = await self.backend.client.patch_item(
                entity, args["uid"], changes, if_match=version, model=self.item
            )
            return answer(item)

        return self._tool(
            "patch",
            f"Change some fields of a {self.label}; the others stay. Give updates (an object "
            f"or JSON object string of payload keys as stored, e.g. {{{example}}}) and/or the "
            "named fields. A key set to null in updates is stored as null. if_match as for "
            f"{self._name('update')}.",
            [
                self._uid(),
                _optional(
                    "updates",
                    json_object("updates"),
                    "The fields to change, as an object or a JSON object string, with the "
                    "payload's own (camelCase) keys.",
                ),
                *self._field_params(),
                *self._version_params(),
            ],
            self.item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
        )

    def _delete(self) -> Tool:
        entity = self.entity

        async def body(args: dict[str, Any]) -> Any:
            item = await self.backend.client.delete_item(entity, args["uid"], model=self.item)
            return answer(item)

        return self._tool(
            "delete",
            f"Delete a {self.label} (a soft delete: it comes back with deletedAt, and "
            f"{self._name('get')} with include_deleted=true still shows it).",
            [self._uid()],
            self.item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
        )

    def _archive(self) -> Tool:
        entity = self.entity

        async def body(args: dict[str, Any]) -> Any:
            item = await self.backend.client.archive_item(entity, args["uid"], model=self.item)
            return answer(item)

        return self._tool(
            "archive",
            f"Archive a {self.label}: kept, but out of the way ({entity.archive.about}).",
            [self._uid()],
            self.item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
        )

    def _process(self) -> Tool:
        entity = self.entity
        actions = entity.action_help()

        async def body(args: dict[str, Any]) -> Any:
            item = await self.backend.client.process_item(
                entity, args["uid"], args["action"], metadata=args["metadata"], model=self.item
            )
            return answer(item)

        return self._tool(
            "process",
            f"Apply an action to a {self.label}: {actions}.",
            [
                self._uid(),
                _required(
                    "action",
                    Literal.__getitem__(tuple(entity.actions)),
                    f"One of: {actions}.",
                ),
                _optional(
                    "metadata",
                    json_object("metadata"),
                    "Extra information stored with the action (an object or a JSON object string).",
                ),
            ],
            self.item,
            body,
            ToolAnnotations(read_only_hint=False, destructive_hint=False),
        )


def entity_tools(backend: Backend) -> list[Tool]:
    """The eight tools of every entity of the contract."""
    return [tool for entity in contract.ENTITIES for tool in EntityTools(entity, backend).tools()]

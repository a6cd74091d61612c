"""The fields of each entity: what the create/update/patch tools accept and what comes back.

Inputs use snake_case (tool parameters), the API payload camelCase. Inputs are lenient where
LLM clients are sloppy: a list may arrive as a JSON string (``'["a","b"]'``) or, for tags, as
``"a, b"``; an object may arrive as a JSON string.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _list_from_text(value: Any) -> Any:
    """A JSON array in a string, or comma-separated words, become a list."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return [part.strip() for part in text.split(",") if part.strip()]


def _object_from_text(value: Any) -> Any:
    """A JSON object in a string becomes a dict (pydantic then says if it is not one)."""
    if isinstance(value, str) and value.strip():
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


StringList = Annotated[list[str], BeforeValidator(_list_from_text)]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_object_from_text)]
DueDate = date | datetime


class NoteFields(BaseModel):
    title: str = Field(min_length=1, description="Short title of the note.")
    content: str = Field(default="", description="Body of the note (plain text or Markdown).")
    tags: StringList = Field(
        default_factory=list, description='Tags, e.g. ["work", "ideas"]; may be empty.'
    )


class TaskFields(BaseModel):
    title: str = Field(min_length=1, description="What has to be done, in a few words.")
    description: str = Field(default="", description="Details of the task.")
    status: Literal["todo", "in_progress", "done"] = Field(
        default="todo", description="todo, in_progress or done."
    )
    priority: Literal["low", "medium", "high"] = Field(
        default="medium", description="low, medium or high."
    )
    due_date: DueDate | None = Field(
        default=None, description="Due date, ISO 8601: 2025-06-30 or 2025-06-30T17:00:00Z."
    )
    tags: StringList = Field(default_factory=list, description="Tags; may be empty.")


class CommentFields(BaseModel):
    content: str = Field(min_length=1, description="Text of the comment.")
    parent_type: Literal["note", "task"] = Field(
        description="What the comment is attached to: note or task."
    )
    parent_uid: str = Field(
        min_length=1, description="uid of the note or task the comment is attached to."
    )


class ChatFields(BaseModel):
    title: str = Field(min_length=1, description="Title of the conversation.")
    participants: StringList = Field(
        default_factory=list, description="Names or ids of the participants."
    )


class ChatMessageFields(BaseModel):
    chat_uid: str = Field(min_length=1, description="uid of the chat the message belongs to.")
    content: str = Field(min_length=1, description="Text of the message.")
    sender: str | None = Field(default=None, description="Who wrote the message.")


class _Payload(BaseModel):
    """Payload as stored; keys the API adds (pinned, status, readAt, …) are kept."""

    model_config = ConfigDict(extra="allow")


class NotePayload(_Payload):
    title: str | None = None
    content: str | None = None
    tags: list[str] | None = None
    pinned: bool | None = None
    archived: bool | None = None


class TaskPayload(_Payload):
    title: str | None = None
    description: str | None = None
    status: str | None = None
    priority: str | None = None
    dueDate: str | None = None
    tags: list[str] | None = None
    completedAt: str | None = None


class CommentPayload(_Payload):
    content: str | None = None
    parentType: str | None = None
    parentUid: str | None = None
    status: str | None = None
    resolvedAt: str | None = None


class ChatPayload(_Payload):
    title: str | None = None
    participants: list[str] | None = None
    status: str | None = None
    resolvedAt: str | None = None


class ChatMessagePayload(_Payload):
    chatUid: str | None = None
    content: str | None = None
    sender: str | None = None
    readAt: str | None = None
    deliveredAt: str | None = None


def to_camel(name: str) -> str:
    """``parent_uid`` → ``parentUid``: tool parameter name to payload key."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)

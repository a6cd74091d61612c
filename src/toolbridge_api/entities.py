"""The five synced entities and their ``process`` actions, declared once.

Routes, storage and the info endpoint are all generated from :data:`ENTITIES`; adding an
entity or an action is a change to this table only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Action:
    """What one ``process`` action does to a payload: set fields, stamp one with the time of
    the action, remove others."""

    set: Mapping[str, Any] = field(default_factory=dict)
    stamp: str | None = None
    remove: tuple[str, ...] = ()

    def apply(self, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
        """A new payload with this action applied; the input is left untouched."""
        result = {k: v for k, v in payload.items() if k not in self.remove}
        result.update(self.set)
        if self.stamp is not None:
            result[self.stamp] = now.isoformat().replace("+00:00", "Z")
        return result


@dataclass(frozen=True, slots=True)
class Entity:
    """One synced collection, served under ``/v1/{name}``."""

    name: str
    title: str
    actions: Mapping[str, Action]


_RESOLVABLE = {
    "resolve": Action(set={"status": "resolved"}, stamp="resolvedAt"),
    "reopen": Action(set={"status": "open"}, remove=("resolvedAt",)),
}

ENTITIES: tuple[Entity, ...] = (
    Entity(
        "notes",
        "Note",
        {
            "pin": Action(set={"pinned": True}),
            "unpin": Action(set={"pinned": False}),
            "archive": Action(set={"archived": True}),
            "unarchive": Action(set={"archived": False}),
        },
    ),
    Entity(
        "tasks",
        "Task",
        {
            "start": Action(set={"status": "in_progress"}, remove=("completedAt",)),
            "complete": Action(set={"status": "done"}, stamp="completedAt"),
            "reopen": Action(set={"status": "todo"}, remove=("completedAt",)),
        },
    ),
    Entity("comments", "Comment", _RESOLVABLE),
    Entity("chats", "Chat", _RESOLVABLE),
    Entity(
        "chat_messages",
        "Chat message",
        {
            "mark_read": Action(stamp="readAt"),
            "mark_delivered": Action(stamp="deliveredAt"),
        },
    ),
)

ENTITY_NAMES: tuple[str, ...] = tuple(entity.name for entity in ENTITIES)

ARCHIVE = Action(set={"archived": True})
"""What ``POST /v1/{entity}/{uid}/archive`` does, for every entity."""

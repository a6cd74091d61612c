"""The wire contract's codecs produce what the original Go API produces and reads."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from toolbridge_common import contract


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (1730635200000, "2024-11-03T12:00:00Z"),
        (1730635200123, "2024-11-03T12:00:00.123Z"),
        (1730635200120, "2024-11-03T12:00:00.12Z"),
        (1730635200100, "2024-11-03T12:00:00.1Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_format_ms_trims_like_go_rfc3339nano(ms: int, text: str) -> None:
    assert contract.format_ms(ms) == text
    assert contract.parse_timestamp(text) == ms


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2025-11-03T10:00:00Z", 1762164000000),
        ("2025-11-03T11:00:00+01:00", 1762164000000),
        ("2025-11-03T10:00:00.5Z", 1762164000500),
        ("1762164000000", 1762164000000),
        (1762164000000, 1762164000000),
        ("2025-11-03", None),
        ("2025-11-03T10:00:00", None),
        ("soon", None),
        (True, None),
        (None, None),
        ({"t": 1}, None),
    ],
)
def test_parse_timestamp(value: object, ms: int | None) -> None:
    assert contract.parse_timestamp(value) == ms


def test_cursor_is_base64url_without_padding_of_ms_and_uid() -> None:
    uid = "c1d9b7dc-a1b2-4c3d-9e8f-7a6b5c4d3e2f"
    cursor = contract.encode_cursor(1730635200000, uid.upper())
    assert "=" not in cursor
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)) == (
        f"1730635200000|{uid}".encode()
    )
    assert contract.decode_cursor(cursor) == (1730635200000, uid)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "czox",  # "s:1", the old sequence cursors
        base64.urlsafe_b64encode(b"12|not-a-uuid").decode().rstrip("="),
        base64.urlsafe_b64encode(b"x|c1d9b7dc-a1b2-4c3d-9e8f-7a6b5c4d3e2f").decode(),
        "MTIz==",
        "!!!",
    ],
)
def test_bad_cursors_are_not_positions(cursor: str) -> None:
    assert contract.decode_cursor(cursor) is None


def test_tenant_signature_is_hex_hmac_sha256_of_tenant_and_ms() -> None:
    expected = hmac.new(b"s3cret", b"acme:1700000000000", hashlib.sha256).hexdigest()
    assert contract.tenant_signature("s3cret", "acme", "1700000000000") == expected
    headers = contract.tenant_headers("s3cret", "acme", 1700000000000)
    assert headers == {
        "X-TB-Tenant-ID": "acme",
        "X-TB-Timestamp": "1700000000000",
        "X-TB-Signature": expected,
    }


def test_entities_match_the_original_and_its_later_two() -> None:
    assert contract.ENTITY_NAMES == (
        "notes",
        "tasks",
        "comments",
        "chats",
        "chat_messages",
        "task_lists",
        "task_list_categories",
    )
    assert contract.entity("tasks").actions["complete"].apply({"status": "open"}) == {
        "status": "completed"
    }
    assert contract.entity("note").archive.apply({}) == {"status": "archived"}
    assert contract.entity("chats").archive.apply({}) == {"archived": True}
    with pytest.raises(KeyError, match="known: notes"):
        contract.entity("widgets")


def test_stamp_payload_writes_sync_metadata() -> None:
    stamped = contract.stamp_payload(
        {"title": "t", "sync": {"version": 99}},
        uid="u",
        updated_ms=1000,
        version=2,
        deleted_ms=None,
    )
    assert stamped == {
        "title": "t",
        "uid": "u",
        "updatedTs": "1970-01-01T00:00:01Z",
        "sync": {"version": 2, "isDeleted": False},
    }
    deleted = contract.stamp_payload({}, uid="u", updated_ms=1000, version=3, deleted_ms=1000)
    assert deleted["sync"] == {"version": 3, "isDeleted": True, "deletedAt": "1970-01-01T00:00:01Z"}

"""Header lookup that works for Starlette's case-insensitive headers and plain dicts alike."""

from collections.abc import Mapping


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any letter case, or None when absent.

    Starlette's ``Headers`` already ignores case; a plain dict (tests, other callers) does not,
    so an exact miss falls back to a case-insensitive scan.
    """
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None

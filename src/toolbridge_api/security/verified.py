"""Access tokens already verified, so a client that sends the same token with every request
(the MCP server does, for an hour) pays for the signature check and the claim checks once.

An entry is keyed by the SHA-256 of the token (the token itself is not kept) and holds the
verified subject until the moment the token would be refused as expired (``exp`` plus the
verifier's leeway), and only while the keys that verified it are the verifier's keys: a
new key set (rotation, or a key the identity provider withdrew) voids every entry verified
with the old one, so such a token is checked again and refused as before. Only successful
verifications are remembered; every refusal is decided afresh. The least recently used
entries go first beyond ``max_entries``.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Verified:
    subject: str
    until: float
    """Unix time from which the token is expired (``exp`` + leeway)."""
    keys: object
    """What verified it: the key set (or secret) object in use then, compared by identity."""


class VerifiedTokens:
    """A bounded map from a token's digest to its verified subject."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, Verified] = OrderedDict()

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, digest: bytes, *current_keys: object) -> Verified | None:
        """The token with ``digest`` as verified, if it was verified with one of
        ``current_keys`` (the verifier's key set, its secret) and has not expired since."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() >= entry.until or not any(entry.keys is k for k in current_keys):
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry

    def put(self, digest: bytes, subject: str, *, until: float, keys: object) -> None:
        """Remember a token just verified with ``keys``, valid until ``until`` (Unix time)."""
        if self._max <= 0 or keys is None:
            return
        self._entries[digest] = Verified(subject, until, keys)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

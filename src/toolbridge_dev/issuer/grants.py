"""What the authorization code flow remembers between requests, in memory only.

Sign-in requests waiting for a user, authorization codes and refresh tokens live in this
process: a restart forgets them (users sign in again; registered clients and the signing key
are on disk and survive). Codes are single use; a code presented twice revokes the refresh
tokens issued from it (RFC 6749 §4.1.2). Refresh tokens rotate: each refresh answers a new
one and retires the old, and a retired one presented again revokes its whole family (every
refresh token descended from the same sign-in), as OAuth 2.1 / the security BCP advise.
Access tokens are self-contained JWTs and stay valid until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

PENDING_LIFETIME_SECONDS = 600
"""How long the login page of one authorization request stays usable."""
USED_CODE_MEMORY_SECONDS = 600
"""How long after it expires a redeemed code is still recognised as a reuse."""

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
"""RFC 7636 §4.1: ``code_verifier`` is 43-128 unreserved characters."""
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
"""An S256 ``code_challenge``: BASE64URL of a SHA-256 digest, no padding."""


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def is_s256_challenge(challenge: str) -> bool:
    return _S256_CHALLENGE.fullmatch(challenge) is not None


def is_verifier(verifier: str) -> bool:
    return _VERIFIER.fullmatch(verifier) is not None


@dataclass(frozen=True)
class Authorization:
    """A validated authorization request: what the user is asked to grant."""

    client_id: str
    client_label: str
    redirect_uri: str
    state: str | None
    code_challenge: str
    scope: str | None
    resource: str
    issue_refresh_token: bool


@dataclass
class Pending:
    authorization: Authorization
    expires_at: float


@dataclass
class Code:
    authorization: Authorization
    subject: str
    expires_at: float
    used: bool = False
    family: str | None = None
    """The refresh token family its redemption started, to revoke if it is reused."""


@dataclass
class Refresh:
    family: str
    client_id: str
    subject: str
    scope: str | None
    resource: str
    expires_at: float
    used: bool = False


Outcome = Literal["unknown", "expired", "used", "revoked"]


@dataclass
class Grants:
    """The in-memory store; every method is atomic (a lock), so two redemptions of one code
    or one refresh token can never both succeed."""

    code_lifetime: float
    refresh_lifetime: float
    clock: Callable[[], float] = time.monotonic
    _pending: dict[str, Pending] = field(default_factory=dict)
    _codes: dict[str, Code] = field(default_factory=dict)
    _refresh: dict[str, Refresh] = field(default_factory=dict)
    _revoked: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- sign-in requests waiting for a user --

    def add_pending(self, authorization: Authorization) -> str:
        with self._lock:
            self._prune()
            request_id = secrets.token_urlsafe(24)
            self._pending[request_id] = Pending(
                authorization, self.clock() + PENDING_LIFETIME_SECONDS
            )
            return request_id

    def pending(self, request_id: str) -> Authorization | None:
        with self._lock:
            entry = self._pending.get(request_id)
            if entry is None or entry.expires_at <= self.clock():
                return None
            return entry.authorization

    def take_pending(self, request_id: str) -> Authorization | None:
        """The request, once: a second submission of the same login form finds nothing."""
        with self._lock:
            entry = self._pending.pop(request_id, None)
            if entry is None or entry.expires_at <= self.clock():
                return None
            return entry.authorization

    # -- authorization codes --

    def issue_code(self, authorization: Authorization, subject: str) -> str:
        with self._lock:
            self._prune()
            code = secrets.token_urlsafe(32)
            self._codes[_digest(code)] = Code(
                authorization, subject, self.clock() + self.code_lifetime
            )
            return code

    def redeem_code(self, code: str) -> Code | Outcome:
        """The code's grant, marking it used; or why not. A reused code's refresh token
        family is revoked here."""
        with self._lock:
            entry = self._codes.get(_digest(code))
            if entry is None:
                return "unknown"
            if entry.used:
                if entry.family is not None:
                    self._revoked.add(entry.family)
                return "used"
            entry.used = True
            if entry.expires_at <= self.clock():
                return "expired"
            return entry

    def start_family(self, code: Code) -> str:
        """A new refresh token family for what ``code`` granted, remembered on the code."""
        with self._lock:
            code.family = secrets.token_urlsafe(16)
            return code.family

    # -- refresh tokens --

    def issue_refresh(
        self, family: str, *, client_id: str, subject: str, scope: str | None, resource: str
    ) -> str:
        with self._lock:
            token = secrets.token_urlsafe(32)
            self._refresh[_digest(token)] = Refresh(
                family, client_id, subject, scope, resource, self.clock() + self.refresh_lifetime
            )
            return token

    def find_refresh(self, token: str) -> Refresh | Outcome:
        """The refresh token's grant without using it, or why it cannot be used. A retired
        (already rotated) token revokes its family here."""
        with self._lock:
            entry = self._refresh.get(_digest(token))
            if entry is None:
                return "unknown"
            if entry.family in self._revoked:
                return "revoked"
            if entry.used:
                self._revoked.add(entry.family)
                return "used"
            if entry.expires_at <= self.clock():
                return "expired"
            return entry

    def rotate(self, token: str) -> bool:
        """Retire ``token``; False if something else retired or revoked it meanwhile."""
        with self._lock:
            entry = self._refresh.get(_digest(token))
            if entry is None or entry.used or entry.family in self._revoked:
                return False
            entry.used = True
            return True

    def is_revoked(self, family: str) -> bool:
        with self._lock:
            return family in self._revoked

    # -- housekeeping --

    def _prune(self) -> None:
        """Forget what can no longer be used (a used refresh token is kept until it would
        have expired, so its reuse is still detected)."""
        now = self.clock()
        self._pending = {k: v for k, v in self._pending.items() if v.expires_at > now}
        self._codes = {
            k: v for k, v in self._codes.items() if v.expires_at + USED_CODE_MEMORY_SECONDS > now
        }
        if len(self._refresh) > 1000:
            self._refresh = {k: v for k, v in self._refresh.items() if v.expires_at > now}
            live = {entry.family for entry in self._refresh.values()}
            self._revoked &= live


def _digest(secret: str) -> str:
    """Codes and refresh tokens are kept by their SHA-256, never as given."""
    return hashlib.sha256(secret.encode()).hexdigest()

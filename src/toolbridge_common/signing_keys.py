"""An RSA signing key kept in a file: created once (mode 0600), named by its thumbprint.

Shared by the dev issuer (its token signing key) and the API (the key of the tokens it issues
by RFC 8693 token exchange). The key persists so tokens stay valid across restarts; its
``kid`` is the RFC 7638 JWK thumbprint, so the same key always has the same ``kid`` without
storing one. Creation is atomic (a complete temporary file hard-linked into place), so
processes starting at the same time end up sharing one key instead of overwriting each
other's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from loguru import logger

_KEY_BITS = 2048


class SigningKeyError(Exception):
    """The key file (or value) exists but cannot be used; the message names it."""


@dataclass(frozen=True)
class SigningKey:
    """An RSA private key that signs RS256 tokens under its thumbprint ``kid``."""

    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS))

    @classmethod
    def from_pem(cls, data: bytes, *, source: str) -> SigningKey:
        """The key in ``data`` (unencrypted PEM); :class:`SigningKeyError` naming ``source``
        when it is not an RSA private key."""
        try:
            private_key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            private_key = None
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise SigningKeyError(f"{source} is not an unencrypted RSA private key in PEM")
        return cls(private_key)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    @cached_property
    def kid(self) -> str:
        return jwk_thumbprint(self.public_key)

    def public_jwk(self) -> dict[str, Any]:
        """The public key as published in the JWKS."""
        jwk = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {
            "kty": "RSA",
            "n": jwk["n"],
            "e": jwk["e"],
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
        }

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        """An RS256 JWS of ``claims`` whose header names this key."""
        return jwt.encode(
            claims,
            self.private_key,
            algorithm="RS256",
            headers={**(headers or {}), "kid": self.kid},
        )

    def pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (the key file's format)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def jwk_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order, so it
    depends on the key alone."""
    jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(canonical).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_or_create_key_file(path: Path) -> SigningKey:
    """The key in ``path``, created (with its folder, mode 0700, and the file mode 0600) if
    there is none.

    Raises :class:`SigningKeyError` naming the file when it exists but is not a usable RSA
    private key; the file is then left as it is, since it may be a key someone still needs.
    """
    try:
        if not path.exists():  # raises too, e.g. in a folder of another user
            _create(path)
    except OSError as exc:
        raise SigningKeyError(
            f"cannot create the signing key {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(
            f"cannot read the signing key {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        return SigningKey.from_pem(data, source=f"the signing key {path}")
    except SigningKeyError as exc:
        raise SigningKeyError(
            f"{exc}; move it away to have a new key created (tokens signed with the old one "
            "stop verifying)"
        ) from None


def _create(path: Path) -> None:
    """Write a new key unless another process gets there first (then keep theirs)."""
    directory = path.parent
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
        directory.chmod(0o700)  # mkdir's mode is narrowed by the umask, never widened
    key = SigningKey.generate()
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".signing-key-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:  # mkstemp creates it with mode 0600
            file.write(key.pem())
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # fails if the file exists: never replaces a key
        except FileExistsError:
            return
    finally:
        os.unlink(temporary)
    logger.info("Created signing key {} (kid {})", path, key.kid)

"""The issuer's RSA signing key: created once in the state folder, kept on disk, named by its
thumbprint (:mod:`toolbridge_common.signing_keys`, which the API uses for its own key too)."""

from __future__ import annotations

from pathlib import Path

from toolbridge_common.signing_keys import (
    SigningKey,
    SigningKeyError,
    jwk_thumbprint,
    load_or_create_key_file,
)

__all__ = [
    "KEY_FILE_NAME",
    "SigningKey",
    "SigningKeyError",
    "jwk_thumbprint",
    "key_path",
    "load_or_create_signing_key",
]

KEY_FILE_NAME = "signing-key.pem"


def key_path(state_dir: Path) -> Path:
    """Where the signing key of ``state_dir`` is kept."""
    return state_dir / KEY_FILE_NAME


def load_or_create_signing_key(state_dir: Path) -> SigningKey:
    """The key in ``state_dir``, created (with the directory, mode 0700) if there is none.

    Raises :class:`SigningKeyError` naming the file when it exists but is not a usable RSA
    private key; the file is then left as it is, since it may be a key someone still needs.
    """
    return load_or_create_key_file(key_path(state_dir))

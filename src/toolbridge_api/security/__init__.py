"""Authentication, tenant isolation and rate limiting for the API."""

from toolbridge_api.security.principal import AuthError, Principal

__all__ = ["AuthError", "Principal"]

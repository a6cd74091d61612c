"""Authentication, tenant isolation and rate limiting for the API."""

from toolbridge_api.security.authenticator import Authenticator
from toolbridge_api.security.principal import AuthError, Principal
from toolbridge_api.security.ratelimit import RateLimiter
from toolbridge_api.security.tenant import TenantVerifier, tenant_signature
from toolbridge_api.security.tokens import TokenVerifier

__all__ = [
    "AuthError",
    "Authenticator",
    "Principal",
    "RateLimiter",
    "TenantVerifier",
    "TokenVerifier",
    "tenant_signature",
]

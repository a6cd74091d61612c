"""Authentication, tenant isolation and rate limiting for the API."""

from toolbridge_api.security.authenticator import Authenticator
from toolbridge_api.security.principal import AuthError, Principal
from toolbridge_api.security.ratelimit import (
    RATE_GROUPS,
    RateDecision,
    RateGroup,
    RateLimitBackend,
    RateLimiter,
    RateLimitHealth,
    RateLimits,
)
from toolbridge_api.security.tenant import TenantVerifier
from toolbridge_api.security.tokens import TokenVerifier
from toolbridge_common.contract import tenant_signature

__all__ = [
    "RATE_GROUPS",
    "AuthError",
    "Authenticator",
    "Principal",
    "RateDecision",
    "RateGroup",
    "RateLimitBackend",
    "RateLimitHealth",
    "RateLimiter",
    "RateLimits",
    "TenantVerifier",
    "TokenVerifier",
    "tenant_signature",
]

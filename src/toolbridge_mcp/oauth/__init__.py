"""OAuth 2.0 at the token endpoint: grants, client authentication, one request and its
answer, and the retry policy. Stateless: caching and refresh live in
:mod:`toolbridge_mcp.tokens`.

- :mod:`.grants` — what is asked for (:class:`ClientCredentialsGrant`; token exchange next)
- :mod:`.client_auth` — how the client proves itself (``client_secret_post``/``_basic``,
  ``private_key_jwt``)
- :mod:`toolbridge_common.discovery` — an issuer's endpoints (RFC 8414, OpenID discovery)
- :mod:`.endpoint` — :class:`TokenEndpoint` (one request) and :class:`TokenClient` (retries)
- :mod:`.response` — reading the answer; :mod:`.errors` — :class:`TokenError`
- :mod:`.retry` — :class:`RetryPolicy` over stamina
"""

from toolbridge_common.discovery import (
    DiscoveryError,
    ServerMetadata,
    discover,
    metadata_urls,
)
from toolbridge_mcp.oauth.client_auth import (
    ASSERTION_TYPE,
    ClientAuthentication,
    ClientAuthMethod,
    ClientCredentials,
    ClientKey,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    client_authentication,
)
from toolbridge_mcp.oauth.endpoint import TokenClient, TokenEndpoint
from toolbridge_mcp.oauth.errors import TokenError
from toolbridge_mcp.oauth.grants import ClientCredentialsGrant, Grant
from toolbridge_mcp.oauth.response import (
    IssuedToken,
    TokenResponse,
    parse_retry_after,
    parse_token_response,
    unverified_claims,
)
from toolbridge_mcp.oauth.retry import DeadlineExceeded, RetryPolicy

__all__ = [
    "ASSERTION_TYPE",
    "ClientAuthMethod",
    "ClientAuthentication",
    "ClientCredentials",
    "ClientCredentialsGrant",
    "ClientKey",
    "ClientSecretBasic",
    "ClientSecretPost",
    "DeadlineExceeded",
    "DiscoveryError",
    "Grant",
    "IssuedToken",
    "PrivateKeyJwt",
    "RetryPolicy",
    "ServerMetadata",
    "TokenClient",
    "TokenEndpoint",
    "TokenError",
    "TokenResponse",
    "client_authentication",
    "discover",
    "metadata_urls",
    "parse_retry_after",
    "parse_token_response",
    "unverified_claims",
]

"""An issuer URL alone is enough: the token endpoint (MCP server, client credentials) and the
JWKS (per-user mode) come from the issuer's metadata document, RFC 8414 first, OpenID
discovery next; explicit URLs win. Against the fake identity provider and the dev issuer,
over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AUDIENCE, CLIENT_ID, CLIENT_SECRET, LogCapture
from tests.support.dev_issuer import AUDIENCE as DEV_AUDIENCE
from tests.support.dev_issuer import RunningIssuer, track, verify
from tests.support.idp import IdP
from toolbridge_common.discovery import DiscoveryError, discover, metadata_urls
from toolbridge_mcp.config import Settings, load_settings
from toolbridge_mcp.oauth import RetryPolicy, TokenError
from toolbridge_mcp.tokens import TokenManager

FAST = RetryPolicy(wait_initial=0.01, wait_max=0.05, deadline=2.0)


def issuer_settings(issuer: str, **more: str) -> Settings:
    return load_settings(
        auth0_client_id=CLIENT_ID,
        auth0_client_secret=CLIENT_SECRET,
        auth0_issuer=issuer,
        _env_file=None,
        **more,
    )


@pytest.fixture(scope="module")
def dev_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIssuer]:
    with RunningIssuer(tmp_path_factory.mktemp("issuer")) as running:
        yield running


def test_metadata_locations_follow_rfc_8414_then_openid() -> None:
    assert metadata_urls("https://idp.example/") == [
        "https://idp.example/.well-known/oauth-authorization-server",
        "https://idp.example/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://idp.example/tenant/v2") == [
        "https://idp.example/.well-known/oauth-authorization-server/tenant/v2",
        "https://idp.example/tenant/v2/.well-known/openid-configuration",
        "https://idp.example/tenant/v2/.well-known/oauth-authorization-server",
    ]


async def test_the_token_endpoint_is_discovered_from_the_issuer(idp: IdP) -> None:
    settings = issuer_settings(idp.issuer, auth0_audience=AUDIENCE)
    async with TokenManager.from_settings(settings, retry=FAST) as manager:
        assert manager.token_url == idp.issuer, "not known before the first request"
        assert await manager.get_token() == idp.issued[0]
        assert manager.token_url == idp.token_url
        assert await manager.get_token() == idp.issued[0]
    assert idp.metadata_fetches == ["/.well-known/oauth-authorization-server"]
    assert idp.requests[0].form["audience"] == AUDIENCE


async def test_openid_discovery_is_the_fallback(idp: IdP) -> None:
    idp.set_metadata(idp.metadata(), paths=("/.well-known/openid-configuration",))
    async with TokenManager.from_settings(issuer_settings(idp.issuer), retry=FAST) as manager:
        assert await manager.get_token() == idp.issued[0]
    assert idp.metadata_fetches == [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ]


async def test_an_explicit_token_url_wins_over_the_issuer(idp: IdP) -> None:
    settings = issuer_settings(idp.issuer, auth0_token_url=idp.token_url)
    async with TokenManager.from_settings(settings, retry=FAST) as manager:
        await manager.get_token()
    assert idp.metadata_fetches == []


async def test_metadata_of_another_issuer_is_refused(idp: IdP) -> None:
    """RFC 8414 §3.3: a document naming another issuer must not send our credentials to
    its token endpoint."""
    idp.set_metadata(idp.metadata() | {"issuer": "https://evil.example/"})
    async with TokenManager.from_settings(issuer_settings(idp.issuer), retry=FAST) as manager:
        with pytest.raises(TokenError) as info:
            await manager.get_token()
    message = str(info.value)
    assert "TOOLBRIDGE_AUTH0_ISSUER" in message
    assert "https://evil.example/" in message
    assert idp.requests == []


async def test_no_metadata_is_a_clear_error_naming_the_setting(idp: IdP) -> None:
    idp.set_metadata({})
    async with TokenManager.from_settings(issuer_settings(idp.issuer), retry=FAST) as manager:
        with pytest.raises(TokenError) as info:
            await manager.get_token()
    assert "No authorization server metadata for TOOLBRIDGE_AUTH0_ISSUER" in str(info.value)
    assert "HTTP 404" in str(info.value)
    assert not info.value.retryable


async def test_discovery_is_retried_by_the_timer_when_the_issuer_is_down(
    idp: IdP, logs: LogCapture
) -> None:
    """The issuer unreachable at start: start() only degrades, and the manager's retries
    pick the endpoint up once it answers."""
    settings = issuer_settings("http://127.0.0.1:9/")
    async with TokenManager.from_settings(settings, retry=RetryPolicy(deadline=0.2)) as manager:
        await manager.start()
        assert manager.stats.failure_count == 1
        assert manager.stats.last_error is not None
        assert manager.next_refresh_at is not None, "the timer tries again"
    assert any("TOOLBRIDGE_AUTH0_ISSUER" in m for m in logs.messages("ERROR"))


def test_an_issuer_needs_https_except_on_loopback() -> None:
    with pytest.raises(Exception, match="TOOLBRIDGE_AUTH0_ISSUER"):
        issuer_settings("http://idp.example/")


async def test_discovery_against_the_dev_issuer(dev_issuer: RunningIssuer) -> None:
    """The real metadata document of the dev authorization server."""
    metadata = await discover(dev_issuer.issuer_url, setting="TEST")
    assert metadata.token_endpoint == dev_issuer.token_url
    assert metadata.jwks_uri == dev_issuer.jwks_url
    assert "private_key_jwt" in metadata.token_endpoint_auth_methods
    settings = issuer_settings(dev_issuer.issuer_url, auth0_audience=DEV_AUDIENCE)
    async with TokenManager.from_settings(settings, retry=FAST) as manager:
        token = track(await manager.get_token())
    claims = verify(token, dev_issuer.jwks_url, issuer=dev_issuer.issuer_url)
    assert claims["sub"] == f"{CLIENT_ID}@clients"


async def test_discovery_names_the_setting_when_nothing_answers() -> None:
    with pytest.raises(DiscoveryError) as info:
        await discover("http://127.0.0.1:9/", setting="SOME_SETTING")
    assert "SOME_SETTING=http://127.0.0.1:9/" in str(info.value)
    assert info.value.retryable


def test_per_user_mode_discovers_the_jwks(idp: IdP, tmp_path: Path) -> None:
    """oidc-provider serves its keys at /jwks, not at Auth0's path: per-user mode takes
    ``jwks_uri`` from the metadata (once, as the server is built) instead of guessing."""
    idp.set_metadata(idp.metadata() | {"jwks_uri": f"{idp.base_url}/jwks"})
    settings = load_settings(
        oauth_issuer=idp.issuer, oauth_audience=AUDIENCE, oauth_passthrough=True, _env_file=None
    )
    assert settings.jwks_url(discover=True) == f"{idp.base_url}/jwks"
    assert settings.jwks_url() == f"{idp.base_url}/.well-known/jwks.json"
    explicit = load_settings(
        oauth_issuer=idp.issuer,
        oauth_audience=AUDIENCE,
        oauth_jwks_url=f"{idp.base_url}/keys",
        oauth_passthrough=True,
        _env_file=None,
    )
    assert explicit.jwks_url(discover=True) == f"{idp.base_url}/keys"
    assert len(idp.metadata_fetches) == 1


def test_per_user_mode_without_metadata_guesses_and_says_so(idp: IdP, logs: LogCapture) -> None:
    idp.set_metadata({})
    settings = load_settings(
        oauth_issuer=idp.issuer, oauth_audience=AUDIENCE, oauth_passthrough=True, _env_file=None
    )
    assert settings.jwks_url(discover=True) == f"{idp.base_url}/.well-known/jwks.json"
    errors = logs.messages("ERROR")
    assert any("TOOLBRIDGE_OAUTH_JWKS_URL" in e and "TOOLBRIDGE_OAUTH_ISSUER" in e for e in errors)

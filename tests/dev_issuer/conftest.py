"""The development issuer over real HTTP on 127.0.0.1: in a server thread (``RunningIssuer``)
or as the ``toolbridge-dev-issuer serve`` command (``IssuerProcess``). Every token either
hands out is checked against the test's logs afterwards. The helpers are in
``tests.support.dev_issuer``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.conftest import LogCapture
from tests.support.dev_issuer import RunningIssuer, forget_tracked, tracked
from tests.support.jwks import leaked


@pytest.fixture(autouse=True)
def no_issued_token_in_logs(logs: LogCapture) -> Iterator[None]:
    """The shared ``logs`` fixture checks for secrets; this adds the tokens issued here."""
    forget_tracked()
    yield
    assert not leaked(logs.text(), tracked()), "an issued token appeared in the logs"


@pytest.fixture(autouse=True)
def quiet_client_transport() -> Iterator[None]:
    """The tests' HTTP clients log response headers at DEBUG, a redirect's ``Location`` (and
    so its code) among them; the leak check is about what the issuer logs."""
    loggers = [logging.getLogger(name) for name in ("httpcore", "httpcore2")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.INFO)
    yield
    for each, level in zip(loggers, levels, strict=True):
        each.setLevel(level)


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIssuer]:
    with RunningIssuer(tmp_path_factory.mktemp("issuer")) as running:
        yield running

"""The official conformance suites against feedserver's Socket.IO / Engine.IO / WebSocket layers.

Part of `make test` (about 26 s together); `pytest -m conformance tests/conformance` runs
them alone, `make conformance` prints each suite's own summary (docs/testing.md).
"""

from __future__ import annotations

import pytest

from tests.conformance.apps import STACKS
from tests.conformance.runner import run_autobahn, run_protocol_suite

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(600)]

ENGINEIO_TESTS = 24
SOCKETIO_TESTS = 32


async def test_engineio_suite_passes_all_24_tests_against_the_gateway_engine() -> None:
    result = await run_protocol_suite("engineio", STACKS["gateway"])
    assert (result.passing, result.failing) == (ENGINEIO_TESTS, 0), result.summary()


async def test_socketio_suite_passes_all_32_tests_against_the_gateway_server() -> None:
    result = await run_protocol_suite("socketio", STACKS["gateway"])
    assert (result.passing, result.failing) == (SOCKETIO_TESTS, 0), result.summary()


async def test_autobahn_accepts_every_case_of_the_websocket_echo_endpoint() -> None:
    result = await run_autobahn("engineio")
    assert result.passed, result.summary()

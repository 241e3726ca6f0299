"""Shared fixtures: settings, and a real feedserver on a free port in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from feedserver.app import create_app
from feedserver.config import Settings
from tests.redis_cluster import RedisClusterServers, running_cluster
from tests.redis_server import RedisServer, running_redis

ServerFactory = Callable[..., Awaitable[TestServer]]


def make_settings(**overrides: Any) -> Settings:
    """Test settings: the defaults, generous rate limits, and any overrides."""
    base = Settings(rate_limit_max_requests=1_000_000, cors_origins=("*",))
    return replace(base, **overrides)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def start_server(aiohttp_server: Any) -> ServerFactory:
    """Start feedserver (with `make_settings(**overrides)`) on 127.0.0.1 and a free port."""

    async def start(**overrides: Any) -> TestServer:
        app = create_app(make_settings(**overrides))
        server: TestServer = await aiohttp_server(app, host="127.0.0.1")
        return server

    return start


@pytest.fixture
async def server(start_server: ServerFactory) -> TestServer:
    return await start_server()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL for `start_server`: memory, or a redis-server of the test's own."""
    if request.param == "memory":
        yield "memory"
        return
    async with running_redis(tmp_path, appendonly=False) as redis:
        yield redis.url


@pytest.fixture(scope="session")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """One real 3-master Redis Cluster for the whole run (starting one takes seconds)."""
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster(shared_redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The shared Redis Cluster, emptied for this test."""
    shared_redis_cluster.flush()
    return shared_redis_cluster


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a redis-server of the test's own (no persistence), or of the shared
    3-master Redis Cluster (emptied): what runs on both."""
    if request.param == "redis-cluster":
        yield request.getfixturevalue("redis_cluster").url
        return
    async with running_redis(tmp_path, appendonly=False) as redis:
        yield redis.url


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A real Redis Cluster of this test's own: 3 masters with one replica each, and a 1 s
    node timeout, so that a killed master's replica takes over within about 2 s. Its own,
    since failovers and resharding change it for good (it starts in about 2 s)."""
    with running_cluster(tmp_path, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server of this test's own, with AOF on (restarts keep the data)."""
    async with running_redis(tmp_path, appendonly=True) as redis:
        yield redis

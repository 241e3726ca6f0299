"""Rate limits and connection caps on a real `limits` memory storage."""

from __future__ import annotations

import pytest

from feedserver.core import LocalConnections
from feedserver.errors import RateLimited, TooManyConnections
from feedserver.quotas import (
    ConnectionCaps,
    FixedWindow,
    RequestLimiter,
    TenantPublishLimiter,
    open_limit_storage,
    window_seconds,
)


async def test_a_client_gets_its_quota_then_is_refused_with_the_time_to_wait() -> None:
    limiter = RequestLimiter(FixedWindow(open_limit_storage("memory://"), "ip", 2, 60))
    first, second, third = [await limiter.hit("198.51.100.1") for _ in range(3)]
    assert first.allowed and first.headers() == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "1",
        "RateLimit-Reset": "60",
    }
    assert second.allowed and second.headers()["RateLimit-Remaining"] == "0"
    assert not third.allowed and third.headers()["RateLimit-Remaining"] == "0"
    assert 1 <= third.reset_after <= 60
    assert (await limiter.hit("198.51.100.2")).allowed  # another client has its own window


async def test_a_tenant_over_its_publish_rate_is_refused_and_others_are_not() -> None:
    limiter = TenantPublishLimiter(FixedWindow(open_limit_storage("memory://"), "tenant", 3, 1))
    for _ in range(3):
        await limiter.hit("tenant_a")
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("tenant_a")
    assert refused.value.retry_after == 1
    await limiter.hit("tenant_b")


def test_windows_shorter_than_a_second_count_as_one_second() -> None:
    assert window_seconds(1) == 1
    assert window_seconds(1500) == 2
    assert window_seconds(900_000) == 900


async def test_connection_caps_refuse_per_address_and_per_tenant_and_count_nothing() -> None:
    tenants, addresses = LocalConnections(), LocalConnections()
    caps = ConnectionCaps(tenants, addresses, per_tenant=3, per_address=2)
    await caps.admit("tenant_a", "198.51.100.1")
    await caps.admit("tenant_b", "198.51.100.1")
    with pytest.raises(TooManyConnections, match="address"):
        await caps.admit("tenant_a", "198.51.100.1")
    await caps.admit("tenant_a", "198.51.100.2")
    await caps.admit("tenant_a", "198.51.100.3")
    with pytest.raises(TooManyConnections, match="tenant"):
        await caps.admit("tenant_a", "198.51.100.4")
    assert await tenants.count("tenant_a") == 3 and await addresses.count("198.51.100.4") == 0
    caps.release("tenant_a", "198.51.100.3")
    await caps.admit("tenant_a", "198.51.100.4")


async def test_a_released_address_is_forgotten() -> None:
    addresses = LocalConnections()
    addresses.opened("198.51.100.1")
    addresses.closed("198.51.100.1")
    addresses.closed("198.51.100.1")
    assert await addresses.count("198.51.100.1") == 0
    assert addresses._counts == {}

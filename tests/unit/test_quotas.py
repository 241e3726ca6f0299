"""Rate limits on this process's window counters, and connection caps."""

from __future__ import annotations

import pytest

from feedserver.core import LocalConnections
from feedserver.errors import RateLimited, TooManyConnections
from feedserver.quotas import (
    ConnectionCaps,
    FixedWindow,
    LocalWindows,
    RequestLimiter,
    TenantPublishLimiter,
    open_window_counters,
    window_seconds,
)


async def test_a_client_gets_its_quota_then_is_refused_with_the_time_to_wait() -> None:
    limiter = RequestLimiter(FixedWindow(open_window_counters("memory://"), "ip", 2, 60))
    first, second, third = [await limiter.hit("198.51.100.1") for _ in range(3)]
    assert first.allowed and dict(first.headers()) == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "1",
        "RateLimit-Reset": "60",
    }
    assert second.allowed and dict(second.headers())["RateLimit-Remaining"] == "0"
    assert not third.allowed and dict(third.headers())["RateLimit-Remaining"] == "0"
    assert 1 <= third.reset_after <= 60
    assert (await limiter.hit("198.51.100.2")).allowed  # another client has its own window


async def test_a_tenant_over_its_publish_rate_is_refused_and_others_are_not() -> None:
    limiter = TenantPublishLimiter(FixedWindow(open_window_counters("memory://"), "tenant", 3, 1))
    for _ in range(3):
        await limiter.hit("tenant_a")
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("tenant_a")
    assert refused.value.retry_after == 1
    await limiter.hit("tenant_b")


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_window_starts_at_the_first_hit_and_counts_afresh_once_it_ends() -> None:
    clock = FakeClock()
    limiter = RequestLimiter(FixedWindow(LocalWindows(clock), "ip", 2, 60))
    assert (await limiter.hit("198.51.100.1")).reset_after == 60
    clock.now += 59.5
    refused = [await limiter.hit("198.51.100.1") for _ in range(2)][-1]
    assert not refused.allowed and refused.reset_after == 1
    clock.now += 0.5  # the window's last instant is over
    again = await limiter.hit("198.51.100.1")
    assert again.allowed and dict(again.headers())["RateLimit-Remaining"] == "1"
    assert again.reset_after == 60


async def test_ended_windows_of_clients_that_went_away_are_dropped() -> None:
    clock = FakeClock()
    counters = LocalWindows(clock)
    for n in range(100):
        await counters.incr(f"198.51.100.{n}", 1)
    clock.now += 60
    await counters.incr("203.0.113.1", 1)  # a new window: ended ones are swept
    assert list(counters._windows) == ["203.0.113.1"]
    assert await counters.seconds_left("198.51.100.1") == 0.0


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

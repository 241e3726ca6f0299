"""The client address behind per-IP limits: X-Forwarded-For only from a trusted proxy."""

from __future__ import annotations

from feedserver.addresses import ClientAddresses, is_loopback

PROXY = "10.0.0.5"


def test_without_a_trusted_proxy_the_peer_is_the_client() -> None:
    addresses = ClientAddresses(())
    assert addresses.resolve("203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert addresses.resolve(None, None) == "unknown"


def test_a_peer_that_is_not_the_trusted_proxy_cannot_choose_its_address() -> None:
    addresses = ClientAddresses((PROXY,))
    assert addresses.resolve("203.0.113.9", "127.0.0.1") == "203.0.113.9"


def test_behind_the_trusted_proxy_the_client_is_the_hop_the_proxy_appended() -> None:
    addresses = ClientAddresses((PROXY,))
    assert addresses.resolve(PROXY, "198.51.100.1") == "198.51.100.1"
    # Whatever the client wrote itself stands to the left and is ignored.
    assert addresses.resolve(PROXY, "127.0.0.1, 198.51.100.1") == "198.51.100.1"
    assert addresses.resolve(PROXY, f"198.51.100.1, {PROXY}") == "198.51.100.1"
    assert addresses.resolve(PROXY, "2001:db8::1") == "2001:db8::1"


def test_garbage_from_the_proxy_falls_back_to_the_peer() -> None:
    addresses = ClientAddresses((PROXY,))
    assert addresses.resolve(PROXY, "not-an-ip") == PROXY
    assert addresses.resolve(PROXY, PROXY) == PROXY
    assert addresses.resolve(PROXY, "") == PROXY


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not is_loopback("10.0.0.1") and not is_loopback("unknown")

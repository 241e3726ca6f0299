"""The client address behind per-IP limits: X-Forwarded-For only from a trusted proxy."""

from __future__ import annotations

from feedserver.addresses import ClientAddresses, is_loopback, limit_key, normalise

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
    assert addresses.client(PROXY, "2001:db8::1") == "2001:db8::1"


def test_garbage_from_the_proxy_falls_back_to_the_peer() -> None:
    addresses = ClientAddresses((PROXY,))
    assert addresses.resolve(PROXY, "not-an-ip") == PROXY
    assert addresses.resolve(PROXY, PROXY) == PROXY
    assert addresses.resolve(PROXY, "") == PROXY


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not is_loopback("10.0.0.1") and not is_loopback("unknown")


def test_every_spelling_of_an_ipv4_mapped_address_is_the_ipv4_address() -> None:
    for spelling in ("10.0.0.1", "::ffff:10.0.0.1", "::ffff:a00:1", "0:0:0:0:0:ffff:10.0.0.1"):
        assert normalise(spelling) == "10.0.0.1"
    assert normalise("::FFFF:0A00:0001") == "10.0.0.1"


def test_ipv6_is_written_compressed_and_garbage_is_not_an_address() -> None:
    assert normalise("2001:0DB8:0000:0000:0000:0000:0000:0001") == "2001:db8::1"
    assert normalise("::1") == "::1"
    for garbage in ("", "unknown", "10.0.0.1:80", "[2001:db8::1]", "010.0.0.1", "1.2.3"):
        assert normalise(garbage) is None


def test_limits_count_an_ipv6_client_by_its_64_and_an_ipv4_client_by_its_address() -> None:
    assert limit_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert limit_key("10.0.0.1") == "10.0.0.1"
    assert limit_key("unknown") == "unknown"


def test_the_limit_key_of_a_forwarded_client_is_normalised_first() -> None:
    addresses = ClientAddresses((PROXY,))
    assert addresses.resolve(PROXY, "::ffff:a00:1") == "10.0.0.1"
    assert addresses.resolve(PROXY, "2001:db8:0:0:1::5") == "2001:db8::/64"
    assert addresses.resolve("::ffff:203.0.113.9", None) == "203.0.113.9"


def test_a_trusted_proxy_is_recognised_in_any_spelling() -> None:
    # A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
    assert ClientAddresses((PROXY,)).client("::ffff:10.0.0.5", "198.51.100.1") == "198.51.100.1"
    assert ClientAddresses(("::ffff:10.0.0.5",)).client(PROXY, "198.51.100.1") == "198.51.100.1"
    proxy6 = ClientAddresses(("2001:db8::53",))
    assert proxy6.client("2001:db8:0::53", "198.51.100.1, 2001:db8::53") == "198.51.100.1"


def test_a_loopback_client_is_loopback_in_its_ipv4_mapped_spelling_too() -> None:
    assert is_loopback(ClientAddresses(()).client("::ffff:127.0.0.1", None))

"""Who the client is on the network: the peer, or the address a trusted proxy reports.

Addresses are normalised before they are compared or counted: an IPv4-mapped IPv6 address
(`::ffff:10.0.0.1`, however it is spelt) is the IPv4 address, and IPv6 is written
compressed, so that one client cannot get several budgets by spelling its address in
several ways. The per-IP limits and caps count an IPv6 client by its /64 network: that is
what one subscriber or host is given (RFC 6177), so rotating addresses inside it gains
nothing. That is the rule, not an option: a /64 shared by many clients (a NAT64 gateway, a
hosting provider's network) shares one budget, as an IPv4 NAT does.
"""

from __future__ import annotations

import functools
import ipaddress

IPV6_PREFIX = 64


class ClientAddresses:
    """Resolves the client of a request: its address, and the key per-IP limits count.

    `X-Forwarded-For` is believed only when the peer itself is one of the trusted proxies
    (`FEED_TRUST_PROXY`); then the client is the right-most hop that is not a trusted proxy,
    because everything to its left was written by the client and may be forged.
    """

    def __init__(self, trusted_proxies: tuple[str, ...]) -> None:
        self._trusted = frozenset(normalise(proxy) or proxy for proxy in trusted_proxies)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        """The key the per-IP rate limits and connection caps count this client under."""
        return limit_key(self.client(peer, forwarded_for))

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address, normalised; "unknown" without a peer."""
        client = (normalise(peer) or peer) if peer else "unknown"
        if not forwarded_for or client not in self._trusted:
            return client
        for raw_hop in reversed(forwarded_for.split(",")):
            hop = normalise(raw_hop.strip())
            if hop is None:
                return client
            if hop not in self._trusted:
                return hop
        return client


# Cached: parsing an address costs microseconds and runs for every connect and request,
# while the addresses seen are few (one per client). Bounded, so that a client spraying
# addresses (X-Forwarded-For from a trusted proxy) cannot grow it.
_CACHE = 4096


@functools.lru_cache(maxsize=_CACHE)
def normalise(text: str) -> str | None:
    """An IP address in one spelling (IPv4-mapped IPv6 as IPv4, IPv6 compressed), or None
    when `text` is not an IP address."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=_CACHE)
def limit_key(address: str) -> str:
    """What per-IP limits count: an IPv4 address itself, an IPv6 address's /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return address
    return str(ipaddress.IPv6Network((int(ip), IPV6_PREFIX), strict=False))


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

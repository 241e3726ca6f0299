"""Who the client is on the network: the peer, or the address a trusted proxy reports."""

from __future__ import annotations

import ipaddress


class ClientAddresses:
    """Resolves the client address used for per-IP limits and loopback checks.

    `X-Forwarded-For` is believed only when the peer itself is one of the trusted proxies
    (`FEED_TRUST_PROXY`); then the client is the right-most hop that is not a trusted proxy,
    because everything to its left was written by the client and may be forged.
    """

    def __init__(self, trusted_proxies: tuple[str, ...]) -> None:
        self._trusted = frozenset(trusted_proxies)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        client = peer or "unknown"
        if not forwarded_for or client not in self._trusted:
            return client
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if hop in self._trusted:
                continue
            return hop if _is_ip(hop) else client
        return client


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True

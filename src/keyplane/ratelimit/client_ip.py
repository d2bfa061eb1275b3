"""The client's address: the socket peer, unless that peer is a configured trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str, problems: list[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            problems.append(f"KEYPLANE_TRUSTED_PROXIES: {part!r} is not an address or network")
    return tuple(networks)


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(scope: Scope, proxies: Sequence[Network]) -> str:
    """With no trusted proxies, X-Forwarded-For is ignored, so rotating it changes nothing.

    Behind trusted proxies, the right-most address not itself a trusted proxy is the client.
    """
    peer = scope.get("client")
    address = peer[0] if peer else "unknown"
    if not proxies or not _trusted(address, proxies):
        return address
    # Several X-Forwarded-For lines form one list (RFC 9110 5.3): a proxy that adds its own
    # line (HAProxy does) must not let the client's line, sent first, pick the address.
    forwarded = ",".join(Headers(scope=scope).getlist("x-forwarded-for"))
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _trusted(hop, proxies):
            return hop
    return address

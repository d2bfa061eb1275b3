"""Built-in check: a key with `allowedCidrs` is refused from any other address."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

from keyplane.errors import Forbidden
from keyplane.permissions.checks import CheckRequest

MAX_CIDRS = 50


class IpDenied(Forbidden):
    """FORBIDDEN because of the client's address: the activity log shows it as KEY_IP_DENIED."""


class IpAllowlist:
    name: ClassVar[str] = "ip_allowlist"
    about_request: ClassVar[bool] = True
    restricted_keys_only: ClassVar[bool] = True

    async def __call__(self, request: CheckRequest) -> None:
        allowed = request.restrictions.allowed_cidrs
        if not allowed:
            return
        try:
            address = ipaddress.ip_address(request.client_ip)
        except ValueError:
            address = None
        if address is None or not any(address in network for network in allowed):
            raise IpDenied(
                f"This key may not be used from {request.client_ip}: the address is outside "
                "its allowedCidrs."
            )


def stored_cidrs(values: list[str]) -> str:
    """`allowedCidrs` as given, checked and in stored form (BAD_USER_INPUT otherwise)."""
    from keyplane.errors import BadUserInput

    if len(values) > MAX_CIDRS:
        raise BadUserInput(f"At most {MAX_CIDRS} CIDRs.", field="allowedCidrs")
    networks: list[str] = []
    for value in values:
        try:
            network = str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise BadUserInput(
                f"{value!r} is not an IPv4 or IPv6 address or CIDR.", field="allowedCidrs"
            ) from None
        if network not in networks:
            networks.append(network)
    return ",".join(networks)

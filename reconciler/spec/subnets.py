"""The subnets of the lab's bridges: against each other (pass 3), and against the host's routes and
LXD's other networks (plan)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .. import values
from .declared import Found
from .models import Lab


class Subnet(NamedTuple):
    network: str  # the lab network's name
    key: str  # ipv4.address or ipv6.address
    written: str  # as in lab.yaml: 10.0.0.1/24
    net: Any  # ipaddress.IPv4Network or IPv6Network: 10.0.0.0/24


def _lab_subnets(lab: Lab) -> list[Subnet]:
    """Every subnet the lab's bridges take (valid addresses only: pass 2 reports the others)."""
    out = []
    for name, network in lab.networks.items():
        for key in ("ipv4.address", "ipv6.address"):
            value = network.config.get(key, "none")
            net = values.bridge_subnet(key, value)
            if net is not None:
                out.append(Subnet(name, key, value, net))
    return out


def lab_subnet_overlaps(lab: Lab) -> list[Found]:
    """Two lab bridges on overlapping subnets: the host would route one of them into the other."""
    out, subnets = [], _lab_subnets(lab)
    for i, mine in enumerate(subnets):
        other = next((s for s in subnets[:i] if s.network != mine.network and s.net.version == mine.net.version
                      and s.net.overlaps(mine.net)), None)
        if other:
            out.append(Found(("networks", mine.network, "config", mine.key),
                             f"{mine.written} overlaps network {other.network!r} ({other.written}): give each"
                             " bridge a subnet of its own"))
    return out


def network_overlaps(lab: Lab, host_routes: list[str], lxd_networks: dict[str, str]) -> list[str]:
    """Lab bridges whose subnets overlap the host's routes or LXD's other networks. Pure.

    host_routes: `ip route` destinations such as "192.168.1.0/24 dev eno1" ("default" is skipped).
    lxd_networks: LXD network name -> its ipv4.address or ipv6.address (such as "10.0.3.1/24").
    A network of the lab's own name is itself (an earlier apply), and so are host routes to an LXD
    network's subnet or through a device of a lab network's name: those are not clashes.
    """
    theirs = {name: values.subnet(addr) for name, addr in lxd_networks.items()}
    out = []
    for name, key, written, net in _lab_subnets(lab):
        mine = f"network {name!r} ({key} {written})"
        out += [f"{mine} overlaps LXD network {other!r} ({lxd_networks[other]})"
                for other, other_net in sorted(theirs.items()) if other != name and other_net is not None
                and other_net.version == net.version and net.overlaps(other_net)]
        out += [f"{mine} overlaps the host route {route.strip()!r}"
                for route in host_routes if _route_clashes(route, net, lab, theirs)]
    return out


def _route_clashes(route: str, net: Any, lab: Lab, lxd_subnets: Mapping[str, Any]) -> bool:
    dest, device = values.route_subnet(route)
    if dest is None or dest.version != net.version or device in lab.networks:
        return False
    if dest in lxd_subnets.values():
        return False  # LXD's own bridges route their subnets; those are checked by name above
    return net.overlaps(dest)

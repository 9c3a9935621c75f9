"""Pass 3 of lab.yaml's `forwards:`: each forward's network is the lab's or existing, its listen address
one of that bridge's own subnet, each target a container with a fixed address there."""

from __future__ import annotations

import ipaddress
import re

from .declared import Declared, Found, suggest
from .forward import LISTEN_ADDRESS, Forward, Targeted, port_numbers
from .models import Lab, expanded_devices


def fixed_address(lab: Lab, container: str, network: str) -> str | None:
    """The container's fixed ipv4.address on `network` (its NIC there, profiles included), from lab.yaml."""
    spec = lab.containers.get(container)
    devices = expanded_devices(lab, spec).values() if spec else ()
    found = [d.get("ipv4.address") for d in devices if d.get("type") == "nic" and d.get("network") == network]
    return found[0] if found else None


class Targets:
    """Targets resolved to addresses, each (container, network) worked out once: a lab.yaml may name one
    container in many ports, each through profiles with many devices."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self._found: dict[tuple[str, str], str | None] = {}

    def fixed(self, container: str, network: str) -> str | None:
        if (container, network) not in self._found:
            self._found[container, network] = fixed_address(self.lab, container, network)
        return self._found[container, network]

    def address(self, network: str, t: Targeted) -> str | None:
        return self.fixed(t.target, network) if t.target is not None else t.target_address


def forward_problems(lab: Lab, declared: Declared) -> list[Found]:
    """Each forward's network is the lab's or existing, its listen address a usable one on it, and each
    target a container with a fixed address there."""
    out: list[Found] = []
    targets = Targets(lab)
    for listen, fwd in lab.forwards.items():
        where = ("forwards", listen)
        out += _ports_listed_twice(declared, where, fwd)
        wrong = _network_problems(lab, declared, where, listen, fwd)
        out += wrong
        if any(f.path == where + ("network",) for f in wrong):
            continue  # no network to find the targets' addresses on
        named = [(where, fwd)] + [(where + ("ports", i), p) for i, p in enumerate(fwd.ports)]
        out += [f for path, t in named for f in _target_problems(targets, declared, path, fwd.network, t)]
        default = targets.address(fwd.network, fwd)
        out += [Found(where + ("ports", i), f"its target {default} is the forward's default target too, which"
                      " LXD refuses: drop the port (the default target gets every port) or the default")
                for i, p in enumerate(fwd.ports) if default and targets.address(fwd.network, p) == default]
    return out


def _ports_listed_twice(declared: Declared, where: tuple, fwd: Forward) -> list[Found]:
    """A port listed twice for one protocol (LXD refuses overlaps), said at the entry that repeats it.  Here,
    not in the model, so that a port that failed pass 1 (its stand-in) clashes with nothing."""
    out: list[Found] = []
    first: dict[tuple[str, int], int] = {}
    for i, entry in enumerate(fwd.ports):
        path = where + ("ports", i, "listen_port")
        if declared.failed.at(path) or declared.failed.at(where + ("ports", i, "protocol")):
            continue
        for port in port_numbers(entry.listen_port):
            seen = first.setdefault((entry.protocol, port), i)
            if seen != i or list(port_numbers(entry.listen_port)).count(port) > 1:
                also = f"ports[{seen}]" if seen != i else "this entry"
                out.append(Found(path, f"{entry.protocol} port {port} is listed twice (also in {also}): LXD"
                                 " refuses overlaps"))
                break
    return out


def _network_problems(lab: Lab, declared: Declared, where: tuple, listen: str, fwd: Forward) -> list[Found]:
    if not re.fullmatch(LISTEN_ADDRESS, listen):
        return []  # a bad name, said at the key (name_problems)
    address = ipaddress.IPv4Address(listen)
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        return [Found(where, f"{listen} cannot be a forward's listen address (it listens on an address of"
                      " its bridge's subnet, best outside its DHCP range)", True)]
    known = (declared.networks or frozenset()) | set(lab.existing.networks)
    if declared.networks is not None and fwd.network not in known:
        return [Found(where + ("network",), f"unknown network {fwd.network!r}{suggest(fwd.network, known)}"
                      " (declare it under networks:, or list it under existing.networks)")]
    net = lab.networks.get(fwd.network)
    cidr = net.config.get("ipv4.address", "") if net else ""
    if "/" not in cidr:
        return []  # an existing network, or one whose address LXD picks: not known from lab.yaml
    bridge = ipaddress.IPv4Interface(cidr)
    if address not in bridge.network or address == bridge.ip:
        return [Found(where, f"{listen} is not a free address of network {fwd.network!r} ({cidr}): a forward"
                      " listens on an address of its bridge's subnet, never the bridge's own", True)]
    return []


def _target_problems(targets: Targets, declared: Declared, path: tuple, network: str, t: Targeted) -> list[Found]:
    if t.target is None or declared.containers is None:
        return []
    if t.target not in declared.containers:
        return [Found(path + ("target",), f"unknown container {t.target!r}{suggest(t.target, declared.containers)}")]
    if t.target not in targets.lab.containers:
        return []  # declared, but failed pass 1: its NICs are unknown
    if targets.fixed(t.target, network) is None:
        return [Found(path + ("target",), f"container {t.target!r} has no fixed ipv4.address on network"
                      f" {network!r}: give its NIC there one, or write target_address")]
    return []


"""Pass 3 of lab.yaml's `forwards:`: each forward's network is the lab's or existing, its listen address
one of that bridge's own subnet, each target a running container with a NIC there (its fixed address,
or the one it has live).  It reads spec, so the kind imports it inside its functions only."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ...spec.declared import Declared, Found, suggest
from ...spec.models import Lab, expanded_devices
from .model import LISTEN_ADDRESS, TABLE, Forward, Targeted, forwards, port_numbers


@dataclass(frozen=True)
class Nic:
    """A container's NIC on a forward's network: its fixed address, or where to find its live one."""

    device: str  # the device's name in lab.yaml (its own devices or its profiles')
    interface: str  # its `name` inside the container; "" when LXD picks one (volatile.DEVICE.name)
    fixed: str | None  # its ipv4.address in lab.yaml, if any


def nic_on(lab: Lab, container: str, network: str) -> Nic | None:
    """The container's first NIC on `network` (profiles included), from lab.yaml."""
    spec = lab.containers.get(container)
    devices = expanded_devices(lab, spec).items() if spec else ()
    found = [Nic(name, d.get("name", ""), d.get("ipv4.address") or None) for name, d in devices
             if d.get("type") == "nic" and d.get("network") == network]
    return found[0] if found else None


def fixed_address(lab: Lab, container: str, network: str) -> str | None:
    """The container's fixed ipv4.address on `network` (its NIC there, profiles included), from lab.yaml."""
    nic = nic_on(lab, container, network)
    return nic.fixed if nic else None


def live_targeted(lab: Lab) -> bool:
    """Whether a forward leads to a container by its live address (plan then reads instances' state)."""
    targets = Targets(lab)
    return any(targets.live(fwd.network, t) for fwd in forwards(lab).values() for t in (fwd, *fwd.ports))


class Targets:
    """Targets resolved to NICs, each (container, network) worked out once: a lab.yaml may name one
    container in many ports, each through profiles with many devices."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self._found: dict[tuple[str, str], Nic | None] = {}

    def nic(self, container: str, network: str) -> Nic | None:
        if (container, network) not in self._found:
            self._found[container, network] = nic_on(self.lab, container, network)
        return self._found[container, network]

    def fixed(self, container: str, network: str) -> str | None:
        nic = self.nic(container, network)
        return nic.fixed if nic else None

    def address(self, network: str, t: Targeted) -> str | None:
        """The target's address known from lab.yaml: a fixed one, or target_address; None for a live one."""
        return self.fixed(t.target, network) if t.target is not None else t.target_address

    def live(self, network: str, t: Targeted) -> Nic | None:
        """The NIC whose live address is the target, for a container with no fixed address there."""
        nic = self.nic(t.target, network) if t.target is not None else None
        return nic if nic is not None and nic.fixed is None else None

    def same(self, network: str, t: Targeted) -> str | None:
        """What names the target, to tell two alike: its address when lab.yaml knows it, else the container."""
        return self.address(network, t) or t.target


def forward_problems(lab: Lab, declared: Declared) -> list[Found]:
    """Each forward's network is the lab's or existing, its listen address a usable one on it, and each
    target a container with a NIC there."""
    out: list[Found] = []
    targets = Targets(lab)
    for listen, fwd in forwards(lab).items():
        where = (TABLE, listen)
        out += _ports_listed_twice(declared, where, fwd)
        wrong = _network_problems(lab, declared, where, listen, fwd)
        out += wrong
        if any(f.path == where + ("network",) for f in wrong):
            continue  # no network to find the targets' addresses on
        named = [(where, fwd)] + [(where + ("ports", i), p) for i, p in enumerate(fwd.ports)]
        out += [f for path, t in named for f in _target_problems(targets, declared, path, fwd.network, t)]
        default = targets.same(fwd.network, fwd)
        out += [Found(where + ("ports", i), f"its target {default} is the forward's default target too, which"
                      " LXD refuses: drop the port (the default target gets every port) or the default")
                for i, p in enumerate(fwd.ports) if default and targets.same(fwd.network, p) == default]
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
    if targets.nic(t.target, network) is None:
        return [Found(path + ("target",), f"container {t.target!r} has no NIC on network {network!r}: give it"
                      " one (its address there is the target), or write target_address")]
    if targets.live(network, t) and targets.lab.containers[t.target].state != "running":
        return [Found(path + ("target",), f"container {t.target!r} is not running in lab.yaml, and its NIC on"
                      f" network {network!r} has no fixed ipv4.address: it has no address to forward to")]
    return []


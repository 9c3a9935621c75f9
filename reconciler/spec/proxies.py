"""Proxy devices across entries: the HAProxy frontends they reach (and the PROXY protocol both sides
must agree on), and listen addresses that clash."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import NamedTuple

from .. import haproxy as haproxy_spec
from .. import values
from ..source import field_path
from .declared import Declared, Found, complete, profiles_known
from .models import Container, Lab, expanded_devices


def proxy_protocol_pairs(lab: Lab, declared: Declared) -> list[Found]:
    """A proxy device and the HAProxy frontend it reaches agree on the PROXY protocol: both or neither."""
    out = []
    for reach in proxy_reaches(lab, declared):
        frontend = lab.haproxy[reach.container].frontends[reach.frontend]
        at_frontend = ("haproxy", reach.container, "frontends", reach.frontend, "accept_proxy")
        device = f"proxy device {reach.device} ({reach.listen})"
        expects = frontend.expects_proxy_from(reach.connect_address)
        if reach.nat and expects:
            out.append(Found(at_frontend, f"{device} uses nat: it keeps the client's address and sends no PROXY"
                             " header; drop accept_proxy"))
        elif reach.proxy_protocol and frontend.accept_proxy == "loopback" and not expects:
            out.append(Found(reach.path + ("proxy_protocol",), f"sends the PROXY protocol to frontend"
                             f" {reach.frontend!r} from {reach.connect_address}, but accept_proxy: loopback expects it"
                             f" only from 127.0.0.0/8: connect to 127.0.0.1, or set accept_proxy: true there"))
        elif reach.proxy_protocol and not expects:
            out.append(Found(reach.path + ("proxy_protocol",), f"sends the PROXY protocol to frontend"
                             f" {reach.frontend!r} ({frontend.bind}), which does not expect it: set accept_proxy:"
                             f" true there, or drop proxy_protocol"))
        elif expects and not (reach.proxy_protocol or reach.nat):
            out.append(Found(at_frontend, f"expects the PROXY protocol, but {device} of {reach.container} does not"
                             " send it: set proxy_protocol: true on it"))
    return out


class Reach(NamedTuple):
    """A proxy device of an HAProxy container whose connections reach one of its frontends."""

    container: str
    device: str
    path: tuple  # the device in lab.yaml (the container's, or the profile that brings it)
    listen: str
    frontend: str
    proxy_protocol: bool
    nat: bool
    connect_address: str  # where it connects inside the container: its connections come from there too


def proxy_reaches(lab: Lab, declared: Declared | None = None) -> list[Reach]:
    """Every (device, frontend) pair: host-side proxy devices of HAProxy containers, by connect port."""
    out = []
    for cname, spec in lab.haproxy.items():
        container = lab.containers.get(cname)
        if container is None or (declared is not None and not complete(lab, declared, container)):
            continue
        for dname, device in expanded_devices(lab, container).items():
            found = _frontend_reached(spec, device)
            if found:
                out.append(Reach(cname, dname, device_path(lab, container, cname, dname), device["listen"], found,
                                 device.get("proxy_protocol") in values.TRUE_WORDS,
                                 device.get("nat") in values.TRUE_WORDS, _connect_address(device)))
    return out


def _connect_address(device: Mapping[str, str]) -> str:
    parts = values.split_inet(device.get("connect", ""))
    return parts[1].strip("[]") if parts else "127.0.0.1"


def _frontend_reached(spec: haproxy_spec.HAProxy, device: Mapping[str, str]) -> str | None:
    connect = values.split_inet(device.get("connect", ""))
    if device.get("type") != "proxy" or device.get("bind", "host") != "host" or connect is None \
            or connect[0] != "tcp" or values.proxy_address_problem(device["connect"]) or "listen" not in device:
        return None
    low, high = values.port_span(connect[2])
    found = next((f for port in range(low, high + 1) if (f := haproxy_spec.frontend_at(spec, connect[1], port))), None)
    return found[0] if found else None


def proxied_frontends(lab: Lab, cname: str) -> dict[str, list[str]]:
    """frontend -> the proxy devices that send it the PROXY protocol (named in haproxy.cfg)."""
    out: dict[str, list[str]] = {}
    for reach in proxy_reaches(lab):
        if reach.container == cname and reach.proxy_protocol:
            out.setdefault(reach.frontend, []).append(f"{reach.device} ({reach.listen})")
    return out


WILDCARDS = values.WILDCARD_ADDRESSES


def proxy_listen_clashes(lab: Lab, declared: Declared) -> list[Found]:
    """Two proxy devices on one port (LXD checks this only when the second one starts).  Port ranges
    are intervals, so the check stays O(n log n) in listeners whatever ranges and counts it is fed."""
    seen = _Listeners()
    out = []
    for cname, container in lab.containers.items():
        if not (complete(lab, declared, container) and profiles_known(declared, cname)):
            continue
        for dname, device in expanded_devices(lab, container).items():
            listen = device.get("listen", "")
            parsed = values.split_inet(listen)
            if device.get("type") != "proxy" or parsed is None or values.proxy_address_problem(listen):
                continue  # pass 2 reports a bad address
            proto, address, ports = parsed
            clash = seen.add(proto, address, values.port_span(ports), field_path(("containers", cname, "devices", dname)))
            if clash:
                out.append(Found(device_path(lab, container, cname, dname) + ("listen",),
                                 f"{listen} clashes with the listen address of {clash}"))
    return out


class _Intervals:
    """Disjoint port intervals, sorted, each with the owner that first held it."""

    def __init__(self) -> None:
        self.lows: list[int] = []
        self.items: list[tuple[int, int, str]] = []

    def find(self, low: int, high: int) -> str | None:
        i = bisect.bisect_right(self.lows, high)
        if i and self.items[i - 1][1] >= low:
            return self.items[i - 1][2]
        return None

    def merge(self, low: int, high: int, owner: str) -> None:
        """Add, joining what overlaps (the union keeps the earliest owner)."""
        i = bisect.bisect_left(self.lows, low)
        if i and self.items[i - 1][1] >= low:
            i -= 1
        j = i
        while j < len(self.items) and self.items[j][0] <= high:
            low, high, owner = min(low, self.items[j][0]), max(high, self.items[j][1]), self.items[i][2]
            j += 1
        self.items[i:j] = [(low, high, owner)]
        self.lows[i:j] = [low]


class _Listeners:
    """Listen addresses seen so far, per protocol: by address, wildcards, and all specific ones."""

    def __init__(self) -> None:
        self.by_address: dict[tuple[str, str], _Intervals] = {}
        self.wildcards: dict[str, _Intervals] = {}
        self.specific: dict[str, _Intervals] = {}

    def add(self, proto: str, address: str, span: tuple[int, int], owner: str) -> str | None:
        """The owner of an earlier listener this one clashes with (same address, or either a wildcard)."""
        low, high = span
        wild = self.wildcards.setdefault(proto, _Intervals())
        if address in WILDCARDS:
            clash = wild.find(low, high) or self.specific.setdefault(proto, _Intervals()).find(low, high)
            wild.merge(low, high, owner)
            return clash
        mine = self.by_address.setdefault((proto, address), _Intervals())
        clash = mine.find(low, high) or wild.find(low, high)
        mine.merge(low, high, owner)
        self.specific.setdefault(proto, _Intervals()).merge(low, high, owner)
        return clash


def device_path(lab: Lab, container: Container, cname: str, dname: str) -> tuple:
    if dname in container.devices:
        return ("containers", cname, "devices", dname)
    owner = [p for p in container.profiles if p in lab.profiles and dname in lab.profiles[p].devices][-1]
    return ("profiles", owner, "devices", dname)

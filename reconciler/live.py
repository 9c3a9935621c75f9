"""LXD's raw JSON and containers' facts -> the live LabState, split into owned and foreign.  Pure."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .address import Address, Kind, instance
from .address import file as file_address
from .facts import Facts
from .inside import Provisioning, record_key
from .kinds import OBJECT_KINDS, object_kind, with_what_devices_name
from .kinds import file as file_kind
from .kinds import package as package_kind
from .kinds import service as service_kind
from .state import LabState, Resource, add, ipv4_by_nic

if TYPE_CHECKING:  # only the shape: this module stays pure
    from .lxd import RawState


@dataclass
class Live:
    """What LXD holds, as this lab sees it."""

    owned: LabState  # objects tagged with this lab's name
    foreign: dict[Address, str | None]  # address -> owning lab (None: untagged) of everything else
    profiles: dict[str, dict[str, Any]]  # every profile's raw JSON, for what existing ones bring
    nics: dict[str, dict[str, str]]  # container -> {nic: IPv4}, where recursion=2 was read
    untagged: LabState = field(default_factory=dict)  # objects no lab owns: what `adopt:` may take over
    images: list[dict[str, Any]] = field(default_factory=list)  # local images: fingerprint, aliases
    subnets: dict[str, str] = field(default_factory=dict)  # every managed network's address, for overlaps
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> {NIC device: IPv4}, as `nics`

    def addresses(self, nic: str = "eth0") -> dict[str, str]:
        """container -> IPv4 of its `nic`, for those that have one now."""
        return {c: nics[nic] for c, nics in self.nics.items() if nic in nics}

    def instance(self, name: str) -> Resource | None:
        return self.owned.get(instance(name))


def live_from_raw(raw: RawState, lab_name: str) -> Live:
    owned: LabState = {}
    untagged: LabState = {}
    foreign: dict[Address, str | None] = {}
    found = (kind.from_lxd(r) for kind in OBJECT_KINDS for r in raw.objects.get(kind.KIND, []))
    for res in (with_what_devices_name(r, None) for r in found if r is not None):
        if res.owner == lab_name:
            owned[res.address] = res
        else:
            foreign[res.address] = res.owner
            if res.owner is None:
                untagged[res.address] = res
    _instances_use_every_network(owned)
    nics = {i["name"]: ipv4_by_nic(i.get("state")) for i in raw.instances if i.get("state")}
    devices = {i["name"]: nic_devices(i) for i in raw.instances if i.get("state")}
    return Live(owned, foreign, {p["name"]: p for p in raw.profiles}, nics, untagged, list(raw.images),
                network_subnets(raw.networks), devices)


def nic_devices(raw: Mapping[str, Any]) -> dict[str, str]:
    """{'lan': '10.0.0.5'}: each NIC device's live IPv4, found by its interface inside (its `name`, or the
    one LXD gave it, volatile.DEVICE.name)."""
    by_interface = ipv4_by_nic(raw.get("state"))
    config = raw.get("expanded_config") or raw.get("config") or {}
    out = {}
    for name, device in (raw.get("expanded_devices") or {}).items():
        interface = device.get("name") or config.get(f"volatile.{name}.name", "")
        if device.get("type") == "nic" and interface in by_interface:
            out[name] = by_interface[interface]
    return out


def _instances_use_every_network(owned: LabState) -> None:
    """As in the desired state: a lab's networks are deleted only after all of its instances."""
    networks = tuple(a for a in owned if a.kind == Kind.NETWORK)
    for addr, res in list(owned.items()):
        if addr.kind == Kind.INSTANCE:
            deps = tuple(dict.fromkeys(res.depends_on + networks))
            owned[addr] = Resource(addr, res.body, deps, res.owner, res.applied, res.meta)


def users_of(owned: LabState) -> dict[Address, set[Address]]:
    """address -> live addresses that use it (instances of a profile, profiles of a network)."""
    out: dict[Address, set[Address]] = {}
    for res in owned.values():
        for dep in res.depends_on:
            out.setdefault(dep, set()).add(res.address)
    return out


def as_comparable(desired: LabState, owned: LabState) -> None:
    """Each live LXD object as its kind compares it with lab.yaml's (see ObjectKind.comparable)."""
    for addr, have in list(owned.items()):
        if not addr.kind.inside:
            owned[addr] = object_kind(addr.kind).comparable(have, desired.get(addr))


def network_subnets(raw_networks: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Every managed network's IPv4 address and prefix, for overlap checks."""
    out = {}
    for net in raw_networks:
        address = (net.get("config") or {}).get("ipv4.address", "")
        if net.get("managed") and address not in ("", "none"):
            out[net["name"]] = address
    return out


# --- Inside containers ----------------------------------------------------------------------

def provisioned(cname: str, facts: Facts, want: Provisioning) -> LabState:
    """The live state of what `want` manages inside one container, from one read of its facts,
    and of the files an earlier apply recorded that lab.yaml no longer has."""
    out: LabState = {}
    for res in (package_kind.from_facts(cname, facts, want.packages)
                + file_kind.from_facts(cname, facts, want.secret_paths())
                + service_kind.from_facts(cname, facts, want.services)):
        applied = (facts.record or {}).get(record_key(res.address))
        add(out, Resource(res.address, res.body, res.depends_on, applied=applied))
    return out


def recorded_files(cname: str, record: Mapping[str, str]) -> LabState:
    """The files an earlier apply recorded inside a container plan cannot look into yet (stopped, to be
    started): known to be the lab's, their state unseen until apply has started it."""
    out: LabState = {}
    for key, applied in record.items():
        if key.startswith("file:/"):
            add(out, Resource(file_address(cname, key.removeprefix("file:")), {"type": UNSEEN_TYPE}, applied=applied))
    return out


UNSEEN_TYPE = "(unseen)"


def host_routes(text: str) -> list[str]:
    """/proc/net/route as `ip route` destinations ("10.0.0.0/24 dev eno1"), for overlap checks."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[1] == "00000000":
            continue
        dest, mask = (socket.inet_ntoa(int(f, 16).to_bytes(4, "little")) for f in (fields[1], fields[7]))
        prefix = bin(int.from_bytes(socket.inet_aton(mask), "big")).count("1")
        out.append(f"{dest}/{prefix} dev {fields[0]}")
    return out

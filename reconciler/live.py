"""LXD's raw JSON and a container's facts -> the live LabState, split into owned and foreign.  Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from .desired import Provisioning, shown_content
from .provision import Facts, recorded_paths
from .state import (LabState, Resource, instance_from_lxd, ipv4_by_nic, network_from_lxd, profile_from_lxd,
                    without_lxd_defaults)

if TYPE_CHECKING:  # only the shape: this module stays pure
    from .lxd import RawState


@dataclass
class Live:
    """What LXD holds, as this lab sees it."""

    owned: LabState  # objects tagged with this lab's name
    foreign: dict[str, str | None]  # address -> owning lab (None: untagged) of everything else
    profile_devices: dict[str, dict]  # every profile's devices, for checks on existing profiles
    nics: dict[str, dict[str, str]]  # container -> {nic: IPv4}, where recursion=2 was read
    aliases: set[str] = field(default_factory=set)

    def addresses(self, nic: str = "eth0") -> dict[str, str]:
        """container -> IPv4 of its `nic`, for those that have one now."""
        return {c: nics[nic] for c, nics in self.nics.items() if nic in nics}


def live_from_raw(raw: RawState, lab_name: str) -> Live:
    owned: LabState = {}
    foreign: dict[str, str | None] = {}
    resources = ([network_from_lxd(n) for n in raw.networks if n.get("managed")]
                 + [profile_from_lxd(p) for p in raw.profiles]
                 + [instance_from_lxd(i) for i in raw.instances])
    for res in resources:
        if res.owner == lab_name:
            owned[res.address] = res
        else:
            foreign[res.address] = res.owner
    nics = {i["name"]: ipv4_by_nic(i.get("state")) for i in raw.instances if i.get("state")}
    devices = {p["name"]: p.get("devices") or {} for p in raw.profiles}
    return Live(owned, foreign, devices, nics, set(raw.aliases))


def forgive_network_defaults(desired: LabState, owned: LabState) -> None:
    """Drop the bridge keys LXD filled in itself from live networks, unless lab.yaml sets them."""
    for addr, have in list(owned.items()):
        want = desired.get(addr)
        if have.kind != "network" or want is None:
            continue
        config = without_lxd_defaults(have.body["config"], want.body["config"])
        owned[addr] = Resource(have.kind, have.name, {**have.body, "config": config}, have.depends_on, have.owner)


def users_of(owned: LabState) -> dict[str, set[str]]:
    """address -> live addresses that use it (instances of a profile, profiles of a network)."""
    out: dict[str, set[str]] = {}
    for res in owned.values():
        for dep in res.depends_on:
            out.setdefault(dep, set()).add(res.address)
    return out


# --- Inside containers ----------------------------------------------------------------------

def provisioned(cname: str, facts: Facts, want: Provisioning, manifest: str) -> LabState:
    """The live state of what `want` manages inside one container, from one read of facts,
    and of the files an earlier apply recorded in `manifest` that lab.yaml no longer has."""
    out: LabState = {}
    for pkg in want.packages:
        if facts.packages.get(pkg):
            _put(out, Resource("package", f"{cname}:{pkg}", {"installed": True}))
    for path, spec in want.files.items():
        found = facts.files.get(path)
        if found:
            _put(out, Resource("file", f"{cname}:{path}", _file_body(found, facts, spec.secret)))
    for path in recorded_paths((facts.files.get(manifest) or {}).get("content", b"").decode()):
        if path not in want.files and facts.files.get(path, {}).get("type") in ("file", "directory"):
            _put(out, Resource("file", f"{cname}:{path}", _file_body(facts.files[path], facts, secret=True)))
    for name, spec in want.services.items():
        body = dict(facts.services.get(name, {"enabled": False, "running": False}))
        if spec.listens and body["running"]:
            body["listening"] = sorted(facts.listening.get(name, []))
        _put(out, Resource("service", f"{cname}:{name}", body))
    return out


def _put(state: LabState, res: Resource) -> None:
    state[res.address] = res


def _file_body(found: dict, facts: Facts, secret: bool) -> dict:
    body = {"type": found["type"], "mode": found.get("mode"), "owner": _name(facts.users, found.get("uid")),
            "group": _name(facts.groups, found.get("gid"))}
    if found["type"] == "file":
        data = found.get("content")
        body.update(sha256=found["sha256"], content=None if data is None else shown_content(data, secret))
    return body


def _name(table: Mapping[str, int], number: int | None) -> str:
    for name, value in table.items():
        if value == number:
            return name
    return str(number)

"""Managed LXD networks (bridges) the lab owns."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import dns
from ..address import Address, Kind, acl, network
from ..errors import LxdError, asked_again_while, interface_vanished
from ..plan import Action, Change
from ..state import (
    APPLIED_KEY,
    OWNER_KEY,
    Resource,
    acls_named,
    digest,
    filled_back,
    own_config,
    referenced_networks,
    without_filled,
)
from .contract import Chosen, LabTable, Scope, Wanted, declared_as, importable, imported_part

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..spec import Lab
    from .runner import Runner

KIND = Kind.NETWORK
RANK = 20  # plan order
SHAPE = ("hexagon", "#d9ead3")
ABSENT = "not in {daemon}"  # why a create: what the plan says of one that is not there
COLLECTION = "networks"
PARENT: Kind | None = None
SCOPE = Scope.SHARED
TABLE = "networks"
LAB_TABLE: LabTable | None = None  # a core table: spec.models has its model
NOUN = "network"
API_EXTENSION = ""  # what it needs in GET /1.0's api_extensions ("": the core API)
DEEP_READ = False
REPLACE_FIELDS: tuple[str, ...] = ("type",)
# Keys LXD fills in on a bridge when they are not given; not drift unless the lab sets them.
DEFAULTED_KEYS = ("ipv4.address", "ipv4.nat", "ipv6.address", "ipv6.nat")



def deletable(address: Address) -> bool:
    return True  # what lab.yaml no longer has is deleted

def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    return [Resource(network(name), {"type": net.type, "description": net.description,
                                     "config": dict(sorted(net.config.items()))},
                     tuple(acl(n) for n in acls_named(net.config) if n in lab.acls))  # its ACLs first
            for name, net in lab.networks.items()]


def from_lxd(raw: Mapping[str, Any]) -> Resource | None:
    if not raw.get("managed"):
        return None  # the host's own interfaces, listed alongside
    config = raw.get("config") or {}
    body = {"type": raw.get("type", "bridge"), "description": raw.get("description", ""),
            "config": own_config(config)}
    return Resource(network(raw["name"]), body, tuple(acl(n) for n in acls_named(config)), owner=config.get(OWNER_KEY),
                    applied=config.get(APPLIED_KEY))


def parents(lab: Lab) -> set[str]:
    return set()  # not nested


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    """The managed networks NICs join; with `lab`, those it declares."""
    return tuple(network(n) for n in sorted(referenced_networks(devices)) if lab is None or n in lab.networks)


def comparable(have: Resource, want: Resource | None) -> Resource:
    """The live network without the keys LXD filled in itself, unless lab.yaml sets them."""
    return without_filled(have, want, DEFAULTED_KEYS)


def apply(run: Runner, change: Change, action: Action) -> None:
    name = change.address.name
    if action == Action.DELETE:
        return run.lxd.delete("network", name)
    want = change.after or {}
    config = {**want["config"], OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
    if action == Action.ADOPT:
        raw, etag = run.fresh(change)
        tags = {OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
        return run.lxd.put("network", name, {"description": raw.get("description", ""),
                                             "config": {**(raw.get("config") or {}), **tags}}, etag)
    if action == Action.CREATE:
        try:
            asked_again_while(DNSMASQ_RACE, lambda: run.lxd.create("network", {
                "name": name, "type": want["type"], "description": want["description"], "config": config}))
        except LxdError as err:
            raw, etag = _made_by_a_killed_run(run, name, err)  # else raised as it was
        else:
            return _until_dnsmasq_answers(run, name)
    else:
        raw, etag = run.fresh(change)
    seen = [(raw, etag)]  # as LXD has it: after a refusal (it put the old config back), read again

    def put() -> None:
        found, tag = seen[-1]
        defaults = filled_back(found, DEFAULTED_KEYS, config)
        run.lxd.put("network", name, {"description": want["description"], "config": {**defaults, **config}}, tag)

    asked_again_while(undone, put, lambda: seen.append(run.lxd.get("network", name)))
    _until_dnsmasq_answers(run, name)


# LXD 5.0 restarts a bridge's dnsmasq when the bridge is made or its config changes, and may start the new
# one before the old one has let go of the bridge's address ('The DNS and DHCP service exited prematurely:
# ... dnsmasq: failed to create listening socket for 10.203.62.1: Address already in use', seen under the
# parallel test suite).  LXD then undoes the request (the old config back, a new bridge gone), so the same
# request is asked again, a bounded number of times (errors.asked_again_while).
DNSMASQ_RACE = "failed to create listening socket"


def undone(err: LxdError) -> bool:
    """A bridge's update the daemon refused for a passing reason and undid (the old config back)."""
    return DNSMASQ_RACE in str(err) or interface_vanished(err)


# LXD returns from a bridge's creation or update as soon as it has started the new dnsmasq, and tells it
# of a container's fixed address (ipv4.address) by writing a hosts file and sending SIGHUP.  A SIGHUP in
# dnsmasq's first moments, before its handler is in place, kills it (the default action), and one in the
# rest of its start-up is ignored: a container started at once on the bridge then gets no lease, or a
# dynamic one instead of its fixed address (seen under the parallel suite: proxyha kept its old lease).
# So a bridge's step ends once its dnsmasq answers DNS, which it does only from its main loop: the name
# asked is in LXD's own domain (answered by dnsmasq itself, never forwarded).  Only where LXD runs on
# this machine, whose routes reach the bridge's address; bounded, and a warning if it never answers.
DNSMASQ_WAIT = 10.0


def _until_dnsmasq_answers(run: Runner, name: str) -> None:
    if not run.lxd.local or not os.path.exists(f"/sys/class/net/{name}"):
        return  # not a bridge of this host's (asked only on the lab's own bridge)
    raw, _ = run.lxd.get("network", name)  # its address as LXD chose it, where lab.yaml left it to LXD
    config = raw.get("config") or {}
    gateway = dnsmasq_address(config)
    if raw.get("type", "bridge") != "bridge" or gateway is None:
        return  # no DNS there
    if not dns.answers(gateway, f"_gateway.{config.get('dns.domain') or 'lxd'}", DNSMASQ_WAIT):
        run.warn(f"network.{name}: its DNS and DHCP server (dnsmasq) did not answer on {gateway} within"
                 f" {DNSMASQ_WAIT:.0f}s: a container started on it now may get no lease or not its fixed address")


def dnsmasq_address(config: Mapping[str, Any]) -> str | None:
    """Where a bridge's dnsmasq answers DNS: its IPv4 address, unless it has none or no DNS."""
    address = str(config.get("ipv4.address") or "")
    if config.get("dns.mode") == "none" or address in ("", "none", "auto"):
        return None
    return address.partition("/")[0]


def _made_by_a_killed_run(run: Runner, name: str, err: LxdError) -> tuple[dict, str]:
    """A network creation LXD refused as existing, though plan saw none: this lab's killed run had asked
    for it, and LXD (networks are made synchronously) finished it after plan read. Taken, if it carries
    this lab's tag, and set as lab.yaml says; anything else raises `err` as it was."""
    if "already exists" not in str(err):
        raise err
    raw, etag = run.lxd.get("network", name)
    if (raw.get("config") or {}).get(OWNER_KEY) != run.lab_name:
        raise err
    run.warn(f"network.{name}: made by an apply that was cut short (LXD finished it after plan read): taken")
    return raw, etag


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    """The managed networks the chosen containers' NICs (and their imported profiles') name; the others
    they name (another lab's, a host bridge) under existing."""
    managed = {n["name"]: n for n in raw.networks if n.get("managed")}
    used = sorted({n for devices in chosen.devices() for n in referenced_networks(devices)})
    owned = {n: _declared(managed[n]) for n in used if importable(managed.get(n))}
    return imported_part(TABLE, owned, [n for n in used if n not in owned])


def _declared(raw: Mapping[str, Any]) -> dict[str, Any]:
    return declared_as(raw, {"type": raw.get("type", "bridge")})

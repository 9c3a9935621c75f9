"""LXD network forwards the lab owns (`forward.NETWORK/LISTEN_ADDRESS`), nested under their network.

A forward sends traffic for a listen address on a bridge to other addresses, DNAT in the kernel, so the
target sees the client's own address (no proxy in between).  A target that is a lab container is its
NIC's fixed address on the bridge, from lab.yaml alone; or, with none there, the address that NIC has
live, as HAProxy's servers are: plan puts the one it reads in the body (a changed address is an ordinary
update), or "(known after apply)" while the container is to be created, replaced, moved or started; apply
resolves that from the address the container has then (waiting for it, bounded).  The ports are kept
keyed by "PROTOCOL:LISTEN_PORT", so a plan shows a field per port (`ports.tcp:80.target_port: "80" ->
"8080"`) whatever order LXD keeps.  LXD 5.0 takes `user.*` config keys on a forward: it is tagged
as every other object.  A forward is read per network (one GET each, for the networks the lab owns or
names in `forwards:`: `parents`), created after its network and target container, deleted before its
network; LXD deletes a network's forwards with it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from ... import values
from ...address import Address, Kind, instance, network
from ...plan import Action, Change
from ...state import APPLIED_KEY, OWNER_KEY, Body, Meta, Resource, digest, own_config, referenced_networks
from ..contract import Chosen, LabTable, Scope, Wanted, importable, imported_part
from ..file import UNKNOWN
from .model import LISTEN_ADDRESS, TABLE, Forward, forwards

if TYPE_CHECKING:
    from ...lxd import RawState
    from ...spec import Lab
    from ...spec.declared import Declared, Found
    from ..runner import Runner
    from .model import ForwardPort, Targeted
    from .refs import Targets

KIND = Kind.register("forward")
RANK = 55  # after the instances it leads to (and their networks), before what runs inside containers
SHAPE = ("cds", "#d0e0e3")
REPLACE_FIELDS: tuple[str, ...] = ()  # its identity is its address (network and listen address): all else is PUT
COLLECTION = "forwards"
PARENT: Kind | None = Kind.NETWORK
SCOPE = Scope.SHARED  # where its network is
NOUN = "network forward"
LAB_TABLE: LabTable | None = LabTable(
    Forward, LISTEN_ADDRESS, "forward listen address", "network forwards the lab owns, keyed by listen address",
    adopt=Annotated[str, values.Matching(LISTEN_ADDRESS, "a forward's listen address")],
    # A forward's port keeps its place, so that its target is still checked (a port of its own, should
    # it clash with another, fails the whole forward: no worse than leaving the port out).
    stand_ins=((("ports", "*", "protocol"), "tcp"), (("ports", "*", "listen_port"), "65535")))
API_EXTENSION = "network_forward"  # what it needs in GET /1.0's api_extensions ("": the core API)
ABSENT = "not in {daemon}"  # why a create
DEEP_READ = False  # nothing in it needs live addresses
DEFAULT_TARGET = "target_address"  # the config key of the default target
PENDING = "after_apply"  # payload: body key ("" the default target, else "tcp:80") -> [container, device, interface]

Ports = dict[str, dict[str, str]]
# LXD 5.0 rewrites a network's whole forward firewall (nft chains fwdprert/fwdout.NETWORK) on each change,
# and two changes at once on one network leave it wrong (seen: a deleted forward's rules kept, a created
# one's missing): apply's parallel steps change one network's forwards one at a time.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def forward(network_name: str, listen_address: str) -> Address:
    """A network's forward: `forward.lan/10.203.117.250` (nested: PARENT/NAME)."""
    return Address(KIND, f"{network_name}/{listen_address}")


def _network_lock(name: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(name, threading.Lock())


def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    from .refs import Targets
    out = []
    targets = Targets(lab)
    for listen, fwd in forwards(lab).items():
        found = _Resolved(targets, fwd.network, wanted.nics)
        default = found.address("", fwd)
        body = {"description": fwd.description, "config": {DEFAULT_TARGET: default} if default else {},
                "ports": keyed(_port(found.address(f"{p.protocol}:{p.listen_port}", p), p) for p in fwd.ports)}
        meta = Meta(waits_for=tuple(sorted(found.live)), payload={PENDING: found.pending} if found.pending else {})
        out.append(Resource(forward(fwd.network, listen), body, (network(fwd.network),) + _targets(fwd), meta=meta))
    return out


class _Resolved:
    """One forward's targets as addresses: from lab.yaml, else the live one plan read; those not known yet
    "(known after apply)", and kept in `pending` for apply to resolve."""

    def __init__(self, targets: Targets, network_name: str, nics: Mapping[str, Mapping[str, str]]):
        self.targets, self.network, self.nics = targets, network_name, nics
        self.live: set[str] = set()  # the containers it leads to by their live address
        self.pending: dict[str, list[str]] = {}

    def address(self, key: str, t: Targeted) -> str | None:
        nic = self.targets.live(self.network, t)
        if nic is None or t.target is None:
            return self.targets.address(self.network, t)
        self.live.add(t.target)
        known = self.nics.get(t.target, {}).get(nic.device)
        if known:
            return known
        self.pending[key] = [t.target, nic.device, nic.interface]
        return UNKNOWN


def deletable(address: Address) -> bool:
    return True  # one lab.yaml no longer has is deleted


def comparable(have: Resource, want: Resource | None) -> Resource:
    return have  # LXD fills in nothing of its own (empty port fields are left out by `keyed`)


def _targets(fwd: Forward) -> tuple:
    """The lab containers it leads to: a forward to a container not there yet is pointless."""
    named = [fwd.target] + [p.target for p in fwd.ports]
    return tuple(instance(c) for c in dict.fromkeys(n for n in named if n is not None))


def _port(address: str | None, port: ForwardPort) -> dict[str, str]:
    fields = {"protocol": port.protocol, "listen_port": port.listen_port, "target_address": address or "",
              "target_port": port.target_port or "", "description": port.description}
    return {k: v for k, v in fields.items() if v}


def keyed(ports: Iterable[Mapping[str, Any]]) -> Ports:
    """LXD's list of ports -> {"tcp:80": {...}}, the fields LXD leaves empty left out."""
    out = {}
    for port in ports:
        kept = {k: str(v) for k, v in sorted(port.items()) if v not in ("", None)}
        out[f"{kept.get('protocol', '')}:{kept.get('listen_port', '')}"] = kept
    return dict(sorted(out.items()))


def from_lxd(raw: Mapping[str, Any]) -> Resource:
    """LXD's JSON, with `parent` (the network's name) added by the read."""
    config = raw.get("config") or {}
    body: Body = {"description": raw.get("description", ""), "config": own_config(config),
                  "ports": keyed(raw.get("ports") or [])}
    return Resource(forward(raw["parent"], raw["listen_address"]), body, (network(raw["parent"]),),
                    owner=config.get(OWNER_KEY), applied=config.get(APPLIED_KEY))


def parents(lab: Lab) -> set[str]:
    """The networks lab.yaml's forwards name: plan reads their forwards (and those of the lab's own networks),
    so a forward someone else made there is seen, never overwritten."""
    return {f.network for f in forwards(lab).values()}


def needs_addresses(lab: Lab) -> bool:
    """Optional hook: whether plan must read live addresses (a forward that leads to a container by its live one)."""
    from .refs import live_targeted
    return live_targeted(lab)


def problems(lab: Lab, declared: Declared) -> list[Found]:
    """Pass 3: each forward's network, listen address and targets (refs.py)."""
    from .refs import forward_problems
    return forward_problems(lab, declared)


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    return ()  # no device names a forward


# --- applied ----------------------------------------------------------------------------------

def apply(run: Runner, change: Change, action: Action) -> None:
    want = {} if action == Action.DELETE else _resolved(run, change)  # any wait for an address: not holding the lock
    with _network_lock(change.address.name.partition("/")[0]):
        _apply(run, change, action, want)


def _apply(run: Runner, change: Change, action: Action, want: Body) -> None:
    net, _, listen = change.address.name.partition("/")
    if action == Action.DELETE:
        return run.lxd.delete(KIND.value, change.address.name)
    if action == Action.ADOPT:  # tagged as it is
        raw, etag = run.fresh(change)
        tags = {OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
        return run.lxd.put(KIND.value, change.address.name, {
            "description": raw.get("description", ""), "config": {**(raw.get("config") or {}), **tags},
            "ports": raw.get("ports") or []}, etag)
    body = {"description": want["description"],
            "config": {**want["config"], OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)},
            "ports": list(want["ports"].values())}
    if action == Action.CREATE:
        return run.lxd.create(KIND.value, {"listen_address": listen, **body}, parent=net)
    _, etag = run.fresh(change)  # StaleState if it moved since the plan
    run.lxd.put(KIND.value, change.address.name, body, etag)


def _resolved(run: Runner, change: Change) -> Body:
    """The planned body with each target plan could not know resolved from the container's address now."""
    want = change.after or {}
    found = {key: run.nic_address(container, interface or _named_by_lxd(run, container, device))
             for key, (container, device, interface) in (change.meta.payload.get(PENDING) or {}).items()}
    if not found:
        return want
    config = {**want["config"], **({DEFAULT_TARGET: found[""]} if "" in found else {})}
    ports = {k: {**p, "target_address": found[k]} if k in found else p for k, p in want["ports"].items()}
    return {**want, "config": config, "ports": ports}


def _named_by_lxd(run: Runner, container: str, device: str) -> str:
    """The interface LXD named a NIC lab.yaml gives no `name`."""
    raw, _ = run.lxd.get("instance", container)
    return (raw.get("config") or {}).get(f"volatile.{device}.name") or device


# --- imported ---------------------------------------------------------------------------------

def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    """The forwards no lab owns on the chosen containers' networks whose every target is a chosen
    container's fixed address there (its NIC's ipv4.address): declared with `target: NAME`.  One that
    leads elsewhere, or has keys lab.yaml cannot say, is not the lab's to import."""
    networks = {n for devices in chosen.devices() for n in referenced_networks(devices)}
    owned: dict[str, dict[str, Any]] = {}
    for fwd in sorted(raw.of(KIND), key=lambda f: (f["parent"], f["listen_address"])):
        if fwd["parent"] in networks and importable(fwd) and fwd["listen_address"] not in owned:
            declared = _declared(fwd, _fixed_addresses(chosen, fwd["parent"]))
            if declared is not None:
                owned[fwd["listen_address"]] = declared
    return imported_part(TABLE, owned, [])


def _fixed_addresses(chosen: Chosen, network_name: str) -> dict[str, str]:
    """Address -> container, for the chosen containers with a fixed address on the network (the first NIC
    there, as lab.yaml resolves a target)."""
    out: dict[str, str] = {}
    for inst in chosen.instances:
        nics = [d for d in chosen.declared_devices(inst).values() if d.get("type") == "nic"
                and d.get("network") == network_name]
        if nics and nics[0].get("ipv4.address"):
            out.setdefault(nics[0]["ipv4.address"], inst["name"])
    return out


def _declared(raw: Mapping[str, Any], containers: Mapping[str, str]) -> dict[str, Any] | None:
    config = own_config(raw.get("config") or {})
    if set(config) - {DEFAULT_TARGET}:
        return None  # keys lab.yaml has no place for
    out: dict[str, Any] = {"network": raw["parent"]}
    if raw.get("description"):
        out["description"] = raw["description"]
    if config.get(DEFAULT_TARGET):
        if config[DEFAULT_TARGET] not in containers:
            return None
        out["target"] = containers[config[DEFAULT_TARGET]]
    ports = [_declared_port(p, containers) for p in raw.get("ports") or []]
    if None in ports or not (ports or "target" in out):
        return None  # a port to elsewhere, or a forward that leads nowhere
    if ports:
        out["ports"] = ports
    return out


def _declared_port(port: Mapping[str, Any], containers: Mapping[str, str]) -> dict[str, str] | None:
    target = containers.get(port.get("target_address", ""))
    if target is None:
        return None
    out = {"protocol": port["protocol"], "listen_port": str(port["listen_port"]), "target": target}
    out.update({k: str(port[k]) for k in ("target_port", "description") if port.get(k)})
    return out

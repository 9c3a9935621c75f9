"""The common shape of desired and live state: resources keyed by address.  Pure.

Live LXD objects are normalised (by their kind's module) into the same essence the spec
produces: what LXD owns (volatile.*, image.*) is dropped, reconciler's own tags become fields,
values are strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .address import Address

OWNER_KEY = "user.reconciler.lab"  # the lab that owns an LXD object
IMAGE_KEY = "user.reconciler.image"  # the image as lab.yaml wrote it
APPLIED_KEY = "user.reconciler.applied"  # digest of the body last applied: "your change" or "changed outside"
BOOT_KEY = "user.reconciler.boot"  # digest of the settings a container last started with
TARGET_KEY = "user.reconciler.target"  # the target (member or @group) apply last placed a container by
RECORD_TAG = "user.reconciler.record"  # "true": apply keeps a record of what it wrote inside the container
RESERVED_PREFIX = "user.reconciler."
LXD_OWNED_PREFIXES = ("volatile.", "image.")

Body = dict[str, Any]


@dataclass(frozen=True)
class Meta:
    """How to act on a thing, not what it is: the fields any layer may read, and `payload`, which only
    the thing's kind reads (an instance's boot digest, a file's check command, a service's triggers)."""

    prev_address: Address | None = None  # lab.yaml renamed it from this address (Terraform's PrevRunAddr)
    location: str = ""  # live: the cluster member it is on
    placed: str = ""  # live: the target (member or @group) apply last placed it by
    waits_for: tuple[str, ...] = ()  # the containers whose live address its content needs
    never_started: bool = False  # live: a container that never ran (its creation may have been cut short)
    has_record: bool = False  # live: a container that holds the record of what apply wrote inside it
    secret: bool = False  # its content and its digest are never shown
    payload: Mapping[str, Any] = field(default_factory=dict)

    def with_payload(self, **more: Any) -> Meta:
        return replace(self, payload={**self.payload, **more})

    def merged(self, other: Meta) -> Meta:
        """Both as one: this one's fields where set, else the other's."""
        typed = {f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self) if f.name != "payload"}
        return Meta(**typed, payload={**other.payload, **self.payload})

    def as_json(self) -> dict[str, Any]:
        """The payload with the typed fields that are set beside it."""
        typed = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "payload" and getattr(self, f.name)}
        if self.prev_address is not None:
            typed["prev_address"] = str(self.prev_address)
        if self.waits_for:
            typed["waits_for"] = list(self.waits_for)
        return {**self.payload, **typed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Meta:
        names = {f.name for f in fields(cls)} - {"payload"}
        typed = {k: v for k, v in data.items() if k in names}
        if "prev_address" in typed:
            typed["prev_address"] = Address.parse(typed["prev_address"])
        if "waits_for" in typed:
            typed["waits_for"] = tuple(typed["waits_for"])
        return cls(**typed, payload={k: v for k, v in data.items() if k not in names})


@dataclass(frozen=True)
class Resource:
    """One thing the lab manages.  `body` is the comparable essence, plain JSON-able data."""

    address: Address
    body: Body
    depends_on: tuple[Address, ...] = ()
    owner: str | None = None  # live only: the lab named by its ownership tag
    applied: str | None = None  # live only: the digest recorded when it was last applied
    meta: Meta = field(default_factory=Meta, compare=False)


LabState = dict[Address, Resource]


def add(state: LabState, resource: Resource) -> None:
    state[resource.address] = resource


def digest(body: Mapping[str, Any]) -> str:
    """A short, stable digest of a body (what was applied, for telling who moved)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- Normalising what LXD returns -------------------------------------------------------

def without_filled(have: Resource, want: Resource | None, filled: tuple[str, ...]) -> Resource:
    """The live object without the config keys LXD fills in itself when they are not given (a bridge's
    addresses, a dir pool's source), unless lab.yaml sets them: they are not drift."""
    kept = want.body["config"] if want else {}
    config = {k: v for k, v in have.body["config"].items() if k not in filled or k in kept}
    return replace(have, body={**have.body, "config": config})


def filled_back(raw: Mapping[str, Any], filled: tuple[str, ...], config: Mapping[str, str]) -> dict[str, str]:
    """The keys LXD filled in that a PUT must send back (LXD refuses one that drops them), but those given."""
    return {k: v for k, v in (raw.get("config") or {}).items() if k in filled and k not in config}


def own_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Config without LXD's keys and reconciler's tags, as strings."""
    return {k: str(v) for k, v in sorted(config.items())
            if not k.startswith(LXD_OWNED_PREFIXES) and not k.startswith(RESERVED_PREFIX)}


def lxd_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """The keys LXD writes itself; sent back on every PUT (a PUT without them loses the MAC)."""
    return {k: v for k, v in config.items() if k.startswith(LXD_OWNED_PREFIXES)}


def devices_of(devices: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, str]]:
    return {name: {k: str(v) for k, v in sorted(dev.items())} for name, dev in sorted((devices or {}).items())}


def referenced_networks(devices: Mapping[str, Mapping[str, str]]) -> set[str]:
    """Managed networks NICs name: `network=`, or a bridged NIC's parent."""
    out = set()
    for device in devices.values():
        if device.get("type") == "nic":
            if "network" in device:
                out.add(device["network"])
            elif device.get("nictype") == "bridged" and "parent" in device:
                out.add(device["parent"])
    return out


def acls_named(settings: Mapping[str, Any]) -> list[str]:
    """The network ACLs a network's config or a NIC names in `security.acls` (comma-separated)."""
    return [n.strip() for n in str(settings.get("security.acls") or "").split(",") if n.strip()]


def nic_acls(devices: Mapping[str, Mapping[str, str]]) -> set[str]:
    """The network ACLs the NICs among `devices` name."""
    return {n for device in devices.values() if device.get("type") == "nic" for n in acls_named(device)}


def ipv4_by_nic(raw_state: Mapping[str, Any] | None) -> dict[str, str]:
    """{'eth0': '10.0.0.5'} from an instance's state: first global IPv4 of each NIC."""
    out = {}
    for nic, info in sorted(((raw_state or {}).get("network") or {}).items()):
        for addr in info.get("addresses") or []:
            if addr.get("family") == "inet" and addr.get("scope") == "global":
                out[nic] = addr["address"]
                break
    return out

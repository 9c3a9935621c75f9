"""The common shape of desired and live state: resources keyed by address.

Live LXD objects are normalised here into the same essence the spec produces: what LXD
owns (volatile.*, image.*) is dropped, reconciler's own tags become fields, values are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

OWNER_KEY = "user.reconciler.lab"
IMAGE_KEY = "user.reconciler.image"
LXD_OWNED_PREFIXES = ("volatile.", "image.")
# Keys LXD fills in on a bridge when they are not given; not drift unless the lab sets them.
NETWORK_DEFAULTED_KEYS = ("ipv4.address", "ipv4.nat", "ipv6.address", "ipv6.nat")

KIND_ORDER = {"network": 0, "profile": 1, "instance": 2, "package": 3, "file": 4, "service": 5}


@dataclass(frozen=True)
class Resource:
    """One thing the lab manages. `body` is the comparable essence, JSON-able."""

    kind: str
    name: str
    body: dict
    depends_on: tuple[str, ...] = ()
    owner: str | None = None  # live only: the lab named by its ownership tag
    meta: dict = field(default_factory=dict, compare=False)  # not compared: how to act, not what is
    # A desired value that can only be computed at apply (e.g. it needs an address not yet known).
    deferred: Callable[[Mapping[str, str]], Any] | None = field(default=None, compare=False, repr=False)

    @property
    def address(self) -> str:
        return address(self.kind, self.name)


def address(kind: str, name: str) -> str:
    return f"{kind}.{name}"


def split_address(addr: str) -> tuple[str, str]:
    kind, _, name = addr.partition(".")
    return kind, name


LabState = dict[str, Resource]


def sort_key(addr: str) -> tuple:
    kind, name = split_address(addr)
    return (KIND_ORDER.get(kind, 9), name)


# --- Normalising what LXD returns -------------------------------------------------------

def own_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Config without LXD's keys and reconciler's tags, as strings."""
    return {k: str(v) for k, v in sorted(config.items())
            if not k.startswith(LXD_OWNED_PREFIXES) and not k.startswith("user.reconciler.")}


def _devices(devices: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    return {name: {k: str(v) for k, v in sorted(dev.items())} for name, dev in sorted(devices.items())}


def referenced_networks(devices: Mapping[str, Mapping[str, str]]) -> set[str]:
    out = set()
    for device in devices.values():
        if device.get("type") == "nic":
            if "network" in device:
                out.add(device["network"])
            elif device.get("nictype") == "bridged" and "parent" in device:
                out.add(device["parent"])
    return out


def without_lxd_defaults(config: Mapping[str, str], kept: Mapping[str, str]) -> dict[str, str]:
    """A bridge's config without the keys LXD filled in itself, unless `kept` (lab.yaml's) sets them."""
    return {k: v for k, v in config.items() if k not in NETWORK_DEFAULTED_KEYS or k in kept}


def network_from_lxd(raw: Mapping[str, Any]) -> Resource:
    body = {"type": raw.get("type", "bridge"), "description": raw.get("description", ""),
            "config": own_config(raw.get("config") or {})}
    return Resource("network", raw["name"], body, owner=(raw.get("config") or {}).get(OWNER_KEY))


def profile_from_lxd(raw: Mapping[str, Any]) -> Resource:
    devices = _devices(raw.get("devices") or {})
    body = {"description": raw.get("description", ""), "config": own_config(raw.get("config") or {}),
            "devices": devices}
    deps = tuple(sorted(address("network", n) for n in referenced_networks(devices)))
    return Resource("profile", raw["name"], body, deps, owner=(raw.get("config") or {}).get(OWNER_KEY))


def instance_from_lxd(raw: Mapping[str, Any]) -> Resource:
    config = raw.get("config") or {}
    devices = _devices(raw.get("devices") or {})
    body = {"type": raw.get("type", "container"), "image": config.get(IMAGE_KEY, ""),
            "description": raw.get("description", ""), "profiles": list(raw.get("profiles") or []),
            "config": own_config(config), "devices": devices,
            "state": "running" if raw.get("status") == "Running" else "stopped"}
    deps = [address("profile", p) for p in body["profiles"]]
    deps += [address("network", n) for n in sorted(referenced_networks(devices))]
    return Resource("instance", raw["name"], body, tuple(deps), owner=config.get(OWNER_KEY))


def ipv4_by_nic(raw_state: Mapping[str, Any] | None) -> dict[str, str]:
    """{'eth0': '10.0.0.5'} from an instance's state: first global IPv4 of each NIC."""
    out = {}
    for nic, info in sorted(((raw_state or {}).get("network") or {}).items()):
        for addr in info.get("addresses") or []:
            if addr.get("family") == "inet" and addr.get("scope") == "global":
                out[nic] = addr["address"]
                break
    return out

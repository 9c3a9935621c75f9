"""LXD storage pools the lab owns (`storage_pools:`): server-wide, created before the volumes on them
and the containers whose disks name them, deleted after.

LXD 5.0 takes `user.*` keys in a pool's config (seen on the real daemon), so a pool carries the lab's
ownership tags as networks do.  A pool's driver cannot change in place: a change replaces the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field

from .. import values
from ..address import Address, Kind
from ..fields import OwnConfig, Strict
from ..plan import Action, Change
from ..state import APPLIED_KEY, OWNER_KEY, Resource, digest, filled_back, own_config, without_filled
from .contract import Chosen, LabTable, Scope, Wanted, declared_as, entries, existing_names, importable, imported_part

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..spec import Lab
    from ..spec.declared import Declared, Found
    from .runner import Runner

KIND = Kind.register("pool")
RANK = 25  # after networks, before volumes (30) and profiles
SHAPE = ("cylinder", "#d0e0e3")
ABSENT = "not in {daemon}"  # why a create
DEEP_READ = False  # nothing in it needs live addresses
REPLACE_FIELDS: tuple[str, ...] = ("driver",)
COLLECTION = "storage-pools"
PARENT: Kind | None = None
SCOPE = Scope.SERVER
TABLE = "storage_pools"
NOUN = "storage pool"
API_EXTENSION = "storage"  # what it needs in GET /1.0's api_extensions ("": the core API)
# Keys LXD fills in on a new pool when they are not given (the dir driver's source path, a loop file's
# size, the volume group...): not drift unless the lab sets them.
DEFAULTED_KEYS = ("source", "size", "lvm.vg_name", "lvm.thinpool_name", "zfs.pool_name")


# --- lab.yaml's `storage_pools:` -----------------------------------------------------------------

POOL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"  # it becomes part of LXD API paths
SIZE_KEYS = ("size", "volume.size")  # a pool's loop file and its volumes' default; a volume's own


def _sizes(config: dict[str, str]) -> dict[str, str]:
    for key in SIZE_KEYS:
        problem = values.size_problem(str(config[key])) if key in config else None
        if problem:
            raise ValueError(f"{key}: {problem}")
    return config


StorageConfig = Annotated[OwnConfig, AfterValidator(_sizes)]
PoolRef = Annotated[str, values.Matching(POOL_NAME, "a storage pool name")]


class StoragePool(Strict):
    """An LXD storage pool the lab owns (server-wide, like LXD's pools)."""

    driver: Literal["dir", "btrfs", "lvm", "zfs"] = Field(description="LXD's storage driver; a change replaces the pool")
    description: str = ""
    config: StorageConfig = Field({}, description="LXD pool keys (source, size, volume.size, ...); values become"
                                  " strings")


LAB_TABLE: LabTable | None = LabTable(StoragePool, POOL_NAME, "storage pool", "storage pools the lab owns (server-wide)",
                                      adopt=PoolRef, existing=(PoolRef, ("default",)))


def pools(lab: Lab) -> dict[str, StoragePool]:
    """lab.yaml's `storage_pools:`."""
    return entries(lab, TABLE)


def existing(lab: Lab) -> list[str]:
    """lab.yaml's `existing.storage_pools` (LXD's `default` unless written)."""
    return existing_names(lab, TABLE)


def known(lab: Lab, declared: Declared) -> frozenset[str] | None:
    """The pools lab.yaml may name: its own and the existing ones; None when either could not be read."""
    own = declared.of(TABLE)
    return None if own is None or declared.failed.at(("existing",)) else own | set(existing(lab))


def unknown(where: tuple, name: str, names: Iterable[str]) -> Found:
    from ..spec.declared import Found, suggest
    return Found(where, f"unknown storage pool {name!r}{suggest(name, names)} (declare it under storage_pools:,"
                 " or list it under existing.storage_pools)")


def problems(lab: Lab, declared: Declared) -> list[Found]:
    """Pass 3: the pools disk devices name are the lab's or existing (a volume's pool: its own module), and
    no pool is both owned and existing (plan would take over what the lab says it only uses)."""
    from ..spec.declared import Found, devices_everywhere
    names = known(lab, declared)
    if names is None:
        return []
    out = [unknown(where + ("pool",), device["pool"], names) for where, device in devices_everywhere(lab)
           if device.get("type") == "disk" and device.get("pool") and device["pool"] not in names]
    return out + [Found((TABLE, name), f"{name!r} is declared here and listed under existing.storage_pools"
                        " (which is [default] unless written): the lab cannot own what it only uses; remove one of"
                        " the two", True)
                  for name in sorted((declared.of(TABLE) or set()) & set(existing(lab)))]


# --- planned and applied ------------------------------------------------------------------------

def pool(name: str) -> Address:
    return Address(KIND, name)


def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    return [Resource(pool(name), {"driver": spec.driver, "description": spec.description,
                                  "config": dict(sorted(spec.config.items()))})
            for name, spec in pools(lab).items()]


def deletable(address: Address) -> bool:
    return True  # one lab.yaml no longer has is deleted


def parents(lab: Lab) -> set[str]:
    return set()  # not nested


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    """The pools root disks are on (a disk with `pool` and no `source`; a volume's disk depends on the
    volume, which depends on its pool); with `lab`, those it declares."""
    named = (d["pool"] for d in devices.values() if d.get("type") == "disk" and d.get("pool") and not d.get("source"))
    return tuple(dict.fromkeys(pool(n) for n in named if lab is None or n in pools(lab)))


def from_lxd(raw: Mapping[str, Any]) -> Resource:
    config = raw.get("config") or {}
    body = {"driver": raw.get("driver", ""), "description": raw.get("description", ""), "config": own_config(config)}
    return Resource(pool(raw["name"]), body, owner=config.get(OWNER_KEY), applied=config.get(APPLIED_KEY))


def comparable(have: Resource, want: Resource | None) -> Resource:
    """The live pool without the keys LXD filled in itself, unless lab.yaml sets them."""
    return without_filled(have, want, DEFAULTED_KEYS)


def apply(run: Runner, change: Change, action: Action) -> None:
    name = change.address.name
    if action in (Action.DELETE, Action.REPLACE):  # a replace: deleted, then created anew
        run.lxd.delete("pool", name)
        if action == Action.DELETE:
            return None
    want = change.after or {}
    config = {**want["config"], OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
    if action == Action.ADOPT:  # tagged as it is
        raw, etag = run.fresh(change)
        tags = {OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
        return run.lxd.put("pool", name, {"description": raw.get("description", ""),
                                          "config": {**(raw.get("config") or {}), **tags}}, etag)
    if action in (Action.CREATE, Action.REPLACE):
        return run.lxd.create("pool", {"name": name, "driver": want["driver"], "description": want["description"],
                                       "config": config})
    raw, etag = run.fresh(change)  # StaleState if it moved since the plan
    # LXD refuses a PUT that drops the keys it filled in (the source cannot change): send them back.
    filled = filled_back(raw, DEFAULTED_KEYS, config)
    run.lxd.put("pool", name, {"description": want["description"], "config": {**filled, **config}}, etag)


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    """The pools the chosen containers' disks name (their volumes' pools among them) that no lab owns,
    on a driver lab.yaml knows; the others (`default`, another lab's) under existing."""
    from typing import get_args

    drivers = get_args(StoragePool.model_fields["driver"].annotation)
    found = {p["name"]: p for p in raw.of(KIND)}
    used = sorted({d["pool"] for devices in chosen.devices() for d in devices.values()
                   if d.get("type") == "disk" and d.get("pool")})
    owned = {n: _declared(found[n]) for n in used if importable(found.get(n)) and found[n].get("driver") in drivers}
    existing = [n for n in used if n not in owned]
    return imported_part(TABLE, owned, sorted({"default", *existing}) if existing else [])  # written, it replaces [default]


def _declared(raw: Mapping[str, Any]) -> dict[str, Any]:
    return declared_as(raw, {"driver": raw.get("driver", "")})

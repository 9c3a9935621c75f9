"""LXD storage pools the lab owns (`storage_pools:`): server-wide, created before the volumes on them
and the containers whose disks name them, deleted after.

LXD 5.0 takes `user.*` keys in a pool's config (seen on the real daemon), so a pool carries the lab's
ownership tags as networks do.  A pool's driver cannot change in place: a change replaces the pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..address import Address, Kind
from ..plan import Action, Change
from ..state import APPLIED_KEY, OWNER_KEY, Resource, digest, filled_back, own_config, without_filled
from .contract import Chosen, Scope, Wanted, declared_as, importable, imported_part

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..spec import Lab
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


def pool(name: str) -> Address:
    return Address(KIND, name)


def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    return [Resource(pool(name), {"driver": spec.driver, "description": spec.description,
                                  "config": dict(sorted(spec.config.items()))})
            for name, spec in lab.storage_pools.items()]


def deletable(address: Address) -> bool:
    return True  # one lab.yaml no longer has is deleted


def parents(lab: Lab) -> set[str]:
    return set()  # not nested


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    """The pools root disks are on (a disk with `pool` and no `source`; a volume's disk depends on the
    volume, which depends on its pool); with `lab`, those it declares."""
    named = (d["pool"] for d in devices.values() if d.get("type") == "disk" and d.get("pool") and not d.get("source"))
    return tuple(dict.fromkeys(pool(n) for n in named if lab is None or n in lab.storage_pools))


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

    from ..spec.models import StoragePool
    drivers = get_args(StoragePool.model_fields["driver"].annotation)
    found = {p["name"]: p for p in raw.of(KIND)}
    used = sorted({d["pool"] for devices in chosen.devices() for d in devices.values()
                   if d.get("type") == "disk" and d.get("pool")})
    owned = {n: _declared(found[n]) for n in used if importable(found.get(n)) and found[n].get("driver") in drivers}
    existing = [n for n in used if n not in owned]
    return imported_part(TABLE, owned, sorted({"default", *existing}) if existing else [])  # written, it replaces [default]


def _declared(raw: Mapping[str, Any]) -> dict[str, Any]:
    return declared_as(raw, {"driver": raw.get("driver", "")})

"""Custom storage volumes the lab owns (`volumes:`), in the lab's project, on a pool: data that outlives
a container.  Addressed `volume.POOL/NAME`.

A container (or a profile) mounts one with a disk device `{type: disk, pool: POOL, source: NAME, path: ...}`:
it is created after the volume and deleted (or detached) before it, so a container replaced keeps its data.
A volume's pool and content type cannot change in place: a change replaces the volume (and a pool
change is a new address: the old volume is deleted, a new one created).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from .. import values
from ..address import Address, Kind
from ..fields import Strict
from ..plan import Action, Change
from ..state import APPLIED_KEY, OWNER_KEY, Resource, digest, filled_back, own_config, without_filled
from ..values import size_bytes
from . import storage_pool
from .contract import Chosen, LabTable, Scope, Wanted, entries, existing_names, importable, imported_part
from .storage_pool import POOL_NAME, PoolRef, StorageConfig, pool

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..spec import Lab
    from ..spec.declared import Declared, Found
    from .runner import Runner

KIND = Kind.register("volume")
RANK = 30  # after its pool (25), before the profiles and containers that mount it
SHAPE = ("cylinder", "#b6d7a8")
ABSENT = "not in {daemon}"  # why a create
DEEP_READ = False  # nothing in it needs live addresses
REPLACE_FIELDS: tuple[str, ...] = ("pool", "content_type")
COLLECTION = "volumes/custom"  # under its pool: /1.0/storage-pools/POOL/volumes/custom
PARENT: Kind | None = storage_pool.KIND
SCOPE = Scope.PROJECT  # in the lab's project when it has features.storage.volumes, else in default
TABLE = "volumes"
NOUN = "storage volume"
API_EXTENSION = "storage"  # what it needs in GET /1.0's api_extensions ("": the core API)
# Keys LXD copies onto a new volume from its pool on block-backed drivers (lvm; not on dir): not drift
# unless the lab sets them.
DEFAULTED_KEYS = ("block.filesystem", "block.mount_options")
DATA_LOST = "the data on it is lost"


# --- lab.yaml's `volumes:` ------------------------------------------------------------------------

VOLUME_NAME = POOL_NAME


class Volume(Strict):
    """A custom storage volume the lab owns, in its project, on a pool; containers mount it with a disk
    device `{type: disk, pool: POOL, source: NAME, path: ...}`."""

    pool: PoolRef = Field(description="the pool it lives on (a lab pool or one under existing.storage_pools);"
                          " a change replaces the volume")
    description: str = ""
    content_type: Literal["filesystem", "block"] = Field("filesystem", description="a change replaces the volume")
    config: StorageConfig = Field({}, description="LXD volume keys (size, security.shifted, ...); values become"
                                  " strings")


LAB_TABLE: LabTable | None = LabTable(
    Volume, VOLUME_NAME, "volume", "custom storage volumes the lab owns, by name (one name per lab, whatever the pool)",
    adopt=Annotated[str, values.Matching(VOLUME_NAME, "a volume name")],
    existing=(Annotated[str, values.Matching(f"{POOL_NAME}/{VOLUME_NAME}", "POOL/VOLUME")], ()))


def volumes(lab: Lab) -> dict[str, Volume]:
    """lab.yaml's `volumes:`."""
    return entries(lab, TABLE)


def existing(lab: Lab) -> list[str]:
    """lab.yaml's `existing.volumes`, as POOL/NAME."""
    return existing_names(lab, TABLE)


def problems(lab: Lab, declared: Declared) -> list[Found]:
    """Pass 3: each volume's pool, and each volume a disk device mounts (`pool` and `source`), is the lab's
    or existing; never calling "unknown" a name that is declared but invalid."""
    from ..spec.declared import Found, devices_everywhere, suggest
    pools, declared_volumes = storage_pool.known(lab, declared), declared.of(TABLE)
    if pools is None or declared_volumes is None:
        return []
    out = [storage_pool.unknown((TABLE, name, "pool"), spec.pool, pools) for name, spec in volumes(lab).items()
           if spec.pool not in pools]
    for where, device in devices_everywhere(lab):
        pool_name, source = device.get("pool"), device.get("source", "")
        if device.get("type") == "disk" and pool_name in pools and source and not _known(lab, declared, pool_name, source):
            out.append(Found(where + ("source",), f"unknown volume {source!r} on pool {pool_name!r}"
                             f"{suggest(source, declared_volumes)} (declare it under volumes: with pool: {pool_name},"
                             f" or list {pool_name}/{source} under existing.volumes)"))
    return out


def _known(lab: Lab, declared: Declared, pool_name: str, source: str) -> bool:
    if f"{pool_name}/{source}" in existing(lab):
        return True
    if source not in (declared.of(TABLE) or ()):
        return False
    own = volumes(lab)
    return source not in own or own[source].pool == pool_name  # an invalid entry's pool is unknown


# --- planned and applied ------------------------------------------------------------------------

def volume(pool_name: str, name: str) -> Address:
    return Address(KIND, f"{pool_name}/{name}")


def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    return [Resource(volume(spec.pool, name), {"pool": spec.pool, "content_type": spec.content_type,
                                               "description": spec.description,
                                               "config": dict(sorted(spec.config.items()))},
                     (pool(spec.pool),) if spec.pool in storage_pool.pools(lab) else ())
            for name, spec in volumes(lab).items()]


def deletable(address: Address) -> bool:
    return True  # one lab.yaml no longer has is deleted (apply wants --force: its data goes with it)


def parents(lab: Lab) -> set[str]:
    """The pools lab.yaml's volumes are on: plan reads their custom volumes (and those of the lab's own pools)."""
    return {v.pool for v in volumes(lab).values()}


def from_lxd(raw: Mapping[str, Any]) -> Resource | None:
    if raw.get("type", "custom") != "custom" or "/" in raw["name"]:
        return None  # a container's or an image's own volume, or a snapshot (LXD 5.0 lists them as VOLUME/SNAPSHOT)
    config = raw.get("config") or {}
    parent = raw["parent"]
    body = {"pool": parent, "content_type": raw.get("content_type", "filesystem"),
            "description": raw.get("description", ""), "config": own_config(config)}
    return Resource(volume(parent, raw["name"]), body, (pool(parent),), owner=config.get(OWNER_KEY),
                    applied=config.get(APPLIED_KEY))


def comparable(have: Resource, want: Resource | None) -> Resource:
    """The live volume without the keys LXD copied from its pool, unless lab.yaml sets them."""
    return without_filled(have, want, DEFAULTED_KEYS)


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    """The volumes disk devices mount (`pool` and `source`); with `lab`, those it declares."""
    out: list[Address] = []
    for device in devices.values():
        pool_name, source = device.get("pool"), device.get("source", "")
        if device.get("type") == "disk" and pool_name and source:
            if lab is None or (source in volumes(lab) and volumes(lab)[source].pool == pool_name):
                out.append(volume(pool_name, source))
    return tuple(dict.fromkeys(out))


def loses_data(change: Change, action: Action) -> bool:
    """A volume deleted or replaced: its data goes with it (LXD 5.0 does not say whether a volume is empty
    without reading each one, so every volume is taken to hold data)."""
    return change.address.kind == KIND and action in (Action.DELETE, Action.REPLACE)


def apply(run: Runner, change: Change, action: Action) -> None:
    name = change.address.name
    if action in (Action.DELETE, Action.REPLACE):  # a replace: deleted, then created anew
        run.lxd.delete("volume", name)
        if action == Action.DELETE:
            return None
    want = change.after or {}
    config = {**want["config"], OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
    if action == Action.ADOPT:  # tagged as it is
        raw, etag = run.fresh(change)
        tags = {OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
        return run.lxd.put("volume", name, {"description": raw.get("description", ""),
                                            "config": {**(raw.get("config") or {}), **tags}}, etag)
    if action in (Action.CREATE, Action.REPLACE):
        body = {"name": name.partition("/")[2], "type": "custom", "content_type": want["content_type"],
                "description": want["description"], "config": config}
        return run.lxd.create("volume", body, parent=want["pool"])
    raw, etag = run.fresh(change)  # StaleState if it moved since the plan
    refused = size_refused(run, name, (change.before or {}).get("config", {}).get("size"), want["config"].get("size"))
    if refused:
        raise run.step_error(f"{change.address}: {refused}")
    filled = filled_back(raw, DEFAULTED_KEYS, config)
    run.lxd.put("volume", name, {"description": want["description"], "config": {**filled, **config}}, etag)


def size_refused(run: Runner, name: str, have: str | None, want: str | None) -> str | None:
    """Why a new size is refused (`shrinks`); LXD is asked only about a shrink: its pool's driver."""
    if shrinks(have, want) is None:
        return None
    return shrinks(have, want, run.lxd.get("pool", name.partition("/")[0])[0].get("driver", ""))


# Drivers on which a volume's size is a quota, not the size of a filesystem: btrfs (its subvolume's quota
# group limit; measured on LXD 5.0.2 and Incus 6.0.4). A smaller one there cuts no data, but one below what
# the volume holds fails after the smaller limit is set: the config keeps the old size and the volume
# refuses every write (LXD's own size changes too) until `btrfs qgroup limit none` on the host. What it
# holds cannot be read beforehand: LXD's volume state counts only data btrfs has committed (after a `dd` of
# 40 MiB in a container its `used` stayed 16384, polled for 50 s, until a sync), so a shrink is refused there too.
QUOTA_DRIVERS = ("btrfs",)


def shrinks(have: str | None, want: str | None, driver: str = "") -> str | None:
    """Why a size change is refused: a volume grows in place, it never shrinks (a filesystem cut short
    loses what lies beyond the cut; a quota set below the data leaves the volume refusing every write);
    None when it grows or either size is not one LXD's units say."""
    before, after = size_bytes(have), size_bytes(want)
    if before is None or after is None or after >= before:
        return None
    why = (f"on {driver} its size is a quota, and one set below what it holds (which LXD's count, lagging"
           " unsynced writes, cannot tell) leaves it refusing every write") if driver in QUOTA_DRIVERS \
        else "and data beyond the new size would be lost"
    return (f"size {have} -> {want} would shrink the volume, {why}: a volume only grows (to make it smaller,"
            " declare a new one and copy the data)")


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    """The custom volumes the chosen containers' disks mount (`pool` and `source`) that no lab owns; the
    others (another lab's, one not found, a second one of a name the lab has: lab.yaml keeps one volume a
    name) under existing, as POOL/NAME."""
    found = {(v["parent"], v["name"]): v for v in raw.of(KIND) if v.get("type", "custom") == "custom"}
    used = sorted({(d["pool"], d["source"]) for devices in chosen.devices() for d in devices.values()
                   if d.get("type") == "disk" and d.get("pool") and d.get("source")})
    owned: dict[str, dict[str, Any]] = {}
    for key in used:
        if importable(found.get(key), named=False) and key[1] not in owned:
            owned[key[1]] = _declared(found[key])
    return imported_part(TABLE, owned, [f"{p}/{n}" for p, n in used if owned.get(n, {}).get("pool") != p])


def _declared(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"pool": raw["parent"]}
    if raw.get("description"):
        out["description"] = raw["description"]
    if raw.get("content_type", "filesystem") != "filesystem":
        out["content_type"] = raw["content_type"]
    config = own_config(raw.get("config") or {})
    if config:
        out["config"] = config
    return out

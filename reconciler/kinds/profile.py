"""LXD profiles the lab owns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..address import Address, Kind, profile
from ..plan import Action, Change
from ..state import APPLIED_KEY, OWNER_KEY, Resource, devices_of, digest, own_config
from .contract import Chosen, LabTable, Scope, Wanted, imported_part

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..spec import Lab
    from .runner import Runner

KIND = Kind.PROFILE
RANK = 40  # plan order
SHAPE = ("folder", "#fff2cc")
ABSENT = "not in {daemon}"  # why a create: what the plan says of one that is not there
COLLECTION = "profiles"
PARENT: Kind | None = None
SCOPE = Scope.PROJECT
TABLE = "profiles"
LAB_TABLE: LabTable | None = None  # a core table: spec.models has its model
NOUN = "profile"
API_EXTENSION = ""  # what it needs in GET /1.0's api_extensions ("": the core API)
DEEP_READ = False
REPLACE_FIELDS: tuple[str, ...] = ()


def deletable(address: Address) -> bool:
    """A project's default profile is never deleted (LXD refuses): it goes with its project."""
    return address.name != "default"


def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    out = []
    for name, prof in lab.profiles.items():
        devices = {d: dict(sorted(v.items())) for d, v in sorted(prof.devices.items())}
        body = {"description": prof.description, "config": dict(sorted(prof.config.items())), "devices": devices}
        out.append(Resource(profile(name), body))  # what its devices name: added from the registry
    return out


def parents(lab: Lab) -> set[str]:
    return set()  # not nested


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    return ()  # no device names a profile (a container lists its profiles)


def comparable(have: Resource, want: Resource | None) -> Resource:
    return have  # LXD keeps what it was given


def from_lxd(raw: Mapping[str, Any]) -> Resource:
    config = raw.get("config") or {}
    devices = devices_of(raw.get("devices"))
    body = {"description": raw.get("description", ""), "config": own_config(config), "devices": devices}
    return Resource(profile(raw["name"]), body, owner=config.get(OWNER_KEY), applied=config.get(APPLIED_KEY))


def apply(run: Runner, change: Change, action: Action) -> None:
    name = change.address.name
    if action == Action.DELETE:
        return run.lxd.delete("profile", name)
    want = change.after or {}
    body = {"description": want["description"], "devices": want["devices"],
            "config": {**want["config"], OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}}
    if action == Action.CREATE:
        return run.lxd.create("profile", {"name": name, **body})
    if action == Action.ADOPT:
        raw, etag = run.fresh(change)
        tags = {OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
        return run.lxd.put("profile", name, {"description": raw.get("description", ""),
                                             "devices": raw.get("devices") or {},
                                             "config": {**(raw.get("config") or {}), **tags}}, etag)
    _, etag = run.fresh(change)
    run.lxd.put("profile", name, body, etag)


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    """The chosen containers' profiles that no lab owns, as they are; the others (`default`, another
    lab's) under existing, written even when empty (unwritten, it would mean [default])."""
    used = sorted({p for i in chosen.instances for p in i.get("profiles") or []})
    owned = {p["name"]: _declared(p) for p in sorted(chosen.profiles, key=lambda p: p["name"])}
    part = imported_part(TABLE, owned, [p for p in used if p not in owned])
    part.setdefault("existing", {}).setdefault(TABLE, [])
    return part


def _declared(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if raw.get("description"):
        out["description"] = raw["description"]
    for key, value in (("config", own_config(raw.get("config") or {})), ("devices", devices_of(raw.get("devices")))):
        if value:
            out[key] = value
    return out

"""The LXD project a lab owns (`project:` in lab.yaml): created before everything else, deleted after.

A lab that declares `project:` owns the project `lxd.project` names.  While it does not exist LXD
refuses every read in it, so plan reads only what is global (networks, ACLs) and what the project
will share with the default project (images; profiles when it keeps none of its own), and plans
everything as created.  In a project the lab owns, the `default` profile LXD made with it is the
lab's when lab.yaml declares it (root disk, NICs): plan updates it, and it is never deleted (LXD
refuses; it goes with the project).  Destroy takes the lab's devices but the root disk out of it
(a NIC would keep the lab's network in use), then deletes the project, only when nothing but the
lab's is in it.  Without `project:` the project must exist and is only used, whatever tag it carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..address import Address, Kind, profile, project
from ..daemon import TITLES
from ..plan import Action, Change, PlanError
from ..state import APPLIED_KEY, OWNER_KEY, Body, LabState, Resource, digest, own_config
from .contract import Scope, Wanted

if TYPE_CHECKING:
    from ..live import Live
    from ..lxd import Lxd, RawState
    from ..spec import Lab, OwnedProject
    from .contract import Chosen, LabTable
    from .runner import Runner

KIND = Kind.PROJECT
RANK = 0  # plan order
SHAPE = ("tab", "#eeeeee")
ABSENT = "not in {daemon}"  # why a create: what the plan says of one that is not there
COLLECTION = "projects"
PARENT: Kind | None = None
SCOPE = Scope.OWN
TABLE = ""
LAB_TABLE: LabTable | None = None  # no table: `project:` is part of spec.models' Lab
NOUN = "project"
API_EXTENSION = "projects"  # what it needs in GET /1.0's api_extensions ("": the core API)
DEEP_READ = False
REPLACE_FIELDS: tuple[str, ...] = ()
DEFAULT_PROFILE = "default"



def deletable(address: Address) -> bool:
    return True  # what lab.yaml no longer has is deleted

def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    return [Resource(project(lab.lxd.project), body(lab.project))] if lab.project else []


def body(spec: OwnedProject) -> Body:
    return {"description": spec.description, "config": dict(sorted({**spec.config, **spec.features.config()}.items()))}


def parents(lab: Lab) -> set[str]:
    return set()  # not nested


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    return ()  # no device names a project


def comparable(have: Resource, want: Resource | None) -> Resource:
    return have  # LXD keeps what it was given


def from_lxd(raw: Mapping[str, Any]) -> Resource:
    config = raw.get("config") or {}
    return Resource(project(raw["name"]), {"description": raw.get("description", ""), "config": own_config(config)},
                    owner=config.get(OWNER_KEY), applied=config.get(APPLIED_KEY))


def within(state: LabState, name: str) -> LabState:
    """Every LXD object waits for the project: created after it, deleted before it."""
    here = project(name)
    return {a: r if a.kind.inside or a == here else replace(r, depends_on=tuple(dict.fromkeys(r.depends_on + (here,))))
            for a, r in state.items()}


# --- read ----------------------------------------------------------------------------------------

def read(lxd: Lxd, lab: Lab, with_addresses: bool) -> tuple[dict | None, RawState]:
    """The owned project as LXD has it (None: absent), and what plan can read of the lab."""
    from . import OBJECT_KINDS, nested_reads  # the registry imports this module
    under = nested_reads(lab)
    if lab.project is None:
        return None, lxd.read(with_addresses, under)
    found = lxd.project_info()
    if found is not None:
        return found, lxd.read(with_addresses, under)
    features = lab.project.features
    shared = {k.KIND for k in OBJECT_KINDS if k.SCOPE == Scope.SHARED} | (set() if features.profiles else {Kind.PROFILE})
    raw = lxd.read_before_project(shared, not features.images, under)
    if features.profiles:
        raw.profiles.append(made_with(lab.lxd.project, lxd.daemon.name))
    return None, raw


def made_with(name: str, daemon: str = "lxd") -> dict[str, Any]:
    """The default profile the daemon makes with a new project (LXD 5.0 and Incus 6.0: empty, and this
    description, naming the daemon)."""
    title = TITLES.get(daemon, daemon)
    return {"name": DEFAULT_PROFILE, "description": f"Default {title} profile for project {name}", "config": {},
            "devices": {}, "used_by": []}


def claim(live: Live, lab: Lab, found: dict | None, destroy: bool) -> list[str]:
    """Make the owned project and, when lab.yaml declares it, its default profile the lab's in `live`;
    refuse a project that is someone else's.  Returns notes for the plan."""
    if lab.project is None:
        return []
    name = lab.lxd.project
    if DEFAULT_PROFILE in lab.profiles and not destroy and lab.project.features.profiles:
        _take_default_profile(live, lab.lab)
    if found is None:
        return []
    here = from_lxd(found)
    if here.owner != lab.lab:
        whose = f"lab {here.owner!r}" if here.owner else "no lab (it has no user.reconciler.lab tag)"
        raise PlanError(f"project.{name}: lab.yaml owns it (project:), but it exists in LXD and belongs to {whose}:"
                        " drop the project: section to use it as it is, or name another lxd.project")
    others = _not_the_labs(live)
    if destroy and others:
        return [f"project {name} also holds {', '.join(others)}, which the lab does not own: destroy leaves the"
                " project (it deletes it only once nothing but the lab's is in it)"]
    live.owned[here.address] = here
    live.owned.update(within(live.owned, name))
    return []


def emptied_default_profile(live: Live) -> list[Resource]:
    """Destroy: a default profile the lab owns is never deleted (LXD refuses), but the lab's devices leave
    it, or a NIC in it would keep the lab's network in use.  Its root disk stays: it uses no network, and
    LXD wants one while anything still uses the profile (a project the lab leaves behind)."""
    have = live.owned.get(profile(DEFAULT_PROFILE))
    if have is None:
        return []
    devices = {name: d for name, d in have.body["devices"].items() if d.get("type") == "disk" and d.get("path") == "/"}
    return [Resource(have.address, {**have.body, "devices": devices})]


def _take_default_profile(live: Live, lab_name: str) -> None:
    addr = profile(DEFAULT_PROFILE)
    found = live.untagged.pop(addr, None)
    if found is not None:
        live.foreign.pop(addr, None)
        live.owned[addr] = replace(found, owner=lab_name)


def _not_the_labs(live: Live) -> list[str]:
    """What is in the project and not the lab's (networks and ACLs are global: not in it)."""
    return sorted(str(a) for a in live.foreign if a.kind == Kind.INSTANCE
                  or (a.kind == Kind.PROFILE and a.name != DEFAULT_PROFILE))


# --- applied ----------------------------------------------------------------------------------

def apply(run: Runner, change: Change, action: Action) -> None:
    name = change.address.name
    if action == Action.DELETE:
        return run.lxd.delete("project", name)
    want = change.after or {}
    config = {**want["config"], OWNER_KEY: run.lab_name, APPLIED_KEY: digest(want)}
    if action == Action.CREATE:
        return run.lxd.create("project", {"name": name, "description": want["description"], "config": config})
    _, etag = run.fresh(change)  # features change only while the project is empty: LXD says so
    run.lxd.put("project", name, {"description": want["description"], "config": config}, etag)


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    return {}  # the project is lab.yaml's lxd.project: import names it, never owns it

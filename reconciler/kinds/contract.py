"""The contract every kind module keeps, typed so that mypy holds each module to it.

A kind module is checked against one of two Protocols when it is put in the registry
(kinds/__init__.py): `ObjectKind` for an object of LXD's API (a project, an ACL, a network, a storage
pool...), `InsideKind` for a thing inside a container (a package, a file, a service).  Every layer
(LXD reads, live state, desired state, destroy, graph, plan order) iterates the registry, so a new
kind is one module and one registry line; a module that forgets a part fails mypy, and the registry
check at import fails for what mypy cannot see (a lab.yaml table the spec does not have).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from ..state import OWNER_KEY, devices_of, own_config

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..address import Address, Kind
    from ..lxd import RawState
    from ..plan import Action, Change
    from ..spec import Lab
    from ..state import Resource
    from .runner import Runner


class Scope(Enum):
    """Where LXD keeps a kind's objects, which decides how plan reads them."""

    OWN = "own"  # the lab's own project object: read on its own, before anything in it
    PROJECT = "project"  # in the lab's project: nothing to read while that project does not exist
    SHARED = "shared"  # in the project, or the default one's while the project does not isolate them
    SERVER = "server"  # one per server, whatever the project (storage pools)


@dataclass(frozen=True)
class Wanted:
    """What building the desired state may know of LXD besides lab.yaml."""

    live_profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> raw JSON
    # container -> {NIC device: IPv4} where plan read it and apply keeps it (not one it creates, replaces
    # or moves): a forward's target by its live address
    nics: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Chosen:
    """What `reconcile import` takes over: the containers asked for, and the profiles they use that no lab
    owns (LXD's JSON of each).  Each kind's `imported` works out its own objects from these."""

    instances: tuple[Mapping[str, Any], ...]
    profiles: tuple[Mapping[str, Any], ...]

    def devices(self) -> list[dict[str, dict[str, str]]]:
        """The devices lab.yaml will declare: the containers' own and the imported profiles'."""
        return [devices_of(o.get("devices")) for o in self.instances + self.profiles]

    def declared_devices(self, instance: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """One container's devices as lab.yaml will expand them: its imported profiles in order, then its own."""
        by_name = {p["name"]: p for p in self.profiles}
        out: dict[str, dict[str, str]] = {}
        for name in instance.get("profiles") or []:
            out.update(devices_of((by_name.get(name) or {}).get("devices")))
        return {**out, **devices_of(instance.get("devices"))}


@dataclass(frozen=True)
class LabTable:
    """A kind's own table in lab.yaml (`LAB_TABLE`): spec gives `Lab` a field for it (and `adopt:` and
    `existing:` a list where the kind says so), checks its keys, and stands in for its failed parts; the
    kind's module reads it through a typed accessor of its own.  The core's tables (networks, profiles,
    containers, acls, haproxy) are spec's, and their kinds' LAB_TABLE is None."""

    model: type[BaseModel]  # one entry
    key: str  # the pattern its keys follow (the schema's propertyNames; pass 2 checks them)
    noun: str  # how a bad key is called: "'x' is not a valid {noun} name"
    description: str  # the table's, in the schema
    adopt: Any = None  # the type of an item of `adopt.TABLE` (None: `adopt:` does not list this kind)
    existing: tuple[Any, tuple[str, ...]] | None = None  # `existing.TABLE`: an item's type, and the default
    stand_ins: tuple[tuple[tuple, Any], ...] = ()  # (path inside an entry, value): what a failed part stands in for


def entries(lab: Lab, table: str) -> Any:
    """A kind's lab.yaml table (a field `Lab` gets from its LAB_TABLE): typed by the kind's own accessor."""
    return getattr(lab, table)


def existing_names(lab: Lab, table: str) -> Any:
    """A kind's list under `existing:` (from its LAB_TABLE): typed by the kind's own accessor."""
    return getattr(lab.existing, table)


def importable(obj: Mapping[str, Any] | None, named: bool = True) -> bool:
    """Exists, and no lab owns it; `named`: one called `default` stays LXD's too (a profile, a pool)."""
    return obj is not None and OWNER_KEY not in (obj.get("config") or {}) and not (named and obj.get("name") == "default")


def declared_as(raw: Mapping[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """An imported object's lab.yaml entry: `head` (its kind's own fields), then its description and the
    config keys that are its own (not LXD's or reconciler's), where it has any."""
    out = dict(head)
    if raw.get("description"):
        out["description"] = raw["description"]
    config = own_config(raw.get("config") or {})
    if config:
        out["config"] = config
    return out


def imported_part(table: str, owned: Mapping[str, Any], existing: list[str]) -> dict[str, Any]:
    """A kind's part of an imported lab.yaml: what it owns, declared and adopted; what it only uses, existing."""
    part: dict[str, Any] = {"existing": {table: existing}} if existing else {}
    if owned:
        part.update({"adopt": {table: list(owned)}, table: dict(owned)})
    return part


class Kind_(Protocol):
    """What every kind declares."""

    KIND: Kind
    RANK: int  # plan order: lower first (a project before its networks, a network before its forwards)
    SHAPE: tuple[str, str]  # `reconcile graph`: Graphviz node shape and fill colour
    REPLACE_FIELDS: tuple[str, ...]  # fields whose change means delete and create again
    ABSENT: str  # why a create, as the plan says it ("not in {daemon}": LXD or Incus; "not installed")

    def deletable(self, address: Address) -> bool:
        """Whether one that lab.yaml no longer has is deleted (a package is left installed)."""
        ...

    def apply(self, run: Runner, change: Change, action: Action) -> Any: ...

    def imported(self, raw: RawState, chosen: Chosen) -> dict[str, Any]:
        """`reconcile import`: the part of lab.yaml that declares this kind's objects for the chosen
        containers, as they are: {TABLE: {...}, "adopt": {TABLE: [...]}, "existing": {...}}.  An object no
        lab owns is declared and adopted; one another lab owns (or LXD's `default`) goes under existing:,
        never taken over.  {} when there is nothing to import."""
        ...


class ObjectKind(Kind_, Protocol):
    """An object of LXD's API, read one collection per kind (per parent object for a nested kind)."""

    COLLECTION: str  # the API path under /1.0 ("networks"), or under the parent's object ("forwards")
    PARENT: Kind | None  # a nested kind's parent (a forward's network, a volume's pool); names are PARENT/NAME
    SCOPE: Scope  # a nested kind is read where its parent is
    DEEP_READ: bool  # read with recursion=2 when plan wants live addresses (instances: their state)
    TABLE: str  # the lab.yaml table that declares them ("" when none: the project is `project:`)
    NOUN: str  # how messages call one ("storage pool")
    API_EXTENSION: str  # the API extension a lab with one needs (decided from api_extensions, never a version)
    LAB_TABLE: LabTable | None  # its own lab.yaml table, when TABLE is not one of the core's

    def desired(self, lab: Lab, wanted: Wanted) -> list[Resource]: ...

    def comparable(self, have: Resource, want: Resource | None) -> Resource:
        """The live object as lab.yaml's compares with it: without what LXD fills in itself unless lab.yaml
        sets it (a bridge's addresses), in lab.yaml's order where LXD keeps none (an ACL's rules)."""
        ...

    def parents(self, lab: Lab) -> set[str]:
        """A nested kind's parent objects that lab.yaml names (a forward's network); empty for a top-level kind."""
        ...

    def named_by_devices(self, devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
        """This kind's objects that a device map (a container's or a profile's) names, which it therefore
        depends on: a NIC's network and ACLs, a disk's volume or pool.  With `lab` (desired state) only those
        lab.yaml declares; without (live state) all of them.  () for a kind no device names."""
        ...

    def from_lxd(self, raw: Mapping[str, Any]) -> Resource | None:
        """LXD's JSON (a nested kind's with `parent` added: its parent's name) -> a Resource; None for an
        object no lab could own (a host interface LXD lists with the networks)."""
        ...


# Optional hooks an object kind may define (the registry calls those it has; default: nothing):
# - `problems(lab, declared) -> list[Found]`: pass 3 of lab.yaml, its cross-references (spec/references.py);
# - `needs_addresses(lab) -> bool`: whether plan must read the containers' live addresses for it;
# - `loses_data(change, action) -> bool` with `DATA_LOST`: a change that apply does only with --force.


class InsideKind(Kind_, Protocol):
    """A thing inside a container, read by the container's one facts exec."""


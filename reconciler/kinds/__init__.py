"""One module per kind of resource: how it is desired, read, compared, applied, ordered and drawn.

Each module keeps the contract of contracts.py: `ObjectKind` for an object of LXD's API,
`InsideKind` for a thing inside a container.  Adding a kind means a module here (which registers its
address word, `Kind.register`, and declares its lab.yaml table, `LAB_TABLE`) and a line below; every
layer iterates these tuples.  mypy checks each
module against its Protocol (the annotated tuples), and `_check` below fails at import for what
mypy cannot see.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..address import Kind
from ..plan import Action, Change
from ..state import OWNER_KEY
from . import (
    acl,
    file,
    forward,
    instance,
    network,
    package,
    profile,
    project,
    server,
    service,
    storage_pool,
    storage_volume,
)
from .contract import InsideKind, Kind_, ObjectKind, Scope

if TYPE_CHECKING:
    from ..spec import Lab
    from ..state import Resource

OBJECT_KINDS: tuple[ObjectKind, ...] = (project, acl, network, storage_pool, storage_volume, profile, instance,
                                         forward)
INSIDE_KINDS: tuple[InsideKind, ...] = (package, file, server, service)


def _check() -> dict[Kind, Kind_]:
    """Every Kind has exactly one module, every module its parts (lab.yaml's tables: `check_tables`)."""
    registry: dict[Kind, Kind_] = {}
    parts = ("KIND", "RANK", "SHAPE", "REPLACE_FIELDS", "ABSENT", "deletable", "apply", "imported")
    object_parts = parts + ("COLLECTION", "PARENT", "SCOPE", "TABLE", "LAB_TABLE", "NOUN", "API_EXTENSION", "DEEP_READ",
                            "desired", "from_lxd", "comparable", "parents", "named_by_devices")
    for module, needed in [(m, object_parts) for m in OBJECT_KINDS] + [(m, parts) for m in INSIDE_KINDS]:
        missing = [p for p in needed if not hasattr(module, p)]
        if missing:
            raise ImportError(f"kind module {module!r} lacks {', '.join(missing)}")
        if module.KIND in registry:
            raise ImportError(f"two kind modules for {module.KIND.value}")
        registry[module.KIND] = module
    unregistered = set(Kind.registered()) - set(registry)
    if unregistered:
        raise ImportError(f"no kind module for {', '.join(sorted(k.value for k in unregistered))}")
    for module in OBJECT_KINDS:
        if module.PARENT is not None and registry[module.PARENT] not in OBJECT_KINDS:
            raise ImportError(f"kind {module.KIND.value}: its parent {module.PARENT.value} is not an LXD object")
    if [m.KIND for m in OBJECT_KINDS if m.SCOPE == Scope.OWN] not in ([], [Kind.PROJECT]):
        raise ImportError("only the project is read on its own")
    return registry


def check_tables(tables: Collection[str]) -> None:
    """lab.yaml (`Lab`, built by spec from this registry: `tables` its fields) has each kind's table."""
    for module in OBJECT_KINDS:
        if module.TABLE and module.TABLE not in tables:
            raise ImportError(f"kind {module.KIND.value}: lab.yaml has no table {module.TABLE!r}")


REGISTRY: dict[Kind, Kind_] = _check()
_OBJECTS: dict[Kind, ObjectKind] = {m.KIND: m for m in OBJECT_KINDS}


def with_what_devices_name(res: Resource, lab: Lab | None) -> Resource:
    """`res` depending also on what its devices name (a container's or a profile's NICs and disks), as every
    kind says of its own objects (`named_by_devices`); `lab`: the desired state's, None for the live one."""
    devices = res.body.get("devices")
    if not isinstance(devices, Mapping) or not devices:
        return res
    named = tuple(a for kind in OBJECT_KINDS for a in kind.named_by_devices(devices, lab))
    return replace(res, depends_on=tuple(dict.fromkeys(res.depends_on + named)))


def needs_addresses(lab: Lab) -> bool:
    """Whether some kind's objects need the containers' live addresses to be planned (an optional hook,
    `needs_addresses(lab)`: a forward to a container by its live address); default: no."""
    return any(hook(lab) for hook in _hooks("needs_addresses"))


def data_lost(change: Change, action: Action) -> str | None:
    """What `action` of `change` loses, so that apply does it only with --force (an optional hook,
    `loses_data(change, action)` with the kind's `DATA_LOST`: a volume's data); None for most."""
    kind = REGISTRY[change.address.kind]
    hook = getattr(kind, "loses_data", None)
    return str(getattr(kind, "DATA_LOST", "it is lost")) if hook is not None and hook(change, action) else None


def data_losses(changes: Iterable[Change]) -> list[str]:
    """Why apply wants --force: every change the plan makes that loses data (a volume deleted or replaced)."""
    return [f"it {'replaces' if a == Action.REPLACE else 'deletes'} {c.address}: {lost}"
            for c in changes for a in c.actions if (lost := data_lost(c, a))]


def _hooks(name: str) -> list[Callable[..., Any]]:
    """An optional hook of every object kind that has it, in registry order."""
    return [getattr(m, name) for m in OBJECT_KINDS if hasattr(m, name)]


def rules(kind: Kind) -> Kind_:
    return REGISTRY[kind]


def object_kind(kind: Kind) -> ObjectKind:
    return _OBJECTS[kind]


def nested_reads(lab: Lab) -> Callable[[ObjectKind, Mapping[str, Any]], bool]:
    """Which parent objects plan reads a nested kind under: those the lab owns (destroy deletes what is in
    them first) and those lab.yaml names for it (what someone else made there is seen, never overwritten);
    not every network on the server, whose number is not the lab's."""
    def wanted(kind: ObjectKind, parent: Mapping[str, Any]) -> bool:
        return (parent.get("config") or {}).get(OWNER_KEY) == lab.lab or parent["name"] in kind.parents(lab)
    return wanted


def tables() -> tuple[str, ...]:
    """The lab.yaml tables that declare objects the lab owns (destroy empties them all)."""
    return tuple(m.TABLE for m in OBJECT_KINDS if m.TABLE)

"""Desired x live -> changes.  Pure.

An owned object's config and devices are exactly what lab.yaml says: keys added by hand are
drift.  Replace versus update is decided here, with its reason, and so is who moved: lab.yaml
since the last apply (your change), the live object (changed outside), or both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .address import Address, Kind
from .kinds import REGISTRY
from .kinds import instance as instance_kind
from .kinds import service as service_kind
from .plan import Action, Change, Code, FieldChange, Origin, Reason
from .source import field_path
from .state import LabState, Resource, digest


def diff_states(desired: LabState, live: LabState, daemon: str = "LXD") -> list[Change]:
    """Every change that takes `live` (owned by the lab) to `desired`; `daemon`: which one the reasons name
    ("not in Incus")."""
    changes: list[Change] = []
    for addr in sorted(desired.keys() | live.keys()):
        want, have = desired.get(addr), live.get(addr)
        if have is None and want is not None:
            changes.append(create(want, daemon))
        elif want is None and have is not None:
            if deletable(addr):
                changes.append(Change(addr, (Action.DELETE,), (Reason(Code.NOT_IN_LAB, "not in lab.yaml"),),
                                      have.body, None, origin=Origin.LAB, depends_on=have.depends_on))
        elif want is not None and have is not None and want.body != have.body:
            changes.extend(modify(want, have))
        elif want is not None and have is not None and addr.kind == Kind.INSTANCE:
            changes.extend(instance_kind.changes(want, have, (), origin_of(want, have)))  # what profiles bring
    return changes + service_kind.triggers(desired, changes)


def deletable(addr: Address) -> bool:
    """Whether what lab.yaml no longer has is deleted (its kind says)."""
    return REGISTRY[addr.kind].deletable(addr)


def create(want: Resource, daemon: str = "LXD") -> Change:
    why = REGISTRY[want.address.kind].ABSENT.format(daemon=daemon)
    return Change(want.address, (Action.CREATE,), (Reason(Code.ABSENT, why),),
                  None, want.body, origin=Origin.LAB, meta=want.meta, depends_on=want.depends_on)


def origin_of(want: Resource, have: Resource) -> Origin:
    """Who moved, from the digest recorded at the last apply."""
    if have.applied is None:
        return Origin.UNKNOWN
    if have.applied == digest(have.body):
        return Origin.LAB
    if have.applied == digest(want.body):
        return Origin.OUTSIDE
    return Origin.BOTH


def modify(want: Resource, have: Resource) -> list[Change]:
    fields = field_changes(have.body, want.body)
    origin = origin_of(want, have)
    kind = REGISTRY[want.address.kind]
    replaced = [f for f in kind.REPLACE_FIELDS if want.body.get(f) != have.body.get(f)]
    if replaced:
        why = ", ".join(f"{f} {have.body.get(f)!r} -> {want.body.get(f)!r}" for f in replaced)
        return [Change(want.address, (Action.REPLACE,), (Reason(Code.REPLACE, f"replace because {why}"),),
                       have.body, want.body, fields, origin, want.meta, want.depends_on)]
    if want.address.kind == Kind.INSTANCE:
        return instance_kind.changes(want, have, fields, origin)
    shown = [f.path for f in fields if not (f.path == "sha256" and any(g.path == "content" for g in fields))]
    return [Change(want.address, (Action.UPDATE,), (Reason(Code.DRIFT, "differs: " + ", ".join(shown)),),
                   have.body, want.body, fields, origin, want.meta, want.depends_on)]


# --- Field-level detail -------------------------------------------------------------------------

def field_changes(before: dict, after: dict) -> tuple[FieldChange, ...]:
    """Per-field old -> new; lists (profile order) are compared whole.  deepdiff finds the paths."""
    from deepdiff import DeepDiff  # imported only when something differs: a no-op plan stays fast

    tree = DeepDiff(before, after, view="tree", verbose_level=2)
    paths: set[tuple] = set()
    for level_changes in tree.values():
        for level in level_changes:
            paths.add(_whole_lists(level.path(output_format="list")))
    return tuple(FieldChange(field_path(p), _get(before, p), _get(after, p)) for p in sorted(paths, key=str))


def _whole_lists(path: list) -> tuple:
    for i, part in enumerate(path):
        if isinstance(part, int):
            return tuple(path[:i])
    return tuple(path)


def _get(data: Any, path: Iterable) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


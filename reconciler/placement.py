"""Where containers run in an LXD cluster: `target:` (a member, or @GROUP) honoured when a container is
created, and a container found on a member its target does not name moved there.

LXD 5.0 moves a container between members cold: stopped, copied, started again.  Members are read with
their status and groups in one GET (/1.0/cluster/members?recursion=1; each member lists its groups, so
`@GROUP` costs no second read), and only by labs that use `target:`.  A member takes containers only
while it is Online: an evacuated (or offline) one cannot start them, and LXD refuses to create one
there.  So, rather than failing:
- a container to create whose target has no member online is created where LXD places it, and moved
  by a plan after `lxc cluster restore`;
- a container found elsewhere while its target has no member online (LXD moved it away, evacuating)
  stays where it is; LXD brings back what it moved away when the member is restored;
- a container stopped on a member that cannot start it (LXD stopped it there, evacuating) is held:
  not started, and nothing inside it compared, until the member is restored (LXD starts it then).
Pure, but for `read`.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .address import Kind, instance
from .plan import Action, Change, Code, FieldChange, Origin, PlanError, Reason
from .source import field_path
from .state import LabState, Resource

if TYPE_CHECKING:
    from .lxd import Lxd
    from .spec import Lab

ONLINE = "Online"


@dataclass(frozen=True)
class Member:
    name: str
    status: str  # Online, Evacuated, Offline, ...
    groups: frozenset[str]

    @property
    def open(self) -> bool:
        """It can start containers, and LXD creates them there."""
        return self.status == ONLINE


@dataclass(frozen=True)
class Cluster:
    members: Mapping[str, Member]

    def named(self, target: str) -> list[str]:
        """The members a target names: itself, or every member of @GROUP."""
        if target.startswith("@"):
            return sorted(m.name for m in self.members.values() if target[1:] in m.groups)
        return [target] if target in self.members else []

    def open_for(self, target: str) -> list[str]:
        return [m for m in self.named(target) if self.members[m].open]

    def closed(self, target: str) -> str:
        """Why no member of `target` takes containers now, in words."""
        states = ", ".join(f"{m} is {self.members[m].status.lower()}" for m in self.named(target))
        return states if not target.startswith("@") else f"every member of {target} is away ({states})"


def cluster_from_raw(raw_members: Iterable[Mapping[str, Any]]) -> Cluster:
    return Cluster({m["server_name"]: Member(m["server_name"], m.get("status") or "", frozenset(m.get("groups") or ()))
                    for m in raw_members})


def uses_targets(lab: Lab) -> bool:
    return any(c.target for c in lab.containers.values())


def read(lxd: Lxd, lab: Lab) -> Cluster | None:
    """The cluster's members, when the lab places containers (one GET); None otherwise."""
    if not uses_targets(lab):
        return None
    from .errors import LxdError, LxdUnreachable
    try:
        cluster = cluster_from_raw(lxd.cluster_members())
    except LxdUnreachable:
        raise
    except LxdError as err:
        raise PlanError(f"lab.yaml places containers on cluster members (target:), but LXD at {lxd.where} cannot"
                        f" say which members it has: {err}") from None
    problems = target_problems(lab, cluster)
    if problems:
        raise PlanError("\n".join(problems))
    return cluster


def target_problems(lab: Lab, cluster: Cluster) -> list[str]:
    groups = sorted({g for m in cluster.members.values() for g in m.groups})
    out = []
    for cname, c in lab.containers.items():
        if not c.target or cluster.named(c.target):
            continue
        if c.target.startswith("@"):
            out.append(f"{field_path(('containers', cname, 'target'))}: no member of the cluster is in group {c.target[1:]!r}"
                       f"{_hint(c.target[1:], groups)} (groups: {', '.join(groups) or 'none'})")
        else:
            out.append(f"{field_path(('containers', cname, 'target'))}: no cluster member {c.target!r}"
                       f"{_hint(c.target, cluster.members)} (members: {', '.join(sorted(cluster.members))})")
    return out


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- deciding ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What placement means for one container with a target."""

    container: str
    target: str  # as lab.yaml writes it
    create_at: str | None  # the target a create or replace passes to LXD; None: where LXD places it
    location: str = ""  # where it is now ("" while it does not exist)
    running: bool = False  # it runs now
    move_to: str | None = None  # the member it moves to
    held: bool = False  # stopped on a member that cannot start it
    note: str = ""


def decide(lab: Lab, owned: LabState, cluster: Cluster | None) -> dict[str, Decision]:
    """Per container with a target: where to create it, whether to move it, or why it stays."""
    if cluster is None:
        return {}
    out = {}
    for cname, c in lab.containers.items():
        if not c.target:
            continue
        have = owned.get(instance(cname)) or (owned.get(instance(c.renamed_from)) if c.renamed_from else None)
        open_ = cluster.open_for(c.target)
        create_at = c.target if open_ else None
        if have is None:
            note = "" if open_ else (f"{cname} is created where LXD places it, since {cluster.closed(c.target)};"
                                     f" a plan after `lxc cluster restore` moves it to {c.target}")
            out[cname] = Decision(cname, c.target, create_at, note=note)
            continue
        location, running = have.meta.location, have.body["state"] == "running"
        if location in cluster.named(c.target):
            out[cname] = _in_place(cname, c.target, c.state == "running", running, location, cluster, create_at)
        elif not open_:
            out[cname] = Decision(cname, c.target, None, location, running, note=(
                f"{cname} is on {location}, lab.yaml says {c.target}, but {cluster.closed(c.target)}: it stays where"
                " it is until then (at `lxc cluster restore` LXD brings back what it moved away; plan moves the rest)"))
        else:
            to = c.target if not c.target.startswith("@") else _least_used(open_, owned)
            out[cname] = Decision(cname, c.target, create_at, location, running, move_to=to)
    return out


def _in_place(cname: str, target: str, wanted: bool, running: bool, location: str, cluster: Cluster,
              create_at: str | None) -> Decision:
    member = cluster.members[location]
    if member.open or not wanted or running:
        return Decision(cname, target, create_at, location, running)
    return Decision(cname, target, create_at, location, running, held=True, note=(
        f"{cname} is stopped on {location}, which is {member.status.lower()}: LXD starts it again when the member"
        f" is restored (lxc cluster restore {location}); until then apply does not start it, and what runs inside"
        " it is not checked"))


def _least_used(members: list[str], owned: LabState) -> str:
    """For @GROUP: the member of the group holding fewest of the lab's containers (then by name)."""
    used = Counter(r.meta.location for r in owned.values() if r.address.kind == Kind.INSTANCE)
    return min(members, key=lambda m: (used[m], m))


# --- into the plan -------------------------------------------------------------------------------

def restarting(decisions: Mapping[str, Decision]) -> set[str]:
    """Containers a move stops and starts: their address is known only after apply."""
    return {d.container for d in decisions.values() if d.move_to and d.running}


def held(decisions: Mapping[str, Decision]) -> set[str]:
    return {d.container for d in decisions.values() if d.held}


def notes(decisions: Mapping[str, Decision]) -> list[str]:
    return [d.note for _, d in sorted(decisions.items()) if d.note]


def placed(changes: list[Change], decisions: Mapping[str, Decision], desired: LabState, owned: LabState
           ) -> list[Change]:
    """The plan's LXD changes with placement: targets on creates, moves, no start for a held container,
    no separate restart for one a move restarts anyway."""
    out = []
    touched = {c.address: c for c in changes}
    for change in changes:
        decision = decisions.get(change.address.name) if change.address.kind == Kind.INSTANCE else None
        placed_change = _with_decision(change, decision) if decision is not None else change
        if placed_change is not None:
            out.append(placed_change)
    for cname, decision in sorted(decisions.items()):
        addr = instance(cname)
        made = touched.get(addr)
        if decision.move_to and not (made and {Action.CREATE, Action.REPLACE, Action.DELETE} & set(made.actions)):
            out.append(move(decision, desired[addr], owned[addr]))
    return out


def _with_decision(change: Change, decision: Decision) -> Change | None:
    if {Action.CREATE, Action.REPLACE} & set(change.actions):
        return replace(change, meta=change.meta.with_payload(target=decision.create_at))
    drop = set()
    if decision.held:
        drop.add(Action.START)
    if decision.move_to and decision.running:
        drop.add(Action.RESTART)  # the move starts it again with what it is to start with
    kept = [(a, r) for a, r in zip(change.actions, change.reasons) if a not in drop]
    if not kept:
        return None
    return replace(change, actions=tuple(a for a, _ in kept), reasons=tuple(r for _, r in kept))


def move(decision: Decision, want: Resource, have: Resource) -> Change:
    where = f"{decision.target} ({decision.move_to})" if decision.target != decision.move_to else decision.target
    recorded = have.meta.placed
    origin = Origin.UNKNOWN if not recorded else Origin.OUTSIDE if recorded == decision.target else Origin.LAB
    return Change(want.address, (Action.MOVE,), (Reason(Code.PLACEMENT, f"on {decision.location}, lab.yaml says {where}"),),
                  have.body, want.body, (FieldChange("location", decision.location, decision.move_to),), origin,
                  want.meta.with_payload(member=decision.move_to, target=decision.target), want.depends_on)


"""The plan as a value: actions, reasons, changes, the step graph, order and fingerprint.  Pure.

A plan is plain data: it serialises to JSON and back (`plan -o FILE`, `apply FILE`).  Each change
is one address with the actions taken on it, in order; the graph links steps (an address and an
action), so apply can run independent steps at once and a failed one stops only its dependants.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from graphlib import CycleError, TopologicalSorter
from typing import Any

from .address import Address, Kind
from .daemon import Daemon
from .haproxy.runtime import ADD, ADDR, DEL, RUNTIME_FIELDS
from .state import Meta

Body = dict[str, Any]
SECRET = "(secret)"
SECRET_CHANGED = "(secret changed)"
FORMAT_VERSION = 3  # 3: meta's typed fields (prev_address, was renamed_from)


class Action(Enum):
    DELETE = ("delete", "-", "will be deleted")
    ADOPT = ("adopt", "=", "will be adopted (tagged as this lab's, nothing else changes)")
    RENAME = ("rename", "->", "will be renamed")
    REPLACE = ("replace", "-/+", "will be replaced")
    CREATE = ("create", "+", "will be created")
    UPDATE = ("update", "~", "will be updated in place")
    STOP = ("stop", "<", "will be stopped")
    MOVE = ("move", ">>", "will be moved to another cluster member")
    START = ("start", ">", "will be started")
    RESTART = ("restart", "<>", "will be restarted")
    RELOAD = ("reload", "~>", "will be reloaded")
    CONVERGE = ("converge", "?", "will be read and converged once it can be seen")

    def __init__(self, word: str, symbol: str, phrase: str):
        self.word, self.symbol, self.phrase = word, symbol, phrase

    @classmethod
    def of(cls, word: str) -> Action:
        for action in cls:
            if action.word == word:
                return action
        raise ValueError(f"unknown action {word!r}")

    @property
    def rank(self) -> int:
        """Within one address, steps run in this order (the enum's)."""
        return list(Action).index(self)


class Origin(Enum):
    """Who moved: lab.yaml since the last apply, the live object, or both."""

    LAB = "lab.yaml"  # your change: lab.yaml differs from what was last applied
    OUTSIDE = "outside"  # changed outside: the live object moved away from what was applied
    BOTH = "both"
    UNKNOWN = "unknown"  # nothing recorded (made by an older version), or not seen

    @property
    def phrase(self) -> str:
        return {Origin.LAB: "your change", Origin.OUTSIDE: "changed outside lab.yaml",
                Origin.BOTH: "lab.yaml changed and the live object moved", Origin.UNKNOWN: ""}[self]


class Code(StrEnum):
    """Why a step is planned, for programs: the `code` of a reason in `plan --json`."""

    ABSENT = "absent"  # lab.yaml declares it, LXD (or the container) has none
    ADOPT = "adopt"  # lab.yaml adopts an object that belongs to no lab
    DESTROY = "destroy"  # `reconcile destroy`
    DRIFT = "drift"  # the live object differs from lab.yaml
    NEW_CONTAINER = "new-container"  # inside a container that does not exist yet
    NOT_IN_LAB = "not-in-lab"  # the lab's, and gone from lab.yaml
    NOT_LISTENING = "not-listening"  # a running container's proxy device, with nobody listening on the host
    PLACEMENT = "placement"  # on another cluster member than lab.yaml says
    RENAMED = "renamed"  # lab.yaml renamed it
    REPLACE = "replace"  # a field that only a new object can change
    RESTART_PENDING = "restart-pending"  # settings applied earlier wait for a restart
    RESTART_SETTINGS = "restart-settings"  # settings that take effect only after a restart
    STATE = "state"  # running or stopped, not as lab.yaml says
    UNSEEN = "unseen"  # inside a container that cannot be read now
    WATCHED_FILE = "watched-file"  # a file a service watches changed

    @classmethod
    def of(cls, text: str) -> Code:
        """A code read back from a saved plan; an unknown one is a ValueError naming the known ones."""
        try:
            return cls(text)
        except ValueError:
            known = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown reason code {text!r} (known: {known})") from None


@dataclass(frozen=True)
class Reason:
    """Why a step is planned, for people (`text`) and programs (`code`)."""

    code: Code
    text: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code.value, "text": self.text}


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Step:
    """One action on one address: the unit apply runs."""

    address: Address
    action: Action

    def __str__(self) -> str:
        return f"{self.address}#{self.action.word}"

    @classmethod
    def parse(cls, text: str) -> Step:
        addr, _, word = text.rpartition("#")
        return cls(Address.parse(addr), Action.of(word))

    def sort_key(self) -> tuple:
        return self.address.sort_key() + (self.action.rank,)


@dataclass(frozen=True)
class Change:
    """Everything planned for one address."""

    address: Address
    actions: tuple[Action, ...]
    reasons: tuple[Reason, ...]  # one per action
    before: Body | None
    after: Body | None
    diff: tuple[FieldChange, ...] = ()
    origin: Origin = Origin.LAB
    meta: Meta = field(default_factory=Meta)
    depends_on: tuple[Address, ...] = ()  # what must be done first (desired edges; deletes: live users)

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(Step(self.address, a) for a in self.actions)

    @property
    def secret(self) -> bool:
        return self.meta.secret

    def reason_for(self, action: Action) -> Reason:
        return self.reasons[self.actions.index(action)]

    def merged(self, other: Change) -> Change:
        """Two changes to one address as one: actions in step order, bodies from the first that has them."""
        pairs = sorted(set(zip(self.actions, self.reasons)) | set(zip(other.actions, other.reasons)),
                       key=lambda p: p[0].rank)
        return replace(self, actions=tuple(a for a, _ in pairs), reasons=tuple(r for _, r in pairs),
                       before=self.before if self.before is not None else other.before,
                       after=self.after if self.after is not None else other.after,
                       diff=self.diff + tuple(f for f in other.diff if f not in self.diff),
                       meta=self.meta.merged(other.meta),
                       depends_on=tuple(dict.fromkeys(self.depends_on + other.depends_on)))

    # --- as data ----------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        """Plain data; a secret's content and digest never appear."""
        return {"address": str(self.address), "actions": [a.word for a in self.actions],
                "reasons": [r.as_json() for r in self.reasons], "origin": self.origin.value,
                "before": redact(self.before, self.secret), "after": redact(self.after, self.secret),
                "diff": [{"path": f.path, "before": _redact_value(f, "before", self.secret),
                          "after": _redact_value(f, "after", self.secret)} for f in self.diff],
                "meta": self.meta.as_json(), "depends_on": [str(a) for a in self.depends_on]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(Address.parse(data["address"]), tuple(Action.of(a) for a in data["actions"]),
                   tuple(Reason(Code.of(r["code"]), r["text"]) for r in data["reasons"]), data["before"], data["after"],
                   tuple(FieldChange(d["path"], d["before"], d["after"]) for d in data["diff"]),
                   Origin(data["origin"]), Meta.from_json(data.get("meta") or {}),
                   tuple(Address.parse(a) for a in data.get("depends_on") or ()))


def redact(body: Body | None, secret: bool) -> Body | None:
    """A body as it may be shown: a secret file's content and digest replaced by a marker."""
    if body is None or not secret:
        return body
    return {k: (SECRET if k in ("sha256", "content") and v is not None else v) for k, v in body.items()}


def _redact_value(change: FieldChange, side: str, secret: bool) -> Any:
    if secret and change.path in ("sha256", "content"):
        return SECRET_CHANGED if side == "after" else SECRET
    return getattr(change, side)


class PlanError(Exception):
    """The plan cannot be made: a conflict with LXD's state, a missing image, a dependency cycle."""


@dataclass(frozen=True)
class Drain:
    """An HAProxy server a step takes away: drained through the admin socket of `proxy` (the container
    running HAProxy) before the step, and put back (`then`) after it."""

    proxy: str
    socket: str
    backend: str
    server: str
    port: int
    checked: bool  # the backend has health checks: apply waits for one to pass
    drain_seconds: float  # how long apply waits for the server's sessions to end
    ready_seconds: float  # how long the server has to pass its health check again
    then: str = "ready"  # after the step: "ready" once healthy (waited for), "checks" (set ready, its health
    # checks bring it in: a replaced container is provisioned later), "away" (a stop leaves it drained)

    def __str__(self) -> str:
        return f"{self.backend}/{self.server}"

    def as_json(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "socket": self.socket, "backend": self.backend, "server": self.server,
                "port": self.port, "checked": self.checked, "drain_seconds": self.drain_seconds,
                "ready_seconds": self.ready_seconds, "then": self.then}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Drain:
        return cls(str(data["proxy"]), str(data["socket"]), str(data["backend"]), str(data["server"]),
                   int(data["port"]), bool(data["checked"]), float(data["drain_seconds"]),
                   float(data["ready_seconds"]), _then(data.get("then", "ready")))


@dataclass(frozen=True)
class RuntimeSet:
    """A server setting made live through HAProxy's runtime API instead of a reload."""

    proxy: str
    socket: str
    backend: str
    server: str
    field: str  # weight, maxconn, addr (the address of `container`, known only once apply has it), add or del
    value: int  # for addr and add, the port; for del, the drain's bounded wait in seconds
    container: str = ""  # for addr and add: the container whose address the server gets

    def __str__(self) -> str:
        if self.field == ADDR:
            return f"{self.backend}/{self.server} addr {self.container}'s new address port {self.value}"
        if self.field == ADD:
            return f"{self.backend}/{self.server} added ({self.container} port {self.value})"
        if self.field == DEL:
            return f"{self.backend}/{self.server} removed (drained first, at most {self.value}s)"
        return f"{self.backend}/{self.server} {self.field} {self.value}"

    def as_json(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "socket": self.socket, "backend": self.backend, "server": self.server,
                "field": self.field, "value": self.value} | ({"container": self.container} if self.container else {})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RuntimeSet:
        if data["field"] not in RUNTIME_SET_FIELDS:
            raise ValueError(f"a runtime setting's field is {data['field']!r}, not one of {', '.join(RUNTIME_SET_FIELDS)}")
        return cls(str(data["proxy"]), str(data["socket"]), str(data["backend"]), str(data["server"]),
                   str(data["field"]), int(data["value"]), str(data.get("container", "")))


RUNTIME_SET_FIELDS = (*RUNTIME_FIELDS, ADDR, ADD, DEL)


THEN = ("ready", "checks", "away")


def _then(value: Any) -> str:
    if value not in THEN:
        raise ValueError(f"a drain's `then` is {value!r}, not one of {', '.join(THEN)}")
    return str(value)


class Cost(StrEnum):
    """What a change costs the traffic through the lab, least first."""

    LIVE = "live"  # no effect on traffic
    RUNTIME = "runtime"  # HAProxy's runtime API, no reload
    RELOAD = "reload"  # an HAProxy (or other service) reload: hitless
    RESTART = "restart"  # a container or service restarts (drained first when it backs HAProxy servers)
    RECREATE = "recreate"  # a container is replaced or deleted

    @property
    def rank(self) -> int:
        return list(Cost).index(self)


_COST_OF = {(Kind.INSTANCE, Action.REPLACE): Cost.RECREATE, (Kind.INSTANCE, Action.DELETE): Cost.RECREATE,
            (Kind.INSTANCE, Action.RESTART): Cost.RESTART, (Kind.INSTANCE, Action.STOP): Cost.RESTART,
            (Kind.INSTANCE, Action.MOVE): Cost.RESTART, (Kind.INSTANCE, Action.RENAME): Cost.RESTART,
            (Kind.SERVICE, Action.RESTART): Cost.RESTART, (Kind.SERVICE, Action.STOP): Cost.RESTART,
            (Kind.SERVICE, Action.RELOAD): Cost.RELOAD, (Kind.SERVER, Action.UPDATE): Cost.RUNTIME}


def action_cost(kind: Kind, action: Action) -> Cost:
    return _COST_OF.get((kind, action), Cost.LIVE)


MIN_OBJECTS = 4  # below this many objects, any share of them is few
DESTRUCTIVE = frozenset({Action.DELETE, Action.REPLACE})


@dataclass(frozen=True)
class Plan:
    lab: str
    changes: tuple[Change, ...]  # by address
    graph: Mapping[Step, frozenset[Step]]  # step -> the steps it waits for
    notes: tuple[str, ...] = ()  # what plan could not see, and why
    objects: int = 0  # LXD objects the lab owned when planned: the base of the safety share
    frontends: tuple[str, ...] = ()  # containers that serve a frontend (HAProxy's)
    unchanged: int = 0  # addresses lab.yaml declares that need nothing done
    drains: Mapping[Step, tuple[Drain, ...]] = field(default_factory=dict)  # HAProxy servers a step takes away
    warnings: tuple[str, ...] = ()  # what the plan will do that costs requests
    runtime: Mapping[Step, tuple[RuntimeSet, ...]] = field(default_factory=dict)  # haproxy.cfg's, instead of a reload

    def cost(self, change: Change) -> Cost:
        """The costliest of its actions; a file's is that of the service reload or restart it triggers."""
        costs = [action_cost(change.address.kind, a) for a in change.actions]
        costs += [Cost.RUNTIME for s in change.steps if s in self.runtime]
        if change.address.kind == Kind.FILE:
            costs += [self.cost(c) for c in self.changes if c.address.kind == Kind.SERVICE
                      and c.address.name == change.address.name and change.address in c.depends_on
                      and any(r.code == Code.WATCHED_FILE for r in c.reasons)]
        return max(costs, key=lambda c: c.rank, default=Cost.LIVE)
    daemon: Daemon | None = None  # what it was planned against (LXD or Incus, and its version)

    def unsafe(self, share: float = 0.3) -> list[str]:
        """Why this plan should not run without --force: it deletes or replaces more than `share` of
        the lab's objects, or replaces or deletes a container that serves a frontend."""
        destructive = [c for c in self.changes if not c.address.kind.inside and DESTRUCTIVE & set(c.actions)]
        out = []
        if self.objects >= MIN_OBJECTS and len(destructive) > share * self.objects:
            out.append(f"it deletes or replaces {len(destructive)} of the lab's {self.objects} objects"
                       f" ({len(destructive) / self.objects:.0%}, over {share:.0%})")
        out += [f"it {'replaces' if Action.REPLACE in c.actions else 'deletes'} {c.address}, which serves a frontend"
                for c in destructive if c.address.kind == Kind.INSTANCE and c.address.name in self.frontends]
        return out

    def restarted_by_moves(self) -> list[str]:
        """Running containers a move stops and starts again (LXD 5.0 moves a container between members cold)."""
        return [c.address.name for c in self.changes if Action.MOVE in c.actions
                and (c.before or {}).get("state") == "running" and (c.after or {}).get("state") == "running"]

    def targeted(self, targets: Iterable[Address], known: Collection[Address]) -> Plan:
        """Only the changes to `targets` (a container's with what runs inside it) and what they wait for.
        A target that is not among `known` (what lab.yaml declares and what the lab has in LXD) is a
        ValueError naming the addresses closest to it: a typo must not read as "No changes"."""
        wanted = set(targets)
        missing = [no_such_address(t, known) for t in sorted(wanted) if t not in known]
        if missing:
            raise ValueError("; ".join(missing))
        keep = {s for s in self.graph if s.address in wanted or s.address.kind.inside and s.address.instance in wanted}
        todo = list(keep)
        while todo:
            for dep in self.graph[todo.pop()]:
                if dep not in keep:
                    keep.add(dep)
                    todo.append(dep)
        changes = []
        for change in self.changes:
            actions = [(a, r) for a, r in zip(change.actions, change.reasons) if Step(change.address, a) in keep]
            if actions:
                changes.append(replace(change, actions=tuple(a for a, _ in actions), reasons=tuple(r for _, r in actions)))
        graph = {s: waits & keep for s, waits in self.graph.items() if s in keep}
        drains = {s: d for s, d in self.drains.items() if s in keep}
        runtime = {s: r for s, r in self.runtime.items() if s in keep}
        note = (f"targeted plan: only {', '.join(sorted(str(t) for t in wanted))} and what they depend on; the rest of"
                " the lab is not compared")
        return replace(self, changes=tuple(changes), graph=graph, notes=self.notes + (note,), unchanged=0,
                       drains=drains, runtime=runtime)

    @property
    def empty(self) -> bool:
        return not self.changes

    def steps(self) -> dict[Step, Change]:
        return {step: change for change in self.changes for step in change.steps}

    def change_at(self, address: Address) -> Change | None:
        return next((c for c in self.changes if c.address == address), None)

    def summary(self) -> dict[str, int]:
        counts = {a.word: 0 for a in Action}
        for change in self.changes:
            for action in change.actions:
                counts[action.word] += 1
        return counts

    def order(self, shuffle: random.Random | None = None) -> list[Step]:
        """A valid execution order: among ready steps by address (or shuffled, to prove the graph)."""
        sorter = TopologicalSorter(self.graph)
        sorter.prepare()
        out: list[Step] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=Step.sort_key)
            if shuffle:
                shuffle.shuffle(ready)
            out.extend(ready)
            sorter.done(*ready)
        return out

    def as_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "lab": self.lab, "fingerprint": self.fingerprint(),
                "changes": [{**c.as_json(), "cost": self.cost(c).value} for c in self.changes],
                "summary": self.summary(), "notes": list(self.notes), "warnings": list(self.warnings),
                "objects": self.objects, "frontends": list(self.frontends), "unchanged": self.unchanged,
                "drains": {str(s): [d.as_json() for d in drains] for s, drains in sorted(
                    self.drains.items(), key=lambda kv: kv[0].sort_key())},
                "runtime": {str(s): [r.as_json() for r in sets] for s, sets in sorted(
                    self.runtime.items(), key=lambda kv: kv[0].sort_key())},
                "daemon": self.daemon.as_json() if self.daemon else None,
                "graph": {str(s): sorted(str(w) for w in waits) for s, waits in sorted(
                    self.graph.items(), key=lambda kv: kv[0].sort_key())}}

    def fingerprint(self) -> str:
        """A digest of what the plan does (secrets redacted): a reviewed plan can be applied exactly."""
        drains = {str(s): [d.as_json() for d in ds] for s, ds in self.drains.items()}
        runtime = {str(s): [r.as_json() for r in rs] for s, rs in self.runtime.items()}
        text = json.dumps([c.as_json() for c in self.changes] + ([drains] if drains else [])
                          + ([runtime] if runtime else []), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_from_json(data: Mapping[str, Any]) -> Plan:
    """The inverse of Plan.as_json (the graph is rebuilt from the changes, then must match)."""
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"plan format_version {data.get('format_version')!r}; this reconcile reads format_version"
                         f" {FORMAT_VERSION}: make the plan again")
    changes = tuple(Change.from_json(c) for c in data["changes"])
    graph = {Step.parse(s): frozenset(Step.parse(w) for w in waits) for s, waits in data["graph"].items()}
    drains = {Step.parse(s): tuple(Drain.from_json(d) for d in ds) for s, ds in (data.get("drains") or {}).items()}
    runtime = {Step.parse(s): tuple(RuntimeSet.from_json(r) for r in rs)
               for s, rs in (data.get("runtime") or {}).items()}
    return Plan(data["lab"], changes, graph, tuple(data.get("notes") or ()), int(data.get("objects") or 0),
                tuple(data.get("frontends") or ()), int(data.get("unchanged") or 0), drains,
                tuple(data.get("warnings") or ()), runtime,
                Daemon.from_json(data["daemon"]) if data.get("daemon") else None)


MAX_LISTED = 12


def no_such_address(target: Address, known: Collection[Address]) -> str:
    """`target` is nowhere: the closest addresses, or (none close) the lab's LXD objects."""
    names = [str(a) for a in sorted(known)]
    close = difflib.get_close_matches(str(target), names, n=3, cutoff=0.8)
    if close:
        hint = f"did you mean {' or '.join(sorted(close))}?"
    else:
        listed = [str(a) for a in sorted(known) if not a.kind.inside] or names
        more = f" and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
        hint = f"the lab's addresses: {', '.join(listed[:MAX_LISTED])}{more}" if listed else "the lab has no addresses"
    return f"{target} is neither in lab.yaml nor one of the lab's objects in LXD; {hint}"


# --- the graph ------------------------------------------------------------------------------

def make_plan(lab: str, changes: Iterable[Change], live_users: Mapping[Address, set[Address]],
              notes: Iterable[str] = (), objects: int = 0, frontends: Iterable[str] = ()) -> Plan:
    """Changes merged per address, sorted, and linked into a step graph; a cycle is an error.

    `live_users[a]` are the live addresses that use `a` (instances of a profile, ...): deletes
    follow the live graph reversed."""
    by_address: dict[Address, Change] = {}
    for change in changes:
        known = by_address.get(change.address)
        by_address[change.address] = known.merged(change) if known else change
    ordered = tuple(sorted(by_address.values(), key=lambda c: c.address.sort_key()))
    graph = build_graph(ordered, live_users)
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise PlanError(f"dependency cycle: {' -> '.join(str(s) for s in err.args[1])}") from None
    return Plan(lab, ordered, graph, tuple(notes), objects, tuple(sorted(frontends)))


def build_graph(changes: Iterable[Change], live_users: Mapping[Address, set[Address]]) -> dict[Step, frozenset[Step]]:
    """Every step waits for: earlier steps at its address; all steps of what it depends on (deletes:
    of the live objects still using it); the steps of live objects that use it and will not any more;
    and, inside a container, every step on that container."""
    changes = list(changes)
    steps_at: dict[Address, list[Step]] = {c.address: list(c.steps) for c in changes}
    depends = {c.address: c.depends_on for c in changes if Action.DELETE not in c.actions}  # what stays desired
    graph: dict[Step, frozenset[Step]] = {}
    for change in changes:
        for step in change.steps:
            waits = {s for s in steps_at[change.address] if s.action.rank < step.action.rank}
            if step.action == Action.DELETE:
                waits |= {s for user in live_users.get(change.address, ()) for s in steps_at.get(user, ())
                          if s.action in (Action.DELETE, Action.UPDATE, Action.REPLACE, Action.RENAME)}
            else:
                waits |= {s for dep in change.depends_on for s in steps_at.get(dep, ())
                          if s.action != Action.DELETE}
                # A profile or network change reaches every live user at once; one that lets go of it
                # (deleted, or updated not to use it) goes first, not at the same time.
                waits |= {s for user in live_users.get(change.address, ()) for s in steps_at.get(user, ())
                          if change.address not in depends.get(user, ())}
            if change.address.kind.inside:
                waits |= set(steps_at.get(change.address.instance, ()))
            graph[step] = frozenset(waits - {step})
    return graph


def kinds_in(plan: Plan) -> set[Kind]:
    return {c.address.kind for c in plan.changes}

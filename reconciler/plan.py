"""The plan as a value: Action, Change, Plan, its order, dependency graph and fingerprint.  Pure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from graphlib import CycleError, TopologicalSorter
from typing import Any

from .state import sort_key


class Action(Enum):
    CREATE = ("create", "+", "will be created")
    UPDATE = ("update", "~", "will be updated in place")
    REPLACE = ("replace", "-/+", "will be replaced")
    DELETE = ("delete", "-", "will be deleted")
    START = ("start", ">", "will be started")
    STOP = ("stop", "<", "will be stopped")
    RESTART = ("restart", "<>", "will be restarted")
    RELOAD = ("reload", "~>", "will be reloaded")

    def __init__(self, word: str, symbol: str, phrase: str):
        self.word, self.symbol, self.phrase = word, symbol, phrase


# Within one address, the order steps must run in.
STEP_ORDER = [Action.DELETE, Action.REPLACE, Action.CREATE, Action.UPDATE, Action.STOP, Action.START,
              Action.RESTART, Action.RELOAD]


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    action: Action
    address: str
    before: dict | None
    after: dict | None
    diff: tuple[FieldChange, ...] = ()
    reason: str = ""
    depends_on: tuple[str, ...] = field(default=(), compare=False)  # addresses, from desired or live

    @property
    def id(self) -> str:
        return f"{self.address}#{self.action.word}"

    def as_json(self) -> dict:
        return {"address": self.address, "action": self.action.word, "before": self.before,
                "after": self.after, "reason": self.reason,
                "diff": [{"path": f.path, "before": f.before, "after": f.after} for f in self.diff]}


class PlanError(Exception):
    """The plan cannot be made: a conflict with LXD's state, or a dependency cycle."""


@dataclass(frozen=True)
class Plan:
    lab: str
    changes: tuple[Change, ...]  # in a valid execution order
    graph: dict[str, frozenset[str]]  # change id -> ids it waits for

    @property
    def empty(self) -> bool:
        return not self.changes

    def summary(self) -> dict[str, int]:
        counts = {a.word: 0 for a in Action}
        for change in self.changes:
            counts[change.action.word] += 1
        return counts

    def as_json(self) -> dict:
        return {"format_version": 1, "lab": self.lab, "fingerprint": self.fingerprint(),
                "changes": [c.as_json() for c in self.changes], "summary": self.summary()}

    def fingerprint(self) -> str:
        text = json.dumps([c.as_json() for c in self.changes], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def by_id(self) -> dict[str, Change]:
        return {c.id: c for c in self.changes}


def make_plan(lab: str, changes: list[Change], live_users: dict[str, set[str]]) -> Plan:
    """Order changes by their dependencies; `live_users[a]` = live addresses that use a."""
    by_id = {c.id: c for c in changes}
    graph = {c.id: frozenset(_waits_for(c, changes, live_users)) for c in changes}
    try:
        order = _ordered(graph)
    except CycleError as err:
        raise PlanError(f"dependency cycle: {' -> '.join(err.args[1])}") from None
    return Plan(lab, tuple(by_id[i] for i in order), graph)


def _waits_for(change: Change, changes: list[Change], live_users: dict[str, set[str]]) -> set[str]:
    """Ids of the changes that must finish before this one."""
    waits = set()
    for other in changes:
        if other is change:
            continue
        if other.address == change.address:
            if STEP_ORDER.index(other.action) < STEP_ORDER.index(change.action):
                waits.add(other.id)
        elif change.action == Action.DELETE:
            # Deletes go in reverse: whatever still uses this object must let go of it first, and
            # networks, created before every instance, go after every instance.
            users = live_users.get(change.address, set())
            if (other.address in users and other.action in (Action.DELETE, Action.UPDATE, Action.REPLACE)) or (
                    change.address.startswith("network.") and other.address.startswith("instance.")
                    and other.action == Action.DELETE):
                waits.add(other.id)
        elif other.address in change.depends_on:
            waits.add(other.id)
    return waits


def _ordered(graph: dict[str, frozenset[str]]) -> list[str]:
    """A deterministic topological order: among ready steps, by kind then name."""
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=_id_key)
        order.extend(ready)
        sorter.done(*ready)
    return order


def _id_key(change_id: str) -> tuple:
    addr, _, action = change_id.partition("#")
    return sort_key(addr) + (action,)
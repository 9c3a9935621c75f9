"""Checkpoints: the whole lab at one point, kept in LXD, and rollback to it.

A checkpoint is a stateless snapshot `rc-NAME` of every container the lab owns, plus a record: a
profile `reconciler-checkpoint-LAB.NAME` (lab names have no '.', so no two labs' records share a
name; lab.yaml may not declare profiles with that prefix), kept where the lab's lock is (the lab's
project, or the default one when the lab owns its project). Its `user.reconciler.checkpoint*` keys
hold the lab's name (the tag), when, the digest of lab.yaml and the plan's fingerprint, and, as
zlib-compressed JSON in base64, the writable configuration of every network, profile and ACL the
lab owns, each container's state, and lab.yaml as validated (secrets left out, as a saved plan's
digest leaves them). Any checkout that reaches the daemon reads it: nothing is on the local disk.
The record is not the lab's (no `user.reconciler.lab`), so plan never deletes it.

The record is written first, marked incomplete, then the snapshots are taken: a snapshot named
`rc-NAME` with no record of NAME is someone else's and is refused, never replaced; one of an
incomplete record (a killed run) is taken again.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .address import Kind
from .errors import LxdNotFound
from .live import live_from_raw
from .plan import Action, Plan
from .spec import CHECKPOINT_PREFIX

if TYPE_CHECKING:
    from .lxd import Lxd

PREFIX = CHECKPOINT_PREFIX  # lab.yaml cannot declare profiles with such names
SNAPSHOT_PREFIX = "rc-"
TAG = "user.reconciler.checkpoint"  # the lab the record belongs to
NAME_KEY, CREATED_KEY, DIGEST_KEY, FINGERPRINT_KEY, AUTO_KEY, COMPLETE_KEY, DATA_KEY = (
    f"{TAG}.{k}" for k in ("name", "created", "lab-digest", "fingerprint", "auto", "complete", "data"))
NAME = r"[a-z0-9][a-z0-9-]{0,39}"
PARALLEL = 4  # containers snapshotted or restored at once, as apply's default parallelism
MAX_DATA = 256 * 1024  # encoded bytes of one record: every plan's GET of the profiles carries it
# What rollback puts back of each object kind (what LXD's PUT takes), in dependency order.
WRITABLE: dict[Kind, tuple[str, ...]] = {
    Kind.ACL: ("description", "ingress", "egress", "config"),
    Kind.NETWORK: ("description", "config"),
    Kind.PROFILE: ("description", "config", "devices"),
}


class CheckpointError(Exception):
    """A checkpoint cannot be taken, found, deleted or rolled back to; the message says why."""


def check_name(name: str) -> str:
    if not re.fullmatch(NAME, name):
        raise CheckpointError(f"{name!r} is not a checkpoint name: 1 to 40 lowercase letters, digits and '-',"
                              " starting with a letter or digit")
    return name


def record_name(lab: str, name: str) -> str:
    return f"{PREFIX}{lab}.{name}"


def snapshot_name(name: str) -> str:
    return SNAPSHOT_PREFIX + name


def auto_name(fingerprint: str) -> str:
    return f"auto-{fingerprint[:12]}"


@dataclass
class Checkpoint:
    name: str
    lab: str
    created: str
    lab_digest: str
    fingerprint: str
    auto: bool
    complete: bool
    instances: dict[str, str] = field(default_factory=dict)  # container -> "running" | "stopped"
    objects: dict[str, dict[str, dict]] = field(default_factory=dict)  # kind -> name -> writable body
    lab_model: Any = None  # lab.yaml as validated, secrets left out

    def holds(self) -> str:
        counts = [f"{len(self.instances)} container{'s' * (len(self.instances) != 1)}"]
        counts += [f"{len(v)} {k}{'s' * (len(v) != 1)}" for k, v in self.objects.items() if v]
        return ", ".join(counts)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created, "lab_digest": self.lab_digest,
                "fingerprint": self.fingerprint, "auto": self.auto, "complete": self.complete,
                "containers": {c: {"state": s, "snapshot": snapshot_name(self.name)}
                               for c, s in sorted(self.instances.items())},
                "objects": {k: sorted(v) for k, v in self.objects.items()}}

    def config(self) -> dict[str, str]:
        data = {"instances": self.instances, "objects": self.objects, "lab": self.lab_model}
        encoded = base64.b64encode(zlib.compress(json.dumps(data, sort_keys=True).encode(), 9)).decode()
        if len(encoded) > MAX_DATA:
            raise CheckpointError(f"checkpoint {self.name!r}: its record would be {len(encoded)} bytes, over the"
                                  f" {MAX_DATA} kept in one LXD profile key")
        return {TAG: self.lab, NAME_KEY: self.name, CREATED_KEY: self.created, DIGEST_KEY: self.lab_digest,
                FINGERPRINT_KEY: self.fingerprint, AUTO_KEY: str(self.auto).lower(),
                COMPLETE_KEY: str(self.complete).lower(), DATA_KEY: encoded}

    @classmethod
    def of(cls, config: dict[str, str]) -> Checkpoint:
        try:
            data = json.loads(zlib.decompress(base64.b64decode(config.get(DATA_KEY) or "")) or b"{}")
        except (ValueError, zlib.error):
            data = {}
        return cls(config.get(NAME_KEY, "?"), config.get(TAG, "?"), config.get(CREATED_KEY, "?"),
                   config.get(DIGEST_KEY, ""), config.get(FINGERPRINT_KEY, ""), config.get(AUTO_KEY) == "true",
                   config.get(COMPLETE_KEY) == "true", data.get("instances") or {}, data.get("objects") or {},
                   data.get("lab"))


# --- reading ----------------------------------------------------------------------------------------

def listed(place: Lxd, lab: str) -> list[Checkpoint]:
    """The lab's checkpoints, oldest first (one GET of the profiles where its lock lives)."""
    found = [Checkpoint.of(p.get("config") or {}) for p in place.listing("profile")
             if p["name"].startswith(f"{PREFIX}{lab}.") and (p.get("config") or {}).get(TAG) == lab]
    return sorted(found, key=lambda c: (c.created, c.name))


def find(place: Lxd, lab: str, name: str) -> Checkpoint:
    try:
        raw, _ = place.get("profile", record_name(lab, check_name(name)))
    except LxdNotFound:
        known = ", ".join(c.name for c in listed(place, lab)) or "none"
        raise CheckpointError(f"lab {lab!r} has no checkpoint {name!r} (its checkpoints: {known})") from None
    config = raw.get("config") or {}
    if config.get(TAG) != lab:
        raise CheckpointError(f"profile {record_name(lab, name)} is not a checkpoint of lab {lab!r}")
    return Checkpoint.of(config)


def owned_now(lxd: Lxd, lab: str) -> tuple[dict[str, dict], dict[Kind, dict[str, dict]]]:
    """The lab's containers (raw) and its networks, profiles and ACLs (writable bodies), as LXD has them."""
    raw = lxd.read(with_addresses=False)
    owned = live_from_raw(raw, lab).owned
    names = {kind: {a.name for a in owned if a.kind == kind} for kind in (*WRITABLE, Kind.INSTANCE)}
    instances = {r["name"]: r for r in raw.instances if r["name"] in names[Kind.INSTANCE]}
    objects = {kind: {r["name"]: writable(kind, r) for r in raw.of(kind) if r["name"] in names[kind]}
               for kind in WRITABLE}
    return instances, objects


def writable(kind: Kind, raw: dict) -> dict:
    body = {k: raw.get(k) for k in WRITABLE[kind]}
    if kind == Kind.NETWORK:
        body["type"] = raw.get("type", "bridge")  # needed to make it again, never PUT
    return body


def _state(raw: dict) -> str:
    return "running" if raw.get("status") == "Running" else "stopped"


# --- taking and deleting ------------------------------------------------------------------------------

def take(lxd: Lxd, place: Lxd, lab: str, name: str, lab_digest: str, fingerprint: str, lab_model: Any,
         auto: bool = False, said: Callable[[str], None] = print) -> Checkpoint:
    """Record the lab's objects, then snapshot each container where it stands."""
    check_name(name)
    instances, objects = owned_now(lxd, lab)
    previous = _previous(place, lab, name)
    if previous is not None and previous.complete:
        raise CheckpointError(f"lab {lab!r} already has a checkpoint {name!r} (taken {previous.created}): choose"
                              f" another name, or delete it first (reconcile checkpoint --delete {name})")
    _foreign_snapshots(lxd, instances, name, previous)
    cp = Checkpoint(name, lab, datetime.now(UTC).isoformat(timespec="seconds"), lab_digest, fingerprint, auto,
                    False, {n: _state(r) for n, r in sorted(instances.items())},
                    {k.value: dict(sorted(v.items())) for k, v in objects.items()}, lab_model)
    _write(place, cp, exists=previous is not None)

    def one(cname: str) -> None:
        said(f"snapshot {cname} -> {snapshot_name(name)}")
        if previous is not None and snapshot_name(name) in _snapshot_names(lxd, cname):
            lxd.delete_snapshot(cname, snapshot_name(name))  # left by the incomplete run: taken again now
        lxd.snapshot(cname, snapshot_name(name))

    _each(one, sorted(instances))
    cp.complete = True
    _write(place, cp, exists=True)
    return cp


def _previous(place: Lxd, lab: str, name: str) -> Checkpoint | None:
    try:
        raw, _ = place.get("profile", record_name(lab, name))
    except LxdNotFound:
        return None
    config = raw.get("config") or {}
    if config.get(TAG) != lab:
        raise CheckpointError(f"profile {record_name(lab, name)} exists and is not a checkpoint of lab {lab!r}")
    return Checkpoint.of(config)


def _foreign_snapshots(lxd: Lxd, instances: dict[str, dict], name: str, previous: Checkpoint | None) -> None:
    """A snapshot rc-NAME not made by this checkpoint is someone's own: refused, never replaced."""
    ours = set(previous.instances) if previous is not None else set()
    clash = sorted(c for c in instances if c not in ours and snapshot_name(name) in _snapshot_names(lxd, c))
    if clash:
        raise CheckpointError(f"{', '.join(clash)} already {'has' if len(clash) == 1 else 'have'} a snapshot"
                              f" {snapshot_name(name)!r} that no checkpoint of this lab made: choose another name")


def _snapshot_names(lxd: Lxd, instance: str) -> set[str]:
    return {s["name"].rpartition("/")[2] for s in lxd.snapshots(instance)}


def _write(place: Lxd, cp: Checkpoint, exists: bool) -> None:
    body = {"description": f"reconciler checkpoint {cp.name} of lab {cp.lab} (do not edit)", "config": cp.config(),
            "devices": {}}
    if exists:
        _, etag = place.get("profile", record_name(cp.lab, cp.name))
        place.put("profile", record_name(cp.lab, cp.name), body, etag)
    else:
        place.create("profile", {"name": record_name(cp.lab, cp.name), **body})


def delete(lxd: Lxd, place: Lxd, cp: Checkpoint) -> None:
    """Its snapshots (those still there), then its record: a run killed between is finished by the next."""
    for cname in sorted(cp.instances):
        try:
            lxd.delete_snapshot(cname, snapshot_name(cp.name))
        except LxdNotFound:
            continue  # gone with its container, or deleted by an earlier run
    place.delete("profile", record_name(cp.lab, cp.name))


def prune(lxd: Lxd, place: Lxd, lab: str, keep: int, said: Callable[[str], None] = print) -> list[str]:
    """Automatic checkpoints beyond the last `keep`, oldest first; never one taken by hand."""
    autos = [c for c in listed(place, lab) if c.auto]
    gone = autos[:max(0, len(autos) - keep)]
    for cp in gone:
        said(f"pruning automatic checkpoint {cp.name} (taken {cp.created}; keeping the last {keep})")
        delete(lxd, place, cp)
    return [c.name for c in gone]


# --- before a risky apply -------------------------------------------------------------------------------

RISKY = {Action.REPLACE, Action.RESTART, Action.DELETE, Action.STOP, Action.MOVE}


def risky(plan: Plan) -> list[str]:
    """Why `apply --checkpoint auto` takes one: the changes that replace, restart, stop, move or delete
    something, or change what is already inside a container (re-provision); empty when it only adds."""
    out = []
    for change in plan.changes:
        inside = change.address.kind.inside and change.before is not None
        if RISKY & set(change.actions) or (inside and {Action.UPDATE, Action.CONVERGE} & set(change.actions)):
            out.append(f"{change.address} ({', '.join(a.word for a in change.actions)})")
    return out


# --- rollback ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One thing rollback does: `verb` (create, put, restore, start, stop, delete) on kind/name."""

    verb: str
    kind: Kind
    name: str
    why: str
    body: dict | None = None

    def text(self) -> str:
        return f"{self.verb:<8} {self.kind.value}.{self.name}: {self.why}"


@dataclass
class Rollback:
    checkpoint: Checkpoint
    steps: list[Step]
    refused: list[str]


def plan_rollback(lxd: Lxd, cp: Checkpoint) -> Rollback:
    """What rollback does, in order: recorded objects made or put back (ACLs, networks, profiles),
    containers restored to their snapshots and set to their recorded state, then what the lab made
    since deleted (containers, then profiles, networks, ACLs)."""
    if not cp.complete:
        return Rollback(cp, [], [f"checkpoint {cp.name!r} is incomplete (its run was cut short): take it again"
                                 f" (reconcile checkpoint {cp.name}) or delete it"])
    instances, objects = owned_now(lxd, cp.lab)
    steps, refused = [], []
    for kind in WRITABLE:
        recorded = cp.objects.get(kind.value) or {}
        for name, body in sorted(recorded.items()):
            now = objects[kind].get(name)
            if now is None:
                refused += _refused_create(lxd, kind, name)
                steps.append(Step("create", kind, name, "deleted since the checkpoint", body))
            elif _put_body(kind, now) != _put_body(kind, body):
                steps.append(Step("put", kind, name, f"{_differs(_put_body(kind, now), _put_body(kind, body))}"
                                  " changed since the checkpoint", body))
    snap = snapshot_name(cp.name)
    for cname, state in sorted(cp.instances.items()):
        if cname not in instances:
            refused.append(f"container {cname} was deleted since the checkpoint, and its snapshot {snap} with it:"
                           " it cannot be restored")
        elif snap not in _snapshot_names(lxd, cname):
            refused.append(f"container {cname} has no snapshot {snap} any more (deleted by hand?): it cannot be"
                           " restored")
        else:
            steps.append(Step("restore", Kind.INSTANCE, cname, f"to snapshot {snap}"))
            steps.append(Step("start" if state == "running" else "stop", Kind.INSTANCE, cname,
                              f"it was {state} at the checkpoint"))
    for cname in sorted(set(instances) - set(cp.instances)):
        steps.append(Step("delete", Kind.INSTANCE, cname, "created after the checkpoint"))
    for kind in reversed(WRITABLE):
        for name in sorted(set(objects[kind]) - set(cp.objects.get(kind.value) or {})):
            if not (kind == Kind.PROFILE and name == "default"):
                steps.append(Step("delete", kind, name, "created after the checkpoint"))
    return Rollback(cp, steps, refused)


def _refused_create(lxd: Lxd, kind: Kind, name: str) -> list[str]:
    """An object the lab lost since the checkpoint is made again only if nobody else took its name."""
    try:
        raw, _ = lxd.get(kind.value, name)
    except LxdNotFound:
        return []
    owner = (raw.get("config") or {}).get("user.reconciler.lab")
    return [f"{kind.value}.{name} was the lab's at the checkpoint and now belongs to"
            f" {('lab ' + repr(owner)) if owner else 'no lab'}: rollback does not take it over"]


def _put_body(kind: Kind, body: dict) -> dict:
    return {k: body.get(k) or ({} if k in ("config", "devices") else [] if k in ("ingress", "egress") else "")
            for k in WRITABLE[kind]}


def _differs(now: dict, then: dict) -> str:
    return ", ".join(k for k in then if now.get(k) != then.get(k))


def run_rollback(lxd: Lxd, rollback: Rollback, said: Callable[[str], None] = print) -> None:
    """The objects made or put back, in order; then each container's steps in order, containers in
    parallel; then the objects made since deleted, in order. A step already done (a run killed midway,
    run again) does nothing harmful."""
    def run(steps: list[Step]) -> None:
        for step in steps:
            said(step.text())
            _run_step(lxd, rollback.checkpoint, step)

    by_container: dict[str, list[Step]] = {}
    for step in rollback.steps:
        if step.kind == Kind.INSTANCE:
            by_container.setdefault(step.name, []).append(step)
    run([s for s in rollback.steps if s.kind != Kind.INSTANCE and s.verb != "delete"])
    _each(run, list(by_container.values()))
    run([s for s in rollback.steps if s.kind != Kind.INSTANCE and s.verb == "delete"])


def _each(work: Callable[[Any], None], items: list) -> None:
    """`work` on each item, PARALLEL at once (LXD copies a container's root filesystem for a snapshot
    or a restore on a `dir` pool: the slow part); the first error is raised once all have ended."""
    from concurrent.futures import ThreadPoolExecutor
    if not items:
        return
    with ThreadPoolExecutor(min(PARALLEL, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
    for future in futures:
        future.result()


def _run_step(lxd: Lxd, cp: Checkpoint, step: Step) -> None:
    kind, name = step.kind.value, step.name
    if step.verb == "create":
        body = dict(step.body or {})
        if step.kind != Kind.NETWORK:
            body.pop("type", None)
        lxd.create(kind, {"name": name, **body})
    elif step.verb == "put":
        _, etag = lxd.get(kind, name)
        lxd.put(kind, name, _put_body(step.kind, step.body or {}), etag)
    elif step.verb == "restore":
        lxd.restore(name, snapshot_name(cp.name))
    elif step.verb in ("start", "stop"):
        raw, _ = lxd.get("instance", name)
        if _state(raw) != ("running" if step.verb == "start" else "stopped"):
            lxd.set_state(name, step.verb, force=step.verb == "stop")
    elif step.verb == "delete":
        _delete(lxd, step.kind, name)


def _delete(lxd: Lxd, kind: Kind, name: str) -> None:
    try:
        if kind == Kind.INSTANCE:
            raw, _ = lxd.get("instance", name)
            if _state(raw) == "running":
                lxd.set_state(name, "stop", force=True)
        lxd.delete(kind.value, name)
    except LxdNotFound:
        return  # deleted by an earlier, killed run


def lab_differences(then: Any, now: Any) -> list[str]:
    """lab.yaml as the checkpoint recorded it against the working one, as a unified diff of their
    validated forms (secrets left out)."""
    import difflib
    def lines(model: Any) -> list[str]:
        return json.dumps(model, indent=1, sort_keys=True, default=str).splitlines()
    return list(difflib.unified_diff(lines(then), lines(now), "lab.yaml at the checkpoint", "lab.yaml now",
                                     lineterm="", n=2))


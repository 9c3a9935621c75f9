"""Checkpoints: the whole lab at one point, kept in LXD, and rollback to it.

A checkpoint is a stateless snapshot `rc-NAME` of every container the lab owns, plus a record: a
profile `reconciler-checkpoint-LAB.NAME` (lab names have no '.', so no two labs' records share a
name; lab.yaml may not declare profiles with that prefix), kept where the lab's lock is (the lab's
project, or the default one when the lab owns its project). Its `user.reconciler.checkpoint*` keys
hold the lab's name (the tag), when, the digest of lab.yaml and the plan's fingerprint, and, as
zlib-compressed JSON in base64, the configuration of every object the lab owns of every kind of the
registry (kinds/__init__.py) but its project and its containers (pools, volumes, networks, profiles,
ACLs, forwards: a new kind is recorded without a change here), each container's state, the custom
volumes snapshotted, and lab.yaml as validated (secrets left out, as a saved plan's digest leaves them).
Custom volumes the lab owns are snapshotted (`rc-NAME`) as the containers are. Any checkout that
reaches the daemon reads it: nothing is on the local disk.
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

from .address import Address, Kind
from .errors import LxdError, LxdNotFound

# A feature built on the volume kind (it snapshots volumes), not something adding that kind had to touch.
from .kinds import OBJECT_KINDS, object_kind, storage_volume
from .kinds.contract import ObjectKind, Scope
from .kinds.storage_volume import DATA_LOST
from .live import live_from_raw
from .plan import Action, Plan
from .spec import CHECKPOINT_PREFIX

if TYPE_CHECKING:
    from .lxd import Lxd, Nested

PREFIX = CHECKPOINT_PREFIX  # lab.yaml cannot declare profiles with such names
SNAPSHOT_PREFIX = "rc-"
TAG = "user.reconciler.checkpoint"  # the lab the record belongs to
NAME_KEY, CREATED_KEY, DIGEST_KEY, FINGERPRINT_KEY, AUTO_KEY, COMPLETE_KEY, DATA_KEY = (
    f"{TAG}.{k}" for k in ("name", "created", "lab-digest", "fingerprint", "auto", "complete", "data"))
NAME = r"[a-z0-9][a-z0-9-]{0,39}"
PARALLEL = 4  # containers snapshotted or restored at once, as apply's default parallelism
MAX_DATA = 256 * 1024  # encoded bytes of one record: every plan's GET of the profiles carries it
# Fields LXD reports that are not an object's configuration: what uses it, where and how it runs now.
NOT_CONFIG = ("used_by", "status", "locations", "location", "managed", "project", "created_at", "etag")
VOLATILE = "volatile."  # config keys LXD keeps for itself (a volume's idmap): never recorded, never put back
# A container rollback starts is waited for until its boot has finished (systemd's, where it has one: its
# services and its DHCP lease are up), at most BOOT_SECONDS: else a plan just after the rollback saw a
# service not started yet and an address not leased yet, and was not empty (seen in the test suite).
BOOT_SECONDS = 90
BOOTED = ["sh", "-c", "command -v systemctl >/dev/null 2>&1 || exit 0;"
          f" timeout {BOOT_SECONDS} systemctl is-system-running --wait >/dev/null 2>&1; exit 0"]
# Rollback's phases, in order: objects before the containers (by plan order), running containers that mount
# a volume to restore stopped (LXD 5.0 refuses "Cannot restore custom volume used by running instances"),
# volumes restored, each container restored and set to its state (in parallel), objects after the
# containers (forwards), then what the lab made since deleted (in reverse plan order).
BEFORE, STOPS, VOLUMES, CONTAINERS, AFTER, DELETES = range(6)


def recorded_kinds() -> list[ObjectKind]:
    """Every object kind of the registry but the project (it holds the record) and the containers (they are
    snapshotted), in plan order."""
    return sorted((k for k in OBJECT_KINDS if k.SCOPE != Scope.OWN and k.KIND != Kind.INSTANCE),
                  key=lambda k: k.RANK)


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
    volumes: list[str] = field(default_factory=list)  # POOL/NAME of each custom volume snapshotted
    # A snapshot keeps a container's configuration but not its description: restoring one empties it.
    descriptions: dict[str, str] = field(default_factory=dict)  # container -> its description then

    def holds(self) -> str:
        counts = [f"{len(self.instances)} container{'s' * (len(self.instances) != 1)}"]
        counts += [f"{len(self.volumes)} volume{'s' * (len(self.volumes) != 1)} snapshotted"] if self.volumes else []
        counts += [f"{len(v)} {k}{'s' * (len(v) != 1)}" for k, v in sorted(self.objects.items(), key=_plan_order)
                   if v]
        return ", ".join(counts)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created, "lab_digest": self.lab_digest,
                "fingerprint": self.fingerprint, "auto": self.auto, "complete": self.complete,
                "containers": {c: {"state": s, "snapshot": snapshot_name(self.name)}
                               for c, s in sorted(self.instances.items())},
                "volumes": {v: {"snapshot": snapshot_name(self.name)} for v in self.volumes},
                "objects": {k: sorted(v) for k, v in self.objects.items()}}

    def config(self) -> dict[str, str]:
        data = {"instances": self.instances, "objects": self.objects, "lab": self.lab_model, "volumes": self.volumes,
                "descriptions": self.descriptions}
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
                   data.get("lab"), data.get("volumes") or [], data.get("descriptions") or {})


def _plan_order(item: tuple[str, Any]) -> tuple[int, str]:
    """A recorded kind's place in plan order (a kind an older or newer version recorded: last)."""
    known = {k.KIND.value: k.RANK for k in recorded_kinds()}
    return known.get(item[0], 1000), item[0]


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


def owned_now(lxd: Lxd, lab: str, under: Nested) -> tuple[dict[str, dict], dict[Kind, dict[str, dict]]]:
    """The lab's containers (raw) and the configuration of its other objects by kind and name (a nested
    kind's name is PARENT/NAME), as LXD has them; nested kinds read under the parents `under` accepts."""
    raw = lxd.read(with_addresses=False, under=under)
    owned = set(live_from_raw(raw, lab).owned)
    instances = {r["name"]: r for r in raw.instances if Address(Kind.INSTANCE, r["name"]) in owned}
    objects: dict[Kind, dict[str, dict]] = {}
    for kind in recorded_kinds():
        found = ((kind.from_lxd(r), r) for r in raw.of(kind.KIND))
        objects[kind.KIND] = {res.address.name: configuration(r) for res, r in found
                              if res is not None and res.address in owned}
    return instances, objects


def configuration(raw: dict) -> dict:
    """An object's JSON without what is not its configuration (what uses it, LXD's volatile keys)."""
    body = {k: v for k, v in raw.items() if k not in NOT_CONFIG}
    if isinstance(body.get("config"), dict):
        body["config"] = {k: v for k, v in body["config"].items() if not k.startswith(VOLATILE)}
    return body


def nested_under(under: Nested, cp: Checkpoint) -> Nested:
    """`under`, and the parents of what the checkpoint recorded (a volume on a pool lab.yaml no longer names)."""
    recorded = {(k.PARENT, name.rpartition("/")[0]) for k in recorded_kinds() if k.PARENT
                for name in cp.objects.get(k.KIND.value) or {}}
    return lambda kind, parent: under(kind, parent) or (kind.PARENT, parent["name"]) in recorded


def _state(raw: dict) -> str:
    return "running" if raw.get("status") == "Running" else "stopped"


# --- taking and deleting ------------------------------------------------------------------------------

def take(lxd: Lxd, place: Lxd, lab: str, name: str, lab_digest: str, fingerprint: str, lab_model: Any,
         under: Nested, auto: bool = False, said: Callable[[str], None] = print) -> Checkpoint:
    """Record the lab's objects, then snapshot each container where it stands, and each custom volume."""
    check_name(name)
    instances, objects = owned_now(lxd, lab, under)
    volumes = sorted(objects.get(storage_volume.KIND) or {})
    previous = _previous(place, lab, name)
    if previous is not None and previous.complete:
        raise CheckpointError(f"lab {lab!r} already has a checkpoint {name!r} (taken {previous.created}): choose"
                              f" another name, or delete it first (reconcile checkpoint --delete {name})")
    targets = [("instance", c) for c in sorted(instances)] + [("volume", v) for v in volumes]
    _foreign_snapshots(lxd, targets, name, previous)
    cp = Checkpoint(name, lab, datetime.now(UTC).isoformat(timespec="seconds"), lab_digest, fingerprint, auto,
                    False, {n: _state(r) for n, r in sorted(instances.items())},
                    {k.value: dict(sorted(v.items())) for k, v in objects.items()}, lab_model, volumes,
                    {n: r.get("description") or "" for n, r in sorted(instances.items())})
    _write(place, cp, exists=previous is not None)

    def one(target: tuple[str, str]) -> None:
        kind, tname = target
        said(f"snapshot {'' if kind == 'instance' else 'volume '}{tname} -> {snapshot_name(name)}")
        if previous is not None and snapshot_name(name) in _snapshot_names(lxd, tname, kind):
            lxd.delete_snapshot(tname, snapshot_name(name), kind)  # left by the incomplete run: taken again now
        lxd.snapshot(tname, snapshot_name(name), kind)

    _each(one, targets)
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


def _foreign_snapshots(lxd: Lxd, targets: list[tuple[str, str]], name: str, previous: Checkpoint | None) -> None:
    """A snapshot rc-NAME not made by this checkpoint is someone's own: refused, never replaced."""
    ours = {*(("instance", c) for c in previous.instances), *(("volume", v) for v in previous.volumes)} \
        if previous is not None else set()
    clash = sorted(t for k, t in targets if (k, t) not in ours and snapshot_name(name) in _snapshot_names(lxd, t, k))
    if clash:
        raise CheckpointError(f"{', '.join(clash)} already {'has' if len(clash) == 1 else 'have'} a snapshot"
                              f" {snapshot_name(name)!r} that no checkpoint of this lab made: choose another name")


def _snapshot_names(lxd: Lxd, name: str, kind: str = "instance") -> set[str]:
    return {s["name"].rpartition("/")[2] for s in lxd.snapshots(name, kind)}


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
    for kind, tname in [("instance", c) for c in sorted(cp.instances)] + [("volume", v) for v in cp.volumes]:
        try:
            lxd.delete_snapshot(tname, snapshot_name(cp.name), kind)
        except LxdNotFound:
            continue  # gone with its container or volume, or deleted by an earlier run
    place.delete("profile", record_name(cp.lab, cp.name))


def prune(lxd: Lxd, place: Lxd, lab: str, keep: int, said: Callable[[str], None] = print) -> list[str]:
    """Automatic checkpoints beyond the last `keep`, oldest first; never one taken by hand."""
    autos = [c for c in listed(place, lab) if c.auto]
    gone = autos[:max(0, len(autos) - keep)]
    for cp in gone:
        said(f"pruning automatic checkpoint {cp.name} (taken {cp.created}; keeping the last {keep})")
        delete(lxd, place, cp)
    return [c.name for c in gone]


def sizes(lxd: Lxd, found: list[Checkpoint]) -> dict[str, int | None]:
    """Bytes each checkpoint's snapshots use, where LXD reports it (it does not on a dir pool: None);
    one GET per container, one per volume snapshot."""
    used: dict[str, list[int | None]] = {c.name: [] for c in found}
    for cname in sorted({c for cp in found for c in cp.instances}):
        try:
            by_name = {s["name"].rpartition("/")[2]: s.get("size") for s in lxd.snapshots(cname)}
        except LxdNotFound:
            continue
        for cp in found:
            size = by_name.get(snapshot_name(cp.name))
            if cname in cp.instances and size is not None:
                used[cp.name].append(size if isinstance(size, int) and size >= 0 else None)
    for cp in found:
        used[cp.name] += [lxd.snapshot_usage(v, snapshot_name(cp.name), storage_volume.KIND.value) for v in cp.volumes]
    return {n: sum(u) if u and None not in u else None for n, u in used.items()}  # type: ignore[arg-type]


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
    """One thing rollback does: `verb` (create, put, restore, start, stop, delete) on kind/name, in `phase`."""

    verb: str
    kind: Kind
    name: str
    why: str
    body: dict | None = None
    phase: int = BEFORE

    def text(self) -> str:
        return f"{self.verb:<8} {self.kind.value}.{self.name}: {self.why}"


@dataclass
class Rollback:
    checkpoint: Checkpoint
    steps: list[Step]
    refused: list[str]


def plan_rollback(lxd: Lxd, cp: Checkpoint, under: Nested, force: bool = False) -> Rollback:
    """What rollback does, phase by phase (see BEFORE...DELETES). `force`: a volume made since the checkpoint
    is deleted, its data with it (else refused, as apply refuses without --force)."""
    if not cp.complete:
        return Rollback(cp, [], [f"checkpoint {cp.name!r} is incomplete (its run was cut short): take it again"
                                 f" (reconcile checkpoint {cp.name}) or delete it"])
    instances, objects = owned_now(lxd, cp.lab, nested_under(under, cp))
    steps, refused = _objects_back(lxd, cp, objects)
    restored = _volumes_back(lxd, cp, objects, steps, refused)
    _stops_for(restored, instances, steps)
    _containers_back(lxd, cp, instances, steps, refused)
    _made_since(cp, objects, force, steps, refused)
    return Rollback(cp, sorted(steps, key=lambda s: s.phase), refused)


def _objects_back(lxd: Lxd, cp: Checkpoint, objects: dict[Kind, dict[str, dict]]) -> tuple[list[Step], list[str]]:
    """Each recorded object made again (deleted since) or put back (changed since), in plan order."""
    steps: list[Step] = []
    refused: list[str] = []
    containers = object_kind(Kind.INSTANCE).RANK
    for kind in recorded_kinds():
        phase = BEFORE if kind.RANK < containers else AFTER
        for name, body in sorted((cp.objects.get(kind.KIND.value) or {}).items()):
            now = objects[kind.KIND].get(name)
            if now is None:
                refused += _refused_create(lxd, kind.KIND, name)
                emptied = kind.KIND == storage_volume.KIND and name in cp.volumes
                steps.append(Step("create", kind.KIND, name, "deleted since the checkpoint" + (
                    ", and its snapshot with it: made again empty from its recorded configuration (a container"
                    " that mounts it cannot start without it); its data is not restored" if emptied else ""),
                    body, phase))
            elif changed := _differs(now, body):
                steps.append(Step("put", kind.KIND, name, f"{changed} changed since the checkpoint", body, phase))
    return steps, refused


def _volumes_back(lxd: Lxd, cp: Checkpoint, objects: dict[Kind, dict[str, dict]], steps: list[Step],
                  refused: list[str]) -> list[str]:
    """Each snapshotted volume still there restored to its snapshot; the names restored."""
    snap, restored = snapshot_name(cp.name), []
    for name in cp.volumes:
        if name not in (objects.get(storage_volume.KIND) or {}):
            continue  # made again empty by _objects_back
        if snap not in _snapshot_names(lxd, name, "volume"):
            refused.append(f"volume {name} has no snapshot {snap} any more (deleted by hand?): it cannot be restored")
            continue
        steps.append(Step("restore", storage_volume.KIND, name, f"to snapshot {snap}", phase=VOLUMES))
        restored.append(name)
    return restored


def _stops_for(restored: list[str], instances: dict[str, dict], steps: list[Step]) -> None:
    """Running containers that mount a volume to restore are stopped first: LXD 5.0 restores none in use."""
    for cname, raw in sorted(instances.items()):
        devices = raw.get("expanded_devices") or raw.get("devices") or {}
        mounted = {a.name for a in storage_volume.named_by_devices(devices, None)}
        used = sorted(mounted & set(restored))
        if used and _state(raw) == "running":
            steps.append(Step("stop", Kind.INSTANCE, cname, f"it mounts volume.{used[0]}, which LXD restores only"
                              " while no running container mounts it", phase=STOPS))


def _containers_back(lxd: Lxd, cp: Checkpoint, instances: dict[str, dict], steps: list[Step],
                     refused: list[str]) -> None:
    snap = snapshot_name(cp.name)
    for cname, state in sorted(cp.instances.items()):
        if cname not in instances:
            refused.append(f"container {cname} was deleted since the checkpoint, and its snapshot {snap} with it:"
                           " it cannot be restored")
        elif snap not in _snapshot_names(lxd, cname):
            refused.append(f"container {cname} has no snapshot {snap} any more (deleted by hand?): it cannot be"
                           " restored")
        else:
            steps.append(Step("restore", Kind.INSTANCE, cname, f"to snapshot {snap}", phase=CONTAINERS))
            steps.append(Step("start" if state == "running" else "stop", Kind.INSTANCE, cname,
                              f"it was {state} at the checkpoint", phase=CONTAINERS))
    for cname in sorted(set(instances) - set(cp.instances)):
        steps.append(Step("delete", Kind.INSTANCE, cname, "created after the checkpoint", phase=CONTAINERS))


def _made_since(cp: Checkpoint, objects: dict[Kind, dict[str, dict]], force: bool, steps: list[Step],
                refused: list[str]) -> None:
    """What the lab made after the checkpoint, deleted in reverse plan order; a volume only with `force`. A kind
    the checkpoint did not record (taken by an older version) is left alone: its objects are not new."""
    for kind in reversed(recorded_kinds()):
        if kind.KIND.value not in cp.objects:
            continue
        for name in sorted(set(objects[kind.KIND]) - set(cp.objects.get(kind.KIND.value) or {})):
            if kind.KIND == Kind.PROFILE and name == "default":
                continue
            if kind.KIND == storage_volume.KIND and not force:
                refused.append(f"volume.{name} was created after the checkpoint: deleting it, {DATA_LOST}"
                               " (`reconcile rollback --force` deletes it)")
            steps.append(Step("delete", kind.KIND, name, "created after the checkpoint", phase=DELETES))


def _refused_create(lxd: Lxd, kind: Kind, name: str) -> list[str]:
    """An object the lab lost since the checkpoint is made again only if nobody else took its name."""
    try:
        raw, _ = lxd.get(kind.value, name)
    except LxdNotFound:
        return []
    owner = (raw.get("config") or {}).get("user.reconciler.lab")
    return [f"{kind.value}.{name} was the lab's at the checkpoint and now belongs to"
            f" {('lab ' + repr(owner)) if owner else 'no lab'}: rollback does not take it over"]


def _settled(value: Any) -> Any:
    return value if value not in (None, "", {}, []) else None  # LXD says an empty field either way


def _differs(now: dict, then: dict) -> str:
    """The recorded fields that differ now (an older record holds fewer: only those are compared)."""
    return ", ".join(k for k in then if k != "parent" and _settled(now.get(k)) != _settled(then.get(k)))


def _body(recorded: dict, live_config: dict | None = None) -> dict:
    """What is sent back: the recorded configuration, the volatile keys LXD keeps now left as they are
    (LXD takes only its writable fields from a PUT's body, and ignores the rest)."""
    body = {k: v for k, v in recorded.items() if k not in NOT_CONFIG and k != "parent"}
    if "config" in body:
        kept = {k: v for k, v in (live_config or {}).items() if k.startswith(VOLATILE)}
        body["config"] = {**kept, **(body["config"] or {})}
    return body


def run_rollback(lxd: Lxd, rollback: Rollback, said: Callable[[str], None] = print) -> None:
    """Phase by phase; in the containers' phase each container's steps in order, containers in parallel.
    A step already done (a run killed midway, run again) does nothing harmful."""
    def run(steps: list[Step]) -> None:
        for step in steps:
            said(step.text())
            _run_step(lxd, rollback.checkpoint, step)

    for phase in sorted({s.phase for s in rollback.steps}):
        steps = [s for s in rollback.steps if s.phase == phase]
        if phase != CONTAINERS:
            run(steps)
            continue
        by_container: dict[str, list[Step]] = {}
        for step in steps:
            by_container.setdefault(step.name, []).append(step)
        _each(run, list(by_container.values()))


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
        _create(lxd, step.kind, step.body or {})
    elif step.verb == "put":
        raw, etag = lxd.get(kind, name)
        lxd.put(kind, name, _body(step.body or {}, raw.get("config")), etag)
    elif step.verb == "restore":
        lxd.restore(name, snapshot_name(cp.name), kind)
        if step.kind == Kind.INSTANCE and name in cp.descriptions:
            lxd.patch(kind, name, {"description": cp.descriptions[name]})
    elif step.verb in ("start", "stop"):
        raw, _ = lxd.get("instance", name)
        if _state(raw) != ("running" if step.verb == "start" else "stopped"):
            lxd.set_state(name, step.verb, force=step.verb == "stop")
        if step.verb == "start":
            lxd.execute(name, BOOTED, timeout=BOOT_SECONDS + 30)  # "degraded" or a timeout: the plan will say
    elif step.verb == "delete":
        _delete(lxd, step.kind, name)


def _create(lxd: Lxd, kind: Kind, recorded: dict) -> None:
    """The object made again from its recorded configuration (a nested one under its recorded parent)."""
    try:
        lxd.create(kind.value, _body(recorded), parent=recorded.get("parent", ""))
    except LxdError:
        name = recorded.get("name") or recorded.get("listen_address", "")
        if not _exists(lxd, kind, f"{recorded['parent']}/{name}" if recorded.get("parent") else name):
            raise
        # made by an earlier, killed run: the next rollback compares it as any other object


def _exists(lxd: Lxd, kind: Kind, name: str) -> bool:
    try:
        lxd.get(kind.value, name)
        return True
    except LxdNotFound:
        return False


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


"""From lab.yaml and LXD to a Plan: read, build both states, check conflicts, diff, order.

LXD objects are compared first: what happens to each container decides whether what runs
inside it can be seen.  A running container is read (one exec); a new or replaced one holds
nothing yet, so its files, packages and services are created; one that is stopped although
lab.yaml wants it running is unseen, and its contents are converged once apply has started it.
Unknown is never absent: nothing inside an unseen container is created or deleted on a guess.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import disruption, haproxy, kinds, listeners, placement, runtime_drift
from .address import Address, Kind, instance, network
from .context import Context
from .desired import desired_state, root_disk_problems
from .diff import diff_states
from .errors import LxdError
from .facts import MAX_SHOWN_BYTES, Facts, FactsError, content_argv, parse_facts, parse_record, record_path
from .haproxy import runtime
from .inside import container_facts, provisioning_of, record_key, render_file
from .kinds import OBJECT_KINDS, object_kind, tables
from .kinds import project as project_kind
from .live import Live, as_comparable, host_routes, live_from_raw, provisioned, recorded_files, users_of
from .plan import Action, Change, Code, Origin, Plan, PlanError, Reason, make_plan
from .source import field_path
from .spec import REMOTES, Lab, network_overlaps
from .state import LabState, Resource

if TYPE_CHECKING:
    from .lxd import Lxd

PARALLEL_READS = 8


class Sight(Enum):
    """What plan can know about the inside of a container."""

    KNOWN = "known"  # running: read by its facts exec
    NEW = "new"  # created or replaced by this plan: nothing inside yet
    UNSEEN = "unseen"  # stopped, and lab.yaml wants it running: converged once started
    STOPPED = "stopped"  # lab.yaml wants it stopped: its contents are not managed meanwhile
    HELD = "held"  # stopped on a cluster member that cannot start it (evacuated): left until it is restored


def build_plan(lab: Lab, base_dir: Path, lxd: Lxd, destroy: bool = False) -> tuple[Plan, Context]:
    found_project, raw = project_kind.read(lxd, lab, needs_addresses(lab))
    _mark_unheard(lxd, raw.instances)
    live = live_from_raw(raw, lab.lab)
    project_notes = project_kind.claim(live, lab, found_project, destroy)
    wanted = _nothing(lab) if destroy else lab
    _check_existing(wanted, live)
    _check_subnets(wanted, live, lxd.local)
    _check_cluster_bridges(wanted, live, lxd)
    places = placement.decide(wanted, live.owned, placement.read(lxd, wanted))
    unknown = placement.restarting(places) | _replaced(wanted, live)
    addresses = {c: a for c, a in live.addresses().items() if c not in unknown}
    nics = {c: a for c, a in live.devices.items() if c not in unknown}
    desired = desired_state(wanted, base_dir, addresses, live.profiles, nics)
    if destroy:
        desired.update({r.address: r for r in project_kind.emptied_default_profile(live)})
    adopted = _adoptions(wanted, desired, live)
    _check_conflicts(desired, live, {c.address for c in adopted}, lxd.daemon.title)
    owned = {**live.owned, **{c.address: _as_adopted(live.untagged[c.address], desired[c.address])
                              for c in adopted}}
    renames = _renames(desired, owned) + adopted
    as_comparable(desired, owned)
    objects = diff_states(_objects(desired), _objects(owned), lxd.daemon.title)
    _check_foreign_children(objects, live.foreign)
    objects = placement.placed(_with_sources(objects, live.images, owned) + renames, places, desired, owned)
    sight = _sight(wanted, owned, objects, placement.held(places))
    facts = read_facts(lxd, wanted, _readable(wanted, owned, renames, sight), desired)
    for cname, found in facts.items():
        owned.update(provisioned(cname, found, provisioning_of(wanted, cname)))
    for cname, record in _unseen_records(lxd, wanted, owned, renames, sight).items():
        owned.update(recorded_files(cname, record))
    _same_content(owned, desired)
    servers, runtime_notes = runtime_drift.read(wanted, facts)
    inside = _seen_inside(diff_states(_inside(desired), _inside(owned)), sight, facts) \
        + runtime_drift.drifted(wanted, servers)
    notes = project_notes + placement.notes(places) + _notes(wanted, sight) + runtime_notes
    changes = [_destroying(c, lab.lab) for c in objects + inside] if destroy else objects + inside
    plan = make_plan(lab.lab, changes, users_of(live.owned), notes, objects=len(live.owned),
                     frontends=wanted.haproxy)
    plan = replace(runtime_drift.settled(disruption.planned(plan, wanted.haproxy,
                                                            _stand_ins(wanted, base_dir, addresses))),
                   unchanged=len(desired.keys() - {c.address for c in plan.changes}))
    recorded = frozenset(a.name for a, r in live.owned.items() if a.kind == Kind.INSTANCE and r.meta.has_record)
    return plan, Context(lab, base_dir, recorded, facts, frozenset(desired.keys() | owned.keys()))


def _mark_unheard(lxd: Lxd, instances: list[dict[str, Any]]) -> None:
    """Mark the proxy devices of running containers that nobody listens for on this host (listeners.py), where
    LXD runs in this process's network namespace: a remote's, or another namespace's, are not seen from here."""
    proxies = any(d.get("type") == "proxy" for i in instances if i.get("status") == "Running"
                  for d in (i.get("expanded_devices") or {}).values())
    if proxies and lxd.local and lxd.socket and listeners.daemon_shares_network(lxd.socket):
        listeners.mark(instances, listeners.host_sockets(), lxd.member)


def _check_foreign_children(changes: list[Change], foreign: Mapping[Address, str | None]) -> None:
    """Refuse to delete or replace an object that holds one of a nested kind the lab does not own: LXD
    would delete it with its parent (a network's forwards), or refuse halfway through an apply."""
    gone = {(c.address.kind, c.address.name) for c in changes if {Action.DELETE, Action.REPLACE} & set(c.actions)}
    held = sorted(a for a in foreign if (parent := object_kind(a.kind).PARENT if not a.kind.inside else None)
                  and (parent, a.name.rpartition("/")[0]) in gone)
    if held:
        raise PlanError("\n".join(f"{object_kind(a.kind).PARENT}.{a.name.rpartition('/')[0]} holds {a}, which is"
                                  " not this lab's: delete or move it by hand first" for a in held))


def _stand_ins(lab: Lab, base_dir: Path, addresses: Mapping[str, str]) -> dict[str, disruption.StandIn]:
    """Each proxy's haproxy.cfg with a stand-in address for each server container whose address only apply
    will know (a new, replaced, moved or stopped one): what the file will be, but for those addresses."""
    out = {}
    for proxy, spec in lab.haproxy.items():
        changing = sorted(haproxy.server_containers(spec) - set(addresses))
        stand_in = runtime.stand_ins(changing)
        if not changing or stand_in is None:
            continue
        config = render_file(lab, base_dir, proxy, haproxy.CONFIG_PATH, {**addresses, **stand_in})
        out[proxy] = disruption.StandIn(config.decode(), stand_in)
    return out


def _replaced(lab: Lab, live: Live) -> set[str]:
    """Containers lab.yaml replaces (another image or type): their address is known only after apply, as a
    new one's, so that haproxy.cfg follows them in the same apply."""
    out = set()
    for name, c in lab.containers.items():
        found = live.instance(name)
        if found is not None and (found.body.get("image"), found.body.get("type")) != (c.image, c.type):
            out.add(name)
    return out


def _nothing(lab: Lab) -> Lab:
    """The lab with nothing in it: every kind's table emptied (what destroy plans against)."""
    return Lab.model_construct(**{**dict(lab), **{table: {} for table in tables()}, "haproxy": {}, "project": None})


def _destroying(change: Change, lab_name: str) -> Change:
    """A destroy plan says why in destroy's words: not "not in lab.yaml", but whose it is."""
    if change.actions == (Action.DELETE,):
        why = f"destroy: lab {lab_name!r} owns it"
    else:  # a default profile, which LXD never deletes: the lab's devices leave it
        why = "destroy: the lab's devices leave it; LXD never deletes a default profile"
    return replace(change, reasons=(Reason(Code.DESTROY, why),) * len(change.actions), origin=Origin.LAB)


def _objects(state: LabState) -> LabState:
    return {a: r for a, r in state.items() if not a.kind.inside}


def _inside(state: LabState) -> LabState:
    return {a: r for a, r in state.items() if a.kind.inside}


def needs_addresses(lab: Lab) -> bool:
    """Addresses cost a deeper read; only labs whose files or forwards need them pay for it."""
    return (bool(lab.haproxy) or any(f.template for c in lab.containers.values() for f in c.files.values())
            or kinds.needs_addresses(lab))


# --- Adoptions ---------------------------------------------------------------------------------

def _adoptions(lab: Lab, desired: LabState, live: Live) -> list[Change]:
    """Untagged objects lab.yaml's `adopt:` names, taken over as they are (tagging is the change)."""
    out = []
    for addr in _adopted_addresses(lab, desired):
        if addr in live.untagged:
            want = desired[addr]
            found = _as_adopted(live.untagged[addr], want)
            out.append(Change(addr, (Action.ADOPT,), (Reason(Code.ADOPT, "lab.yaml adopts it: it gets this lab's"
                              " tag"),), found.body, want.body, origin=Origin.LAB,
                              meta=want.meta, depends_on=want.depends_on))
    return out


def _adopted_addresses(lab: Lab, desired: LabState) -> list[Address]:
    """The desired objects `adopt:` names, by each kind's table key (a nested kind's address is PARENT/KEY:
    a volume's pool, a forward's network, which lab.yaml gives in the entry)."""
    out = []
    for kind in OBJECT_KINDS:
        listed = set(getattr(lab.adopt, kind.TABLE, ()) if kind.TABLE else ())
        out += [a for a in desired if a.kind == kind.KIND and a.name.rpartition("/")[2] in listed]
    return out


def _as_adopted(found: Resource, want: Resource) -> Resource:
    """An untagged instance knows no image as lab.yaml wrote it: it is the one lab.yaml names."""
    body = {**found.body, "image": want.body["image"]} if "image" in found.body else found.body
    return Resource(found.address, body, found.depends_on, want.owner, found.applied, found.meta)


# --- Renames ----------------------------------------------------------------------------------

def _renames(desired: LabState, owned: LabState) -> list[Change]:
    """A container declared `renamed_from: OLD` takes over the live OLD, renamed in place."""
    out = []
    for addr, want in desired.items():
        prev = want.meta.prev_address
        if prev is None or addr in owned:
            continue
        found = owned.pop(prev, None)
        if found is None:
            continue  # nothing to rename: created as new
        owned[addr] = Resource(addr, found.body, found.depends_on, found.owner, found.applied, found.meta)
        out.append(Change(addr, (Action.RENAME,), (Reason(Code.RENAMED, f"renamed from {prev.name} in lab.yaml"),),
                          None, None, origin=Origin.LAB, meta=want.meta, depends_on=want.depends_on))
    return out


# --- Images -------------------------------------------------------------------------------------

def _with_sources(changes: list[Change], images: list[dict[str, Any]], owned: LabState) -> list[Change]:
    """Each container to create gets the image source LXD needs; a missing image fails the plan.  So
    does one to start that never ran, when its image is there: if a crash cut its creation short,
    apply makes it again."""
    out, problems = [], []
    for change in changes:
        have = owned.get(change.address)
        unborn = Action.START in change.actions and have is not None and have.meta.never_started
        made = {Action.CREATE, Action.REPLACE} & set(change.actions)
        if change.address.kind == Kind.INSTANCE and (made or unborn):
            try:
                source = image_source((change.after or {})["image"], images)
                change = replace(change, meta=change.meta.with_payload(source=source))
            except LookupError as err:
                if made:
                    problems.append(f"{field_path(('containers', change.address.name, 'image'))}: {err}")
        out.append(change)
    if problems:
        raise PlanError("\n".join(problems))
    return out


def image_source(image: str, images: list[dict[str, Any]]) -> dict[str, str]:
    """lab.yaml's image -> LXD's `source`: a local alias or fingerprint, or remote:alias pulled by
    simplestreams (not checked here: plan talks to no image server)."""
    remote, sep, alias = image.partition(":")
    if sep:
        return {"type": "image", "mode": "pull", "server": REMOTES[remote], "protocol": "simplestreams",
                "alias": alias}
    aliases = {a["name"] for i in images for a in i.get("aliases") or []}
    if image in aliases:
        return {"type": "image", "alias": image}
    matches = [i["fingerprint"] for i in images if i["fingerprint"].startswith(image.lower())]
    if len(image) >= 12 and len(matches) == 1:
        return {"type": "image", "fingerprint": matches[0]}
    if len(matches) > 1 and len(image) >= 12:
        raise LookupError(f"fingerprint {image!r} matches {len(matches)} images: give more of it")
    close = difflib.get_close_matches(image, sorted(aliases), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else (f" (aliases here: {', '.join(sorted(aliases))})"
                                                          if aliases else " (no images here)")
    raise LookupError(f"no image {image!r} in LXD: neither an alias nor a fingerprint (12 or more hex digits)"
                      f" of a local image{hint}")


# --- What can be seen inside --------------------------------------------------------------------

def _sight(lab: Lab, owned: LabState, objects: list[Change], held: set[str]) -> dict[str, Sight]:
    actions = {c.address: set(c.actions) for c in objects}
    out = {}
    for cname, container in lab.containers.items():
        addr = instance(cname)
        have = owned.get(addr)
        if container.state != "running":
            out[cname] = Sight.STOPPED
        elif cname in held:
            out[cname] = Sight.HELD
        elif have is None or {Action.CREATE, Action.REPLACE} & actions.get(addr, set()):
            out[cname] = Sight.NEW
        elif have.body["state"] == "running":
            out[cname] = Sight.KNOWN
        else:
            out[cname] = Sight.UNSEEN
    return out


def _seen_inside(changes: list[Change], sight: Mapping[str, Sight], facts: Mapping[str, Facts]) -> list[Change]:
    """Inside a new container everything is created; inside an unseen one, converged once it runs."""
    out = []
    for change in changes:
        cname = change.address.name
        seen = sight.get(cname, Sight.KNOWN)
        if seen == Sight.HELD:
            continue  # what runs inside is seen again once its member is restored
        if seen == Sight.NEW:
            change = replace(change, reasons=(Reason(Code.NEW_CONTAINER, f"{cname} is new: set up once it runs"),)
                             * len(change.actions))
        elif seen == Sight.UNSEEN:
            why = (f"not in lab.yaml, written by an earlier apply; {cname} is stopped: deleted once apply has"
                   " started it, if still there" if change.after is None else
                   f"{cname} is stopped: read and converged once apply has started it")
            change = replace(change, actions=(Action.CONVERGE,), reasons=(Reason(Code.UNSEEN, why),),
                             before=None, origin=Origin.UNKNOWN if change.after is not None else Origin.LAB)
        elif Action.CREATE in change.actions and record_key(change.address) in (facts[cname].record or {}):
            change = replace(change, origin=Origin.OUTSIDE)  # an earlier apply made it: removed by hand
        out.append(change)
    return out


def _notes(lab: Lab, sight: Mapping[str, Sight]) -> list[str]:
    notes = []
    for cname, seen in sorted(sight.items()):
        if seen == Sight.STOPPED and not provisioning_of(lab, cname).empty:
            notes.append(f"lab.yaml wants {cname} stopped: its files, packages and services are not checked"
                         " while it is")
        elif seen == Sight.UNSEEN:
            notes.append(f"{cname} is stopped: what runs inside it cannot be seen; apply starts it, then reads"
                         " and converges it")
    return notes


def _same_content(owned: LabState, desired: LabState) -> None:
    """A file whose digest is lab.yaml's has lab.yaml's content: it is not read back to be compared."""
    for addr, have in list(owned.items()):
        want = desired.get(addr)
        if (addr.kind == Kind.FILE and want is not None and have.body.get("sha256") == want.body.get("sha256")
                and "content" in want.body and have.body.get("content") is None):
            owned[addr] = Resource(addr, {**have.body, "content": want.body["content"]}, have.depends_on,
                                   have.owner, have.applied, have.meta)


def _live_names(renames: list[Change]) -> dict[str, str]:
    """Containers whose rename is pending: lab.yaml's name -> the live one."""
    return {c.address.name: c.meta.prev_address.name for c in renames
            if Action.RENAME in c.actions and c.meta.prev_address is not None}


def _readable(lab: Lab, owned: LabState, renames: list[Change], sight: Mapping[str, Sight]) -> dict[str, str]:
    """Containers to read, by their live name (the old one while a rename is pending): those seen
    running with something to manage, or a record of what an earlier apply wrote there."""
    old_names = _live_names(renames)
    out = {}
    for cname, seen in sight.items():
        have = owned.get(instance(cname))
        if seen == Sight.KNOWN and have is not None and (
                not provisioning_of(lab, cname).empty or have.meta.has_record):
            out[cname] = old_names.get(cname, cname)
    return out


def _unseen_records(lxd: Lxd, lab: Lab, owned: LabState, renames: list[Change],
                    sight: Mapping[str, Sight]) -> dict[str, dict[str, str]]:
    """What an earlier apply recorded inside each container apply is to start, read through LXD's file
    API (it works on a stopped container, no exec): what lab.yaml dropped meanwhile is the lab's to
    delete once the container runs, in the same apply.  One GET, only for such containers."""
    old_names = _live_names(renames)
    out = {}
    for cname, seen in sight.items():
        have = owned.get(instance(cname))
        if seen == Sight.UNSEEN and have is not None and have.meta.has_record:
            data = lxd.read_file(old_names.get(cname, cname), record_path(lab.lab))
            if data is not None:
                out[cname] = parse_record(data.decode("utf-8", "replace"))
    return out


def read_facts(lxd: Lxd, lab: Lab, containers: Mapping[str, str], desired: LabState) -> dict[str, Facts]:
    """One exec per container (cname -> its live name), in parallel; a second one only where a file
    differs from lab.yaml, for its content (to show the difference)."""
    if not containers:
        return {}
    record = record_path(lab.lab)

    def one(cname: str) -> Facts:
        found = container_facts(lxd, containers[cname], provisioning_of(lab, cname), record)
        return with_contents(lxd, containers[cname], found, _differing(cname, found, desired))

    with ThreadPoolExecutor(min(PARALLEL_READS, len(containers))) as pool:
        return dict(zip(containers, pool.map(one, containers)))


def _differing(cname: str, facts: Facts, desired: LabState) -> list[str]:
    """Files whose live digest is not lab.yaml's and whose content may be shown."""
    out = []
    for addr, want in desired.items():
        found = facts.files.get(addr.key) if addr.kind == Kind.FILE and addr.name == cname else None
        if (found and found.get("type") == "file" and want.body.get("sha256") != found.get("sha256")
                and not want.meta.secret and found.get("size", 0) <= MAX_SHOWN_BYTES):
            out.append(addr.key)
    return out


def with_contents(lxd: Lxd, name: str, facts: Facts, paths: list[str]) -> Facts:
    if not paths:
        return facts
    code, out, err = lxd.execute(name, content_argv(paths))
    if code != 0:
        raise LxdError(f"instance {name}: reading files that differ failed: {err.strip()}")
    try:
        return parse_facts(out, into=facts)
    except FactsError as bad:
        raise LxdError(f"instance {name}: its files could not be read: {bad}") from None


# --- Checks against LXD's state ------------------------------------------------------------------

def _check_existing(lab: Lab, live: Live) -> None:
    problems = [f"existing.profiles: profile {p!r} does not exist in LXD project" for p in lab.existing.profiles
                if p not in live.profiles and _used_profile(lab, p)]
    devices = {name: raw.get("devices") or {} for name, raw in live.profiles.items()}
    problems += root_disk_problems(lab, devices) if not problems else []
    if problems:
        raise PlanError("\n".join(problems))


def _check_subnets(lab: Lab, live: Live, local: bool) -> None:
    """A lab bridge must not overlap the host's routes (when LXD runs here) or another LXD network."""
    routes = host_routes(Path("/proc/net/route").read_text()) if local and Path("/proc/net/route").exists() else []
    problems = network_overlaps(lab, routes, live.subnets)
    if problems:
        raise PlanError("\n".join(problems))


def _check_cluster_bridges(lab: Lab, live: Live, lxd: Lxd) -> None:
    """LXD 5.0 makes a cluster's bridge only once it is defined on every member (`--target`), which
    `networks:` does not do: say so at plan, not as LXD's "Network not pending on any node" mid-apply."""
    present = live.owned.keys() | live.untagged.keys() | live.foreign.keys()
    new = [name for name in lab.networks if network(name) not in present]
    if new and lxd.clustered:
        raise PlanError("\n".join(
            f"{field_path(('networks', name))}: LXD at {lxd.where} is a cluster, where a bridge needs a definition on every"
            f" member (`lxc network create {name} --target MEMBER`), which reconcile does not make; give the"
            " containers a macvlan NIC on the members' shared LAN, or make the bridge by hand and list it"
            " under existing.networks" for name in new))


def _used_profile(lab: Lab, name: str) -> bool:
    return any(name in c.profiles for c in lab.containers.values())


def _check_conflicts(desired: LabState, live: Live, adopted: set, daemon: str = "LXD") -> None:
    """Refuse to take over an object the lab does not own (unless lab.yaml adopts it), saying which daemon
    (LXD or Incus) holds it."""
    problems = []
    for addr in sorted(desired.keys() & live.foreign.keys() - adopted):
        owner = live.foreign[addr]
        whose = f"lab {owner!r}" if owner else "no lab (it has no user.reconciler.lab tag)"
        how = "list it under adopt: to take it over as it is" if owner is None else "rename it in lab.yaml"
        problems.append(f"{addr} already exists in {daemon} and belongs to {whose}; reconciler will not"
                        f" take it over unasked: {how}, or delete it by hand")
    for addr, want in desired.items():
        prev = want.meta.prev_address
        if prev is not None and addr in live.owned and prev in live.owned:
            problems.append(f"{addr} is declared renamed_from {prev.name}, but both exist: delete one by hand,"
                            " or drop renamed_from")
    if problems:
        raise PlanError("\n".join(problems))


"""LXD containers the lab owns: create, update, replace, rename, move, start, stop, restart.

Settings LXD applies only when a container starts (the "Live update: no" keys, NICs) are
judged on the container's EXPANDED settings, what its profiles bring included: a profile change
restarts the running containers that use it.  The digest of the settings a container last
started with is kept on it (`user.reconciler.boot`), so a restart that did not happen (a crash,
a failed step) is still planned by the next run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..address import Address, Kind, instance, network, profile
from ..errors import LxdError
from ..listeners import UNHEARD_KEY
from ..plan import Action, Change, Code, FieldChange, Reason
from ..source import field_path
from ..state import (
    APPLIED_KEY,
    BOOT_KEY,
    IMAGE_KEY,
    OWNER_KEY,
    RECORD_TAG,
    TARGET_KEY,
    Meta,
    Resource,
    devices_of,
    digest,
    lxd_keys,
    own_config,
)
from .contract import Chosen, LabTable, Scope, Wanted, imported_part

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..spec import Container, Lab
    from .runner import Runner

KIND = Kind.INSTANCE
RANK = 50  # plan order
SHAPE = ("box3d", "#cfe2f3")
ABSENT = "not in {daemon}"  # why a create: what the plan says of one that is not there
COLLECTION = "instances"
PARENT: Kind | None = None
SCOPE = Scope.PROJECT
TABLE = "containers"
LAB_TABLE: LabTable | None = None  # a core table: spec.models has its model
NOUN = "container"
API_EXTENSION = "instances"  # what it needs in GET /1.0's api_extensions ("": the core API)
DEEP_READ = True
REPLACE_FIELDS: tuple[str, ...] = ("type", "image")
# Container keys LXD documents as "Live update: no": accepted at once, effective after a restart.
RESTART_KEYS = ("raw.lxc", "raw.idmap", "raw.seccomp", "security.privileged", "security.idmap.",
                "security.syscalls.", "security.devlxd", "limits.kernel.", "linux.sysctl.", "nvidia.")
STOP_TIMEOUT = 30


# --- desired ----------------------------------------------------------------------------------


def deletable(address: Address) -> bool:
    return True  # what lab.yaml no longer has is deleted

def desired(lab: Lab, wanted: Wanted) -> list[Resource]:
    return [one(lab, name, c, wanted.live_profiles) for name, c in lab.containers.items()]


def one(lab: Lab, name: str, c: Container, live_profiles: Mapping[str, Mapping[str, Any]]) -> Resource:
    devices = {d: dict(sorted(v.items())) for d, v in sorted(c.devices.items())}
    body = {"type": c.type, "image": c.image, "description": c.description, "profiles": list(c.profiles),
            "config": dict(sorted(c.config.items())), "devices": devices, "state": c.state}
    deps = [profile(p) for p in c.profiles if p in lab.profiles]
    # Every network first, not only those named: a macvlan NIC on a bridge's external port (the
    # simulated LAN) needs that bridge's DHCP server up before the container boots.
    deps += [network(n) for n in sorted(lab.networks)]  # what its devices name: added from the registry
    settings, sources = _expanded_boot(lab, c, live_profiles)
    meta = Meta(prev_address=instance(c.renamed_from) if c.renamed_from else None,
                payload={"boot": digest(settings), "boot_settings": settings, "boot_sources": sources,
                         "fixed": fixed_addresses(lab, c)})
    return Resource(instance(name), body, tuple(dict.fromkeys(deps)), meta=meta)


def fixed_addresses(lab: Lab, c: Container) -> dict[str, str]:
    """{interface inside: IPv4} of its NICs with a fixed address (ipv4.address) on a bridge of the lab's
    whose DHCP server leases it: what it should hold once started."""
    devices: dict[str, Mapping[str, str]] = {}
    for name in c.profiles:  # as LXD expands them: profiles in order, then its own
        devices.update(lab.profiles[name].devices if name in lab.profiles else {})
    devices.update(c.devices)
    out = {}
    for device, nic in devices.items():
        net = lab.networks.get(nic.get("network", "")) if nic.get("type") == "nic" else None
        if net is not None and nic.get("ipv4.address") and str(net.config.get("ipv4.dhcp", "true")).lower() != "false":
            out[nic.get("name") or device] = nic["ipv4.address"]
    return out


def _expanded_boot(lab: Lab, c: Container, live_profiles: Mapping[str, Mapping[str, Any]]
                   ) -> tuple[dict, dict[str, str]]:
    """The settings the container starts with, profiles applied in order, and where each comes from."""
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    for name in c.profiles:
        if name in lab.profiles:
            p_config, p_devices = dict(lab.profiles[name].config), dict(lab.profiles[name].devices)
        else:
            raw = live_profiles.get(name) or {}
            p_config, p_devices = own_config(raw.get("config") or {}), devices_of(raw.get("devices"))
        config.update(p_config)
        devices.update(p_devices)
        sources.update({field_path(("config", k)): f"profile {name}" for k in p_config})
        sources.update({field_path(("devices", d)): f"profile {name}" for d in p_devices})
    config.update(c.config)
    devices.update(c.devices)
    sources.update({field_path(("config", k)): "the container" for k in c.config})
    sources.update({field_path(("devices", d)): "the container" for d in c.devices})
    return boot_settings(config, devices), sources


def boot_settings(config: Mapping[str, Any], devices: Mapping[str, Mapping[str, Any]]) -> dict:
    """What a running container only picks up at its next start: restart keys and NICs."""
    return {"config": {k: str(v) for k, v in sorted(config.items()) if k.startswith(RESTART_KEYS)},
            "nics": {d: {k: str(v) for k, v in sorted(dev.items())} for d, dev in sorted(devices.items())
                     if dev.get("type") == "nic"}}


# --- live -------------------------------------------------------------------------------------

def parents(lab: Lab) -> set[str]:
    return set()  # not nested


def named_by_devices(devices: Mapping[str, Mapping[str, str]], lab: Lab | None) -> tuple[Address, ...]:
    return ()  # no device names a container


def comparable(have: Resource, want: Resource | None) -> Resource:
    return have  # LXD keeps what it was given


def from_lxd(raw: Mapping[str, Any]) -> Resource:
    config = raw.get("config") or {}
    devices = devices_of(raw.get("devices"))
    body = {"type": raw.get("type", "container"), "image": config.get(IMAGE_KEY, ""),
            "description": raw.get("description", ""), "profiles": list(raw.get("profiles") or []),
            "config": own_config(config), "devices": devices,
            "state": "running" if raw.get("status") == "Running" else "stopped"}
    deps = [profile(p) for p in body["profiles"]]  # what its devices name: added from the registry
    meta = Meta(location=raw.get("location") or "", placed=config.get(TARGET_KEY) or "",
                has_record=config.get(RECORD_TAG) == "true", never_started=never_started(raw),
                payload={"boot_tag": config.get(BOOT_KEY), "unheard": list(raw.get(UNHEARD_KEY) or []),
                         "boot_live": boot_settings(raw.get("expanded_config") or {}, raw.get("expanded_devices") or {})})
    return Resource(instance(raw["name"]), body, tuple(deps), owner=config.get(OWNER_KEY),
                    applied=config.get(APPLIED_KEY), meta=meta)


# --- compared ---------------------------------------------------------------------------------

def changes(want: Resource, have: Resource, fields: tuple[FieldChange, ...], origin) -> list[Change]:
    """Update, start or stop, and restart when what it starts with moved."""
    actions: list[tuple[Action, Reason]] = []
    settings = _settings(fields)
    if settings:
        actions.append((Action.UPDATE, Reason(Code.DRIFT, "differs: " + ", ".join(f.path for f in settings))))
    wanted, found = want.body["state"], have.body["state"]
    if wanted != found:
        action = Action.START if wanted == "running" else Action.STOP
        actions.append((action, Reason(Code.STATE, f"is {found}, lab.yaml says {wanted}")))
    elif wanted == "running":
        why = restart_reason(want, have)
        if why:
            actions.append((Action.RESTART, why))
    meta = want.meta
    unheard = have.meta.payload.get("unheard") or []
    if unheard and wanted == found == "running" and not any(a == Action.RESTART for a, _ in actions):
        meta = meta.with_payload(replug=list(unheard))  # a restart would start them anyway
        actions = _with_update(actions, _not_listening(unheard, want))
    if not actions:
        return []
    return [Change(want.address, tuple(a for a, _ in actions), tuple(r for _, r in actions), have.body, want.body,
                   fields, origin, meta, want.depends_on)]


def _settings(fields: tuple[FieldChange, ...]) -> tuple[FieldChange, ...]:
    """What an update puts: every field but the power state (a start or stop)."""
    return tuple(f for f in fields if f.path != "state")


def _not_listening(devices: list[str], want: Resource) -> Reason:
    named = ", ".join(f"{field_path(('devices', d))} ({want.body['devices'].get(d, {}).get('listen', 'a profile')})"
                      for d in devices)
    return Reason(Code.NOT_LISTENING, f"nobody listens on this host for {named}: its listener is not running"
                  " (LXD stopped while the container started, or the process was killed); unplugged and plugged in"
                  " again, it starts")


def _with_update(actions: list[tuple[Action, Reason]], why: Reason) -> list[tuple[Action, Reason]]:
    """An update that plugs proxy devices in again, joined to one the settings already need."""
    for i, (action, reason) in enumerate(actions):
        if action == Action.UPDATE:
            return [*actions[:i], (action, Reason(reason.code, f"{reason.text}; {why.text}")), *actions[i + 1:]]
    return [(Action.UPDATE, why), *actions]


def restart_reason(want: Resource, have: Resource) -> Reason | None:
    """Why a running container must restart for its settings to take effect, or None."""
    new, live = want.meta.payload["boot_settings"], have.meta.payload.get("boot_live") or {}
    moved = [field_path(("config", k)) for k in sorted(set(new["config"]) | set(live.get("config", {})))
             if new["config"].get(k) != live.get("config", {}).get(k)]
    moved += [field_path(("devices", d)) for d in sorted(set(new["nics"]) | set(live.get("nics", {})))
              if new["nics"].get(d) != live.get("nics", {}).get(d)]
    if moved:
        sources = want.meta.payload.get("boot_sources", {})
        named = ", ".join(f"{m} ({sources[m]})" if m in sources else m for m in moved)
        return Reason(Code.RESTART_SETTINGS, f"{named} take effect only after a restart")
    tag = have.meta.payload.get("boot_tag")
    if tag and tag != want.meta.payload["boot"]:
        return Reason(Code.RESTART_PENDING, "settings applied earlier take effect only after a restart,"
                      " and it has not restarted since")
    return None


# --- applied ----------------------------------------------------------------------------------

def apply(run: Runner, change: Change, action: Action) -> None:
    name = change.address.name
    if action == Action.DELETE:
        return remove(run, name)
    if action == Action.RENAME:
        return rename(run, _previous_name(change), name)
    if action == Action.ADOPT:
        return adopt(run, name, change)
    if action == Action.REPLACE:
        remove(run, name)
        return create(run, name, change)
    if action == Action.CREATE:
        return create(run, name, change)
    if action == Action.UPDATE:
        if _settings(change.diff):
            update(run, name, change)
        return replug(run, name, change.meta.payload.get("replug") or [])
    if action == Action.MOVE:
        return move(run, name, change)
    if action == Action.STOP:
        stop(run, name)
    elif action == Action.START:
        start(run, name, change)
        holds_fixed_addresses(run, name, change)
    elif action == Action.RESTART:
        stop(run, name)
        run.lxd.set_state(name, "start")
        holds_fixed_addresses(run, name, change)
    record(run, name, change, booted=action != Action.STOP)


FIXED_WAIT = 30.0  # seconds a started container has to be leased its fixed addresses


def holds_fixed_addresses(run: Runner, name: str, change: Change) -> None:
    """After a start: each NIC with a fixed address holds it (waited for, bounded), or the report says what
    it holds instead.  LXD's DHCP server gives the fixed address only to the NIC's present MAC, and keeps it
    from a NIC while a lease of it to another MAC lasts (this NIC's own, before a change of its type gave it
    a new one): the container then runs on a dynamic address, and a forward or a server aimed at the fixed
    one misses it, which nothing else would show."""
    fixed: Mapping[str, str] = change.meta.payload.get("fixed") or {}
    if not fixed:
        return  # nothing to wait for: no extra read of its state
    deadline = time.monotonic() + FIXED_WAIT
    held = run.lxd.addresses(name)
    while any(held.get(i) != a for i, a in fixed.items()) and time.monotonic() < deadline:
        time.sleep(0.5)
        held = run.lxd.addresses(name)
    for interface, address in sorted(fixed.items()):
        if held.get(interface) != address:
            run.warn(f"instance.{name}: {interface} holds {held.get(interface) or 'no address'}, not its fixed"
                     f" {address}, {FIXED_WAIT:.0f}s after its start: the network's DHCP server leased it another"
                     f" (the network's leases say who holds {address}; a lease of it to an earlier MAC of this"
                     " NIC lasts until it expires, an hour by default)")


def never_started(raw: Mapping[str, Any]) -> bool:
    """LXD records a container's power state once it has run (a creation a crash cut short has not)."""
    return "volatile.last_state.power" not in (raw.get("config") or {})


def start(run: Runner, name: str, change: Change) -> None:
    """Start it; one that never ran and cannot start, a crash cut its creation short: make it again."""
    try:
        run.lxd.set_state(name, "start")
    except LxdError as err:
        raw, _ = run.lxd.get("instance", name)
        if not (never_started(raw) and change.meta.payload.get("source")):
            raise
        run.warn(f"instance.{name}: it never ran and does not start ({err}): its creation was cut short"
                 " (a crash?); made again")
        remove(run, name)
        create(run, name, change)


def create(run: Runner, name: str, change: Change) -> None:
    want = change.after or {}
    target = change.meta.payload.get("target")  # None: where LXD places it (not a cluster, or its target is away)
    placed = {TARGET_KEY: target} if target else {}
    config = {**want["config"], **tags(run, want), BOOT_KEY: change.meta.payload["boot"], **placed}
    run.lxd.create("instance", {"name": name, "type": want["type"], "source": change.meta.payload["source"],
                                "profiles": want["profiles"], "config": config,
                                "devices": want["devices"], "description": want["description"]}, target)
    if want["state"] == "running":
        run.lxd.set_state(name, "start")
        holds_fixed_addresses(run, name, change)


def tags(run: Runner, want: Mapping[str, Any]) -> dict[str, str]:
    return {OWNER_KEY: run.lab_name, IMAGE_KEY: want["image"], APPLIED_KEY: digest(want)}


def update(run: Runner, name: str, change: Change) -> None:
    raw, etag = run.fresh(change)
    want = change.after or {}
    kept = {k: v for k, v in (raw.get("config") or {}).items() if k in (BOOT_KEY, RECORD_TAG, TARGET_KEY)}
    body = {"architecture": raw["architecture"], "ephemeral": raw["ephemeral"], "profiles": want["profiles"],
            "devices": want["devices"], "description": want["description"],
            "config": {**lxd_keys(raw.get("config") or {}), **want["config"], **kept, **tags(run, want)}}
    run.lxd.put("instance", name, body, etag)


def replug(run: Runner, name: str, devices: list[str]) -> None:
    """Unplug these devices of a running container, then plug them in again: LXD stops them, then starts
    them (a proxy device's listener).  Each is masked by a device of type none, which also unplugs one its
    profiles bring.  A crash in between leaves the mask, which the next plan sees as drift and takes away."""
    if not devices:
        return
    raw, etag = run.lxd.get(KIND.value, name)
    own = raw.get("devices") or {}
    run.lxd.put(KIND.value, name, _body(raw, {**own, **{d: {"type": "none"} for d in devices}}), etag)
    raw, etag = run.lxd.get(KIND.value, name)
    run.lxd.put(KIND.value, name, _body(raw, own), etag)


def _body(raw: Mapping[str, Any], devices: Mapping[str, Any]) -> dict[str, Any]:
    return {"architecture": raw["architecture"], "ephemeral": raw["ephemeral"], "profiles": raw["profiles"],
            "devices": devices, "description": raw.get("description", ""), "config": raw.get("config") or {}}


def adopt(run: Runner, name: str, change: Change) -> None:
    """Tag it as the lab's, as it is: the settings it runs with count as the ones it started with."""
    raw, _ = run.fresh(change)
    want = change.after or {}
    run.lxd.patch("instance", name, {"config": {**tags(run, want), BOOT_KEY: change.meta.payload["boot"]},
                                     "description": raw.get("description", "")})


def record(run: Runner, name: str, change: Change, booted: bool) -> None:
    """After a start, stop or restart: what was applied, and what it now runs with."""
    want = change.after or {}
    config = {APPLIED_KEY: digest(want), **({BOOT_KEY: change.meta.payload["boot"]} if booted else {})}
    run.lxd.patch("instance", name, {"config": config, "description": want.get("description", "")})


def move(run: Runner, name: str, change: Change) -> None:
    """To another cluster member, cold as LXD 5.0 moves containers: stopped, moved, started again if it ran."""
    raw, _ = run.lxd.get("instance", name)
    member = change.meta.payload["member"]
    running = raw.get("status") == "Running"
    if raw.get("location") != member:
        if running:
            stop(run, name)
        run.lxd.move(name, member)
        if running:
            run.lxd.set_state(name, "start")
    booted = {BOOT_KEY: change.meta.payload["boot"]} if running else {}  # it started with what lab.yaml says now
    run.lxd.patch("instance", name, {"config": {TARGET_KEY: change.meta.payload["target"], **booted},
                                     "description": raw.get("description", "")})


def remove(run: Runner, name: str) -> None:
    raw, _ = run.lxd.get("instance", name)
    if raw.get("status") == "Running":
        run.lxd.set_state(name, "stop", force=True)
    run.lxd.delete("instance", name)


def _previous_name(change: Change) -> str:
    prev = change.meta.prev_address
    if prev is None:
        raise ValueError(f"{change.address}: a rename with no previous address")
    return prev.name


def rename(run: Runner, old: str, new: str) -> None:
    """LXD renames only a stopped container: stop, rename, start again if it ran."""
    raw, _ = run.lxd.get("instance", old)
    running = raw.get("status") == "Running"
    if running:
        stop(run, old)
    run.lxd.rename("instance", old, new)
    if running:
        run.lxd.set_state(new, "start")


def stop(run: Runner, name: str) -> None:
    try:
        run.lxd.set_state(name, "stop", timeout=STOP_TIMEOUT)
    except LxdError:
        if _stopped(run, name):
            return  # it stopped meanwhile, as asked (seen: killed for a lower limits.memory just applied)
        run.lxd.set_state(name, "stop", force=True)  # it did not shut down cleanly in time


def _stopped(run: Runner, name: str) -> bool:
    return run.lxd.get(KIND.value, name)[0].get("status") == "Stopped"


# --- imported ---------------------------------------------------------------------------------

def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    """The chosen containers, as they are (import refused beforehand any that a lab owns)."""
    return imported_part(TABLE, {i["name"]: _declared(i, raw.images) for i in chosen.instances}, [])


def _declared(raw: Mapping[str, Any], images: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": _image(raw, images)}
    if raw.get("type", "container") != "container":
        out["type"] = raw["type"]
    if raw.get("description"):
        out["description"] = raw["description"]
    out["profiles"] = list(raw.get("profiles") or [])
    for key, value in (("config", own_config(raw.get("config") or {})), ("devices", devices_of(raw.get("devices")))):
        if value:
            out[key] = value
    out["state"] = "running" if raw.get("status") == "Running" else "stopped"
    return out


def _image(raw: Mapping[str, Any], images: list[dict]) -> str:
    """The alias of the image it was made from, else that image's fingerprint."""
    fingerprint = (raw.get("config") or {}).get("volatile.base_image", "")
    for image in images:
        if image["fingerprint"] == fingerprint and image.get("aliases"):
            return str(image["aliases"][0]["name"])
    return fingerprint[:16] or "unknown"

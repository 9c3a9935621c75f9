"""Services (systemd units) inside a container: enabled, running, holding their ports.

A service reloads or restarts when a file it watches changes.  A reload returns before the new
processes bind, so when a service lists ports it must hold, apply waits (bounded) until its own
processes hold them, and fails with the service's log otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..address import Address, Kind, file, service
from ..admin_socket import answering_worker, wait_for_new_worker
from ..facts import Facts
from ..haproxy.runtime import RELOAD
from ..journal import log_of
from ..plan import Action, Change, Code, Origin, Reason
from ..state import Body, LabState, Meta, Resource

if TYPE_CHECKING:
    from ..lxd import RawState
    from ..provision import ServiceSpec
    from .contract import Chosen
    from .runner import Runner

KIND = Kind.SERVICE
RANK = 80  # plan order
SHAPE = ("ellipse", "#fce5cd")
ABSENT = "not set up"  # why a create: what the plan says of one that is not there
REPLACE_FIELDS: tuple[str, ...] = ()
PORT_TIMEOUT = 15.0


def deletable(address: Address) -> bool:
    """A service lab.yaml drops is left as it is (running or not)."""
    return False


def body(spec: ServiceSpec) -> Body:
    out: Body = {"enabled": spec.enabled, "running": spec.running}
    if spec.running and spec.listens:
        out["listening"] = list(spec.listens)
    return out


def meta(spec: ServiceSpec, admin_socket: str = "") -> Meta:
    """`admin_socket`: HAProxy's, for the HAProxy service, whose reload is done once a new worker answers it."""
    payload: dict[str, Any] = {"watches": list(spec.watches), "on_change": spec.on_change}
    if admin_socket:
        payload["admin_socket"] = admin_socket
    return Meta(payload=payload)


def from_facts(container: str, facts: Facts, specs: Mapping[str, ServiceSpec]) -> list[Resource]:
    out = []
    for name, spec in specs.items():
        found: Body = dict(facts.services.get(name, {"enabled": False, "running": False}))
        if spec.listens and found["running"]:
            found["listening"] = sorted(facts.listening.get(name, []))
        out.append(Resource(service(container, name), found))
    return out


def triggers(desired: LabState, changes: Iterable[Change]) -> list[Change]:
    """A running service reloads or restarts after a file it watches changes, after any other change
    to it: one already running (e.g. started by its package) must still pick the new file up."""
    by_address = {c.address: c for c in changes if c.address.kind == Kind.FILE}
    out = []
    for res in desired.values():
        if res.address.kind != Kind.SERVICE or not res.body.get("running"):
            continue
        hits = [by_address[a] for a in watched(res) if a in by_address
                and Action.CONVERGE not in by_address[a].actions]
        if hits:
            action = Action.RELOAD if res.meta.payload.get("on_change") == "reload" else Action.RESTART
            origins = {c.origin for c in hits}
            out.append(Change(res.address, (action,), (Reason(Code.WATCHED_FILE, ", ".join(
                c.address.key for c in hits) + " changed"),), None, res.body,
                origin=origins.pop() if len(origins) == 1 else Origin.BOTH, meta=res.meta,
                depends_on=tuple(dict.fromkeys(res.depends_on + tuple(c.address for c in hits)))))
    return out


def watched(res: Resource) -> list[Address]:
    return [file(res.address.name, path) for path in res.meta.payload.get("watches", [])]


# --- applied ----------------------------------------------------------------------------------

def apply(run: Runner, change: Change, action: Action) -> bool:
    container, name = change.address.name, change.address.key
    want = change.after or {}
    ports = want.get("listening", [])
    have = state(run, container, name, ports)
    trigger = action.word if action in (Action.RELOAD, Action.RESTART) else None
    if action == Action.CONVERGE and any(a in run.changed for a in watched_addresses(change)):
        trigger = change.meta.payload.get("on_change", "restart")  # a watched file was written in this run
    if have and have.get("running") and have.get("listening", ports) != ports:
        trigger = trigger or change.meta.payload.get("on_change", "restart")  # running, but not on its ports
    argvs = argvs_for(name, want, have, trigger)
    admin_socket = str(change.meta.payload.get("admin_socket", ""))  # HAProxy's: its reload has an old worker
    old_worker = answering_worker(run, container, admin_socket) if admin_socket and RELOAD in argvs else None
    for argv in argvs:
        run.exec(container, argv, " ".join(argv))
    if ports and want.get("running"):
        wait_for_ports(run, container, name, ports)  # first: a port it cannot bind is said with its log
    if old_worker is not None:
        wait_for_new_worker(run, container, admin_socket, old_worker)
    return bool(argvs)


def watched_addresses(change: Change) -> list[Address]:
    return [file(change.address.name, path) for path in change.meta.payload.get("watches", [])]


def argvs_for(name: str, want: Body, have: Body | None, trigger: str | None) -> list[list[str]]:
    """systemctl commands taking a service from `have` to `want`; `trigger` is reload or restart."""
    have = have or {"enabled": False, "running": False}
    out = []
    if want["enabled"] != have["enabled"]:
        out.append(["systemctl", "enable" if want["enabled"] else "disable", "--quiet", "--", name])
    if want["running"] and not have["running"]:
        out.append(["systemctl", "start", "--", name])
    elif not want["running"] and have["running"]:
        out.append(["systemctl", "stop", "--", name])
    elif want["running"] and trigger:
        out.append(["systemctl", trigger, "--", name])
    return out


def state(run: Runner, container: str, name: str, ports: list[int]) -> Body | None:
    run.facts(container)  # waits for the boot to finish, once per container
    found = run.read(container, services=(name,), listens={name: ports} if ports else None)
    if name not in found.services:
        return None
    return {**found.services[name], "listening": sorted(found.listening.get(name, []))}


def wait_for_ports(run: Runner, container: str, name: str, ports: list[int]) -> None:
    """A reload returns before the new processes bind: wait, bounded, for the ports to be theirs."""
    deadline = time.monotonic() + PORT_TIMEOUT
    while (state(run, container, name, ports) or {}).get("listening") != ports:
        if time.monotonic() > deadline:
            raise run.step_error(f"{name} does not hold port(s) {', '.join(map(str, ports))} after"
                                 f" {PORT_TIMEOUT:.0f}s; its log:\n  " + "\n  ".join(log_of(run, container, name)))
        time.sleep(0.5)


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    return {}  # what runs inside a container is not read by import

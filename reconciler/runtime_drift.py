"""HAProxy's runtime state against lab.yaml.  Pure.

The facts exec of each HAProxy container also asks its admin socket `show servers state`.  A server whose
weight is not lab.yaml's (HAProxy's default 1), or whose admin state is `maint` or `drain` although apply
is not draining it, was set so by hand through the socket: drift, shown as an update of
`server.PROXY:BACKEND/SERVER` (cost `runtime`) that apply puts back through the socket, without a reload.

What the plan does anyway is not drift: a reload or restart of HAProxy puts every server back to
haproxy.cfg (no server-state file carries the runtime state over), a weight haproxy.cfg changes goes live
with the file (`Plan.runtime`), a server a step drains is set ready again by that step, and a container
lab.yaml wants stopped keeps its servers drained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .address import Kind, file, instance, server, service
from .disruption import without_step
from .facts import Facts
from .haproxy import CONFIG_PATH
from .haproxy.runtime import ADD, DEL, ServerState, parse_servers_state
from .kinds.server import IN_HAPROXY
from .plan import Action, Change, Code, FieldChange, Origin, Plan, Reason, Step
from .spec import Lab
from .state import Meta

States = dict[tuple[str, str], ServerState]  # (backend, server) -> what HAProxy reports
_RESTARTS_HAPROXY = {Kind.INSTANCE: {Action.DELETE, Action.RENAME, Action.REPLACE, Action.STOP, Action.MOVE,
                                     Action.RESTART},
                     Kind.SERVICE: {Action.STOP, Action.START, Action.RESTART}}


def read(lab: Lab, facts: Mapping[str, Facts]) -> tuple[dict[str, States], list[str]]:
    """Each read HAProxy container's servers as its admin socket reported them, and a note for each one
    whose socket could not be asked (HAProxy down): the plan goes on without its runtime state."""
    found, notes = {}, []
    for proxy in sorted(lab.haproxy.keys() & facts.keys()):
        answer = facts[proxy].runtime
        try:
            if answer is None:
                raise ValueError(facts[proxy].no_runtime or "it was not asked")
            found[proxy] = parse_servers_state(answer)
        except ValueError as why:
            notes.append(f"{proxy}: HAProxy's runtime state could not be read ({why}); servers changed by hand"
                         " through its admin socket are not seen")
    return found, notes


def drifted(lab: Lab, found: Mapping[str, States]) -> list[Change]:
    """An update for each server of lab.yaml whose runtime weight or admin state differs from lab.yaml's, and
    for each server HAProxy runs without (or with) although lab.yaml names it (or not): a reload puts
    haproxy.cfg's servers back, where no other step of the plan does (settled)."""
    out = []
    for proxy, states in sorted(found.items()):
        spec = lab.haproxy[proxy]
        socket = spec.global_.stats_socket
        named = {(bname, srv.label) for bname, backend in spec.backends.items() for srv in backend.servers}
        for bname, backend in spec.backends.items():
            for srv in backend.servers:
                have = states.get((bname, srv.label))
                if have is None:
                    out.append(_update(proxy, socket, bname, srv.label, *_presence(False)))
                    continue
                want: dict[str, object] = {"weight": 1 if srv.weight is None else srv.weight, "state": "ready"}
                now: dict[str, object] = {"weight": have.weight, "state": have.state}
                if lab.containers[srv.container].state != "running":
                    del want["state"], now["state"]  # apply left its servers drained when it stopped it
                fields = tuple(FieldChange(k, now[k], want[k]) for k in want if now[k] != want[k])
                if fields:
                    out.append(_update(proxy, socket, bname, srv.label, now, want, fields))
        out += [_update(proxy, socket, b, s, *_presence(True)) for b, s in sorted(states.keys() - named)]
    return out


def _presence(running: bool) -> tuple[dict, dict, tuple[FieldChange, ...]]:
    """A server HAProxy runs (`running`) that lab.yaml does not name, or the other way round."""
    return {IN_HAPROXY: running}, {IN_HAPROXY: not running}, (FieldChange(IN_HAPROXY, running, not running),)


def _update(proxy: str, socket: str, backend: str, name: str, now: dict, want: dict,
            fields: tuple[FieldChange, ...]) -> Change:
    return Change(server(proxy, backend, name), (Action.UPDATE,), (_reason(fields),), now, want, fields,
                  Origin.OUTSIDE, Meta(payload={"socket": socket}),
                  depends_on=(file(proxy, CONFIG_PATH), service(proxy, "haproxy")))


def _reason(fields: tuple[FieldChange, ...]) -> Reason:
    return Reason(Code.DRIFT, "HAProxy's runtime state differs: " + ", ".join(f.path for f in fields))


def settled(plan: Plan) -> Plan:
    """The plan without the server drift that its other steps put back anyway (see the module's doc)."""
    for change in [c for c in plan.changes if c.address.kind == Kind.SERVER]:
        gone = _put_back_anyway(plan, change)
        kept = tuple(f for f in change.diff if f.path not in gone)
        if kept == change.diff:
            continue
        if not kept:
            plan = without_step(plan, Step(change.address, Action.UPDATE))
            continue
        paths = {f.path for f in kept}
        narrowed = replace(change, reasons=(_reason(kept),), diff=kept,
                           before={k: v for k, v in (change.before or {}).items() if k in paths},
                           after={k: v for k, v in (change.after or {}).items() if k in paths})
        plan = replace(plan, changes=tuple(narrowed if c is change else c for c in plan.changes))
    return plan


def _put_back_anyway(plan: Plan, change: Change) -> set[str]:
    """The fields of a server's runtime state that other steps of the plan set as lab.yaml says."""
    proxy, key = change.address.name, change.address.key
    actions = {kind: set(c.actions) for kind, c in ((k, plan.change_at(a)) for k, a in (
        (Kind.INSTANCE, instance(proxy)), (Kind.SERVICE, service(proxy, "haproxy")))) if c is not None}
    if any(actions.get(kind, set()) & restarts for kind, restarts in _RESTARTS_HAPROXY.items()):
        return {"weight", "state", IN_HAPROXY}  # a new HAProxy process starts from haproxy.cfg
    out = {"weight", "state", IN_HAPROXY} if Action.RELOAD in actions.get(Kind.SERVICE, set()) else set()
    out |= {IN_HAPROXY if r.field in (ADD, DEL) else r.field for sets in plan.runtime.values() for r in sets
            if r.proxy == proxy and f"{r.backend}/{r.server}" == key}
    out |= {"state" for drains in plan.drains.values() for d in drains if d.proxy == proxy and str(d) == key}
    return out

"""Steps that take a container away from HAProxy, planned so that requests do not notice.  Pure.

A container backs the HAProxy servers lab.yaml's `haproxy:` section points at it.  A step that restarts,
stops, moves or replaces it (or restarts a service in it, or installs a package in it once it serves: the
package's scripts may restart its service) drains those servers first (`Plan.drains`, which
apply carries out through HAProxy's admin socket), and such steps that share a backend run one after
another, whatever --parallelism says: an edge in the step graph, so every order the graph allows (shuffled
ones too) keeps one server of each backend up.  A backend whose only server is taken away is a warning.

Where haproxy.cfg changes only in what HAProxy's runtime API can set (servers added or removed, their
addresses, weights and maxconn), the file is written and the changes go live through the socket
(`Plan.runtime`) instead of a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .address import Kind, file, service
from .haproxy import CONFIG_PATH, HAProxy
from .haproxy.runtime import ADD, ADDR, DEL, server_deltas
from .haproxy.words import seconds
from .kinds.file import UNKNOWN
from .plan import Action, Drain, Plan, RuntimeSet, Step

# The steps that take a container away, and what becomes of its servers after the step (Drain.then).  A
# replaced container is provisioned by later steps: its health checks bring it in once it serves.
# A package installed where a server already serves is drained too: its maintainer scripts may restart the
# service (an Apache module's restarts apache2), and they do not say beforehand whether they will.
_AWAY = {(Kind.INSTANCE, Action.RESTART): "ready", (Kind.INSTANCE, Action.MOVE): "ready",
         (Kind.INSTANCE, Action.STOP): "away", (Kind.INSTANCE, Action.REPLACE): "checks",
         (Kind.SERVICE, Action.RESTART): "ready", (Kind.PACKAGE, Action.CREATE): "ready"}
_NEW = (Action.CREATE, Action.REPLACE)  # a container these make serves nothing before its packages
_WORDS = {Action.RESTART: "restarts", Action.MOVE: "moves", Action.STOP: "is stopped", Action.REPLACE: "is replaced",
          Action.CREATE: "is installed"}


def served_by(haproxy: Mapping[str, HAProxy]) -> dict[str, list[Drain]]:
    """Container -> the HAProxy servers it backs (one Drain each), in lab.yaml's order."""
    out: dict[str, list[Drain]] = {}
    for proxy, spec in haproxy.items():
        for bname, backend in spec.backends.items():
            for server in backend.servers:
                out.setdefault(server.container, []).append(Drain(
                    proxy, spec.global_.stats_socket, bname, server.label, server.port,
                    backend.health_check is not False, seconds(backend.drain_timeout),
                    seconds(backend.ready_timeout)))
    return out


def drains(steps: list[Step], served: Mapping[str, list[Drain]]) -> dict[Step, tuple[Drain, ...]]:
    """The servers each step takes away."""
    out = {}
    new = {s.address.name for s in steps if s.address.kind == Kind.INSTANCE and s.action in _NEW}
    for step in steps:
        then = _AWAY.get((step.address.kind, step.action))
        container = step.address.name
        if step.address.kind == Kind.PACKAGE and container in new:
            continue
        if then is not None and served.get(container):
            out[step] = tuple(replace(d, then=then) for d in served[container])
    return out


def one_at_a_time(graph: Mapping[Step, frozenset[Step]], drained: Mapping[Step, tuple[Drain, ...]]
                  ) -> dict[Step, frozenset[Step]]:
    """`graph` with the steps that drain servers of one backend chained, in address order (or the order
    the graph already has between them), so that at most one server of a backend is away at a time."""
    out = {s: set(w) for s, w in graph.items()}
    by_backend: dict[tuple[str, str], list[Step]] = {}
    for step in sorted(drained, key=Step.sort_key):
        for d in drained[step]:
            by_backend.setdefault((d.proxy, d.backend), []).append(step)
    for chain in by_backend.values():
        for first, then in zip(chain, chain[1:]):
            if first == then or _waits_for(out, then, first) or _waits_for(out, first, then):
                continue
            out[then].add(first)
    return {s: frozenset(w) for s, w in out.items()}


def deleted_last(graph: Mapping[Step, frozenset[Step]], haproxy: Mapping[str, HAProxy]
                 ) -> dict[Step, frozenset[Step]]:
    """`graph` with each container deletion after HAProxy's new haproxy.cfg (its servers removed through the
    runtime API, drained first) and its reload: HAProxy stops sending a container requests before it goes.
    Where the graph already orders them the other way, it is left as it is (never a cycle)."""
    out = {s: set(w) for s, w in graph.items()}
    haproxy_steps = [s for s in graph if s.address.name in haproxy and (
        s == Step(file(s.address.name, CONFIG_PATH), Action.UPDATE)
        or s == Step(service(s.address.name, "haproxy"), Action.RELOAD))]
    for step in graph:
        if step.address.kind != Kind.INSTANCE or step.action != Action.DELETE or step.address.name in haproxy:
            continue
        for first in haproxy_steps:
            if not _waits_for(out, first, step):
                out[step].add(first)
    return {s: frozenset(w) for s, w in out.items()}


def _waits_for(graph: Mapping[Step, set[Step]], step: Step, other: Step) -> bool:
    """Whether `step` already waits, directly or not, for `other`."""
    seen, todo = set(), [step]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep == other:
                return True
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return False


def alone(haproxy: Mapping[str, HAProxy], drained: Mapping[Step, tuple[Drain, ...]]) -> list[str]:
    """A warning for each backend whose only server a step takes away."""
    out = []
    for step, servers in sorted(drained.items(), key=lambda kv: kv[0].sort_key()):
        for d in servers:
            backend = haproxy[d.proxy].backends[d.backend]
            if len(backend.servers) == 1:
                what = step.address.name if step.address.kind == Kind.INSTANCE else \
                    f"{step.address.name}'s {step.address.key}"
                out.append(f"{d.backend} has no other server: requests fail while {what}"
                           f" {_WORDS.get(step.action, step.action.word)}")
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class StandIn:
    """A proxy's haproxy.cfg as plan renders it with a stand-in address for each container whose new address
    only apply will know (runtime.stand_ins): what the file is, but for those servers' addresses."""

    config: str
    addresses: Mapping[str, str]  # container -> its stand-in


def planned(plan: Plan, haproxy: Mapping[str, HAProxy], stand_in: Mapping[str, StandIn] | None = None) -> Plan:
    """The plan with its drains, the one-at-a-time edges and the warnings, and HAProxy's runtime API
    instead of a reload where haproxy.cfg changes only in its servers: added, removed, their addresses,
    weights and maxconn (`stand_in`: proxy -> its haproxy.cfg rendered with stand-ins for the addresses
    only apply will know)."""
    plan = without_reloads(plan, haproxy, stand_in or {})
    plan = replace(plan, graph=deleted_last(plan.graph, haproxy))
    drained = drains(list(plan.graph), served_by(haproxy))
    if not drained:
        return plan
    return replace(plan, graph=one_at_a_time(plan.graph, drained), drains=drained,
                   warnings=plan.warnings + tuple(alone(haproxy, drained)))


def without_reloads(plan: Plan, haproxy: Mapping[str, HAProxy], stand_in: Mapping[str, StandIn]) -> Plan:
    """Where haproxy.cfg changes only in what the runtime API can set: the file is still written (a restart
    finds the same state), the settings go live through the runtime API, and HAProxy is not reloaded."""
    for proxy, spec in haproxy.items():
        config_change = plan.change_at(file(proxy, CONFIG_PATH))
        reload = Step(service(proxy, "haproxy"), Action.RELOAD)
        svc = plan.change_at(reload.address)
        if config_change is None or svc is None or config_change.actions != (Action.UPDATE,) \
                or Action.RELOAD not in svc.actions or svc.reason_for(Action.RELOAD).text != f"{CONFIG_PATH} changed" \
                or config_change.secret:
            continue
        before, after = ((config_change.before or {}).get("content"), (config_change.after or {}).get("content"))
        if not isinstance(before, str) or not isinstance(after, str) or before == UNKNOWN:
            continue
        config = after if after != UNKNOWN else stand_in[proxy].config if proxy in stand_in else None
        found = settings(proxy, spec, before, config) if config is not None else None
        if found:
            step = Step(config_change.address, Action.UPDATE)
            plan = replace(without_step(plan, reload), runtime={**plan.runtime, step: found})
    return plan


def settings(proxy: str, spec: HAProxy, before: str, after: str) -> tuple[RuntimeSet, ...] | None:
    """What takes HAProxy from the live haproxy.cfg `before` to `after` (rendered with stand-ins where a
    container's new address only apply will know) through its runtime API; None where a reload is needed.
    A server's address and an added server's line are those apply writes, read from the file then."""
    deltas = server_deltas(before, after)
    if deltas is None:
        return None
    servers = {(bname, s.label): s for bname, backend in spec.backends.items() for s in backend.servers}
    socket, out = spec.global_.stats_socket, []
    for d in deltas:
        if d.field in (ADDR, ADD):
            server = servers[(d.backend, d.server)]  # `after` is rendered from lab.yaml: it names only its servers
            out.append(RuntimeSet(proxy, socket, d.backend, d.server, d.field, server.port, server.container))
        elif d.field == DEL:
            wait = seconds(spec.backends[d.backend].drain_timeout)  # its `backend` line is in both: lab.yaml has it
            out.append(RuntimeSet(proxy, socket, d.backend, d.server, DEL, max(1, round(wait))))
        else:
            out.append(RuntimeSet(proxy, socket, d.backend, d.server, d.field, int(d.value)))
    return tuple(out)


def without_step(plan: Plan, gone: Step) -> Plan:
    """The plan without one step; what waited for it waits for what it waited for."""
    change = plan.change_at(gone.address)
    assert change is not None
    kept = [(a, r) for a, r in zip(change.actions, change.reasons) if a != gone.action]
    changes = [c for c in plan.changes if c is not change]
    if kept:
        changes.append(replace(change, actions=tuple(a for a, _ in kept), reasons=tuple(r for _, r in kept)))
    graph = {s: frozenset(w - {gone}) | (plan.graph[gone] if gone in w else frozenset())
             for s, w in plan.graph.items() if s != gone}
    return replace(plan, changes=tuple(sorted(changes, key=lambda c: c.address.sort_key())), graph=graph)

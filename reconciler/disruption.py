"""Steps that take a container away from HAProxy, planned so that requests do not notice.  Pure.

A container backs the HAProxy servers lab.yaml's `haproxy:` section points at it.  A step that restarts,
stops, moves or replaces it (or restarts a service in it) drains those servers first (`Plan.drains`, which
apply carries out through HAProxy's admin socket), and such steps that share a backend run one after
another, whatever --parallelism says: an edge in the step graph, so every order the graph allows (shuffled
ones too) keeps one server of each backend up.  A backend whose only server is taken away is a warning.

Where haproxy.cfg changes only in what HAProxy's runtime API can set (servers' weights and maxconn, or the
addresses of servers whose containers get a new one), the file is written and the settings go live through
the socket (`Plan.runtime`) instead of a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .address import Kind, file, service
from .haproxy import CONFIG_PATH, HAProxy
from .haproxy.runtime import addresses_only, runtime_only
from .haproxy.words import seconds
from .kinds.file import UNKNOWN
from .plan import ADDR, Action, Drain, Plan, RuntimeSet, Step

# The steps that take a container away, and what becomes of its servers after the step (Drain.then).  A
# replaced container is provisioned by later steps: its health checks bring it in once it serves.
_AWAY = {(Kind.INSTANCE, Action.RESTART): "ready", (Kind.INSTANCE, Action.MOVE): "ready",
         (Kind.INSTANCE, Action.STOP): "away", (Kind.INSTANCE, Action.REPLACE): "checks",
         (Kind.SERVICE, Action.RESTART): "ready"}
_WORDS = {Action.RESTART: "restarts", Action.MOVE: "moves", Action.STOP: "is stopped", Action.REPLACE: "is replaced"}


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
    for step in steps:
        then = _AWAY.get((step.address.kind, step.action))
        container = step.address.name
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
    instead of a reload where only servers' weights or maxconn change, or only the addresses of servers whose
    containers get a new one (`stand_in`: proxy -> its haproxy.cfg rendered with stand-ins for those)."""
    plan = without_reloads(plan, haproxy, stand_in or {})
    drained = drains(list(plan.graph), served_by(haproxy))
    if not drained:
        return plan
    return replace(plan, graph=one_at_a_time(plan.graph, drained), drains=drained,
                   warnings=plan.warnings + tuple(alone(haproxy, drained)))


def without_reloads(plan: Plan, haproxy: Mapping[str, HAProxy], stand_in: Mapping[str, StandIn]) -> Plan:
    """Where haproxy.cfg changes only in what the runtime API can set: the file is still written (a restart
    finds the same state), the settings go live through the runtime API, and HAProxy is not reloaded."""
    for proxy, spec in haproxy.items():
        config = plan.change_at(file(proxy, CONFIG_PATH))
        reload = Step(service(proxy, "haproxy"), Action.RELOAD)
        svc = plan.change_at(reload.address)
        if config is None or svc is None or config.actions != (Action.UPDATE,) or Action.RELOAD not in svc.actions \
                or svc.reason_for(Action.RELOAD).text != f"{CONFIG_PATH} changed" or config.secret:
            continue
        before, after = ((config.before or {}).get("content"), (config.after or {}).get("content"))
        if not isinstance(before, str) or not isinstance(after, str) or before == UNKNOWN:
            continue
        found = settings(proxy, spec, before, after) if after != UNKNOWN else \
            new_addresses(proxy, spec, before, stand_in[proxy]) if proxy in stand_in else None
        if found:
            step = Step(config.address, Action.UPDATE)
            plan = replace(without_step(plan, reload), runtime={**plan.runtime, step: found})
    return plan


def settings(proxy: str, spec: HAProxy, before: str, after: str) -> tuple[RuntimeSet, ...] | None:
    """The weights and maxconns that take HAProxy from haproxy.cfg `before` to `after`; None if more differs."""
    sets = runtime_only(before, after)
    return None if sets is None else tuple(
        RuntimeSet(proxy, spec.global_.stats_socket, b, s, f, v) for b, s, f, v in sets)


def new_addresses(proxy: str, spec: HAProxy, before: str, stand_in: StandIn) -> tuple[RuntimeSet, ...] | None:
    """An address for each server of the containers that get a new one, when the live haproxy.cfg `before`
    differs from what apply will write in nothing but those servers' addresses; else None."""
    moved = addresses_only(before, stand_in.config)
    sets = tuple(RuntimeSet(proxy, spec.global_.stats_socket, bname, s.label, ADDR, s.port, s.container)
                 for bname, backend in spec.backends.items() for s in backend.servers if s.container in stand_in.addresses)
    if moved is None or {(b, s) for b, s, _, _ in moved} - {(r.backend, r.server) for r in sets}:
        return None
    return sets


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

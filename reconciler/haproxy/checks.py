"""Cross-references and clashes of the haproxy section (what the models cannot see alone), and the
sockets HAProxy binds."""

from __future__ import annotations

import difflib
import re

from .. import logic
from ..source import NO_PATHS, PathSet
from .hints import HintBudget, container_hint
from .models import STATS_PROXY, Backend, Frontend, HAProxy
from .routing import as_logic, route_logic, rules_with_conditions
from .words import parse_bind

Problem = tuple[tuple, str]


def _hint(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate_haproxy(section: dict[str, HAProxy], containers: set[str], failed: PathSet = NO_PATHS,
                     hints: HintBudget | None = None) -> list[Problem]:
    """Every cross-reference problem of the haproxy section, located inside it.

    `failed`: the places (HOST, ...) that failed the models' own checks and were left out or stood in
    for (the spec package's salvage); nothing that depends on them is judged.  `hints`: how many unknown
    containers get a closest-name search (default: all).
    """
    return [((host, *loc), msg) for host, spec in section.items()
            for loc, msg in _check(host, spec, containers, failed.under((host,)), hints)]


def _check(host: str, spec: HAProxy, containers: set[str], failed: PathSet, hints: HintBudget | None) -> list[Problem]:
    problems: list[Problem] = []
    if host not in containers:
        problems.append(((), f"HAProxy container {host!r} is not a lab container"
                             + container_hint(host, containers, budget=hints)))
    if not spec.frontends:
        problems.append((("frontends",), "no frontends: HAProxy would accept no traffic"))
    for name, backend in spec.backends.items():
        problems += [(("backends", name, *loc), msg)
                     for loc, msg in _check_backend(backend, containers, failed.under(("backends", name)), hints)]
    # a failed backends: or conditions: is left out whole: the names in it are unknown, not absent
    backends = None if failed.at(("backends",)) else set(spec.backends)
    conditions = None if failed.at(("conditions",)) else set(spec.conditions)
    for name, frontend in spec.frontends.items():
        problems += [(("frontends", name, *loc), msg)
                     for loc, msg in _check_frontend(frontend, backends)]
        problems += [(("frontends", name, *loc), msg)
                     for loc, msg in _check_conditions_used(frontend, conditions)]
        problems += [(("frontends", name, *loc), msg)
                     for loc, msg in _check_reachable(frontend, failed.under(("frontends", name)))]
    problems += [(("conditions", name), f"{name!r} is the name of a route's own acl in haproxy.cfg: pick another")
                 for name in spec.conditions if _ROUTE_ACL.fullmatch(name)]
    return problems + _check_binds(spec, failed) + _check_stats(spec)


_ROUTE_ACL = re.compile(r"route[0-9]+_(?:host|path)")


def _check_backend(backend: Backend, containers: set[str], failed: PathSet, hints: HintBudget | None) -> list[Problem]:
    if not backend.servers:
        return [(("servers",), "backend has no servers")]
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, server in enumerate(backend.servers):
        if failed.at(("servers", i)):
            continue  # a stand-in: its name is nobody's
        container_failed = failed.at(("servers", i, "container"))  # a stand-in: judged at its own line
        if server.container not in containers and not container_failed:
            problems.append((("servers", i, "container"), (f"{server.container!r} is not a lab "
                             f"container{container_hint(server.container, containers, budget=hints)}")))
        if failed.at(("servers", i, "name")) or (server.name is None and container_failed):
            continue  # its name in haproxy.cfg is unknown
        if server.label in seen:
            problems.append((("servers", i, "name"), (f"server name {server.label!r} is used "
                             "twice in this backend")))
        seen.add(server.label)
    return problems


def _check_frontend(frontend: Frontend, backends: set[str] | None) -> list[Problem]:
    """Backends named are declared (when `backends` are known), and access rules are whole."""
    refs: list[tuple[tuple, str]] = [(("routes", i, "backend"), r.backend) for i, r in enumerate(frontend.routes)]
    if frontend.default_backend is not None:
        refs.append((("default_backend",), frontend.default_backend))
    problems: list[Problem] = [(loc, f"unknown backend {name!r}{_hint(name, backends)}")
                               for loc, name in refs if backends is not None and name not in backends]
    if not refs:
        problems.append(((), ("frontend has no routes and no default_backend: it would answer "
                             "every request with 503")))
    # a check here, not in the model: a rule with a stray status is still judged for reachability
    return problems + [(("access", i, "status"), "`status` goes with action: deny (an allowed request is routed)")
                       for i, rule in enumerate(frontend.access) if rule.action == "allow" and rule.status is not None]


def _check_conditions_used(frontend: Frontend, known: set[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    for loc, when in rules_with_conditions(frontend):
        tree = as_logic(when)
        problems += [(loc, f"unknown condition {name!r}{_hint(name, known)} (declare it under conditions:)")
                     for name in logic.atoms(tree) if known is not None and name not in known]
        try:
            logic.dnf(tree)
        except logic.TooComplex as err:
            problems.append((loc, f"this condition has {err}"))
    return problems


def _check_reachable(frontend: Frontend, failed: PathSet) -> list[Problem]:
    """A rule no request can reach is a mistake (first match wins): an error, not a warning.  Rules are
    judged together, so a list with a rule stood in for is not judged."""
    access = [as_logic(r.if_) if r.if_ is not None else logic.TRUE for r in frontend.access]
    routes = [route_logic(r) for r in frontend.routes]
    problems: list[Problem] = []
    for what, rules in (("access", access), ("routes", routes)):
        if failed.within((what,)):
            continue
        for found in logic.unreachable(rules):
            problems.append(((what, found.index), _unreachable_text(what, found, rules)))
    return problems


def _unreachable_text(what: str, found: logic.Unreachable, rules: list[logic.Condition]) -> str:
    noun = "access rule" if what == "access" else "route"
    if found.contradiction:
        return f"this {noun} can never match: its condition contradicts itself"
    if found.covered_by is not None and rules[found.covered_by] == logic.TRUE:
        return (f"unreachable: {noun} {found.covered_by} above has no `if` and takes every request"
                " (first match wins): move this one above it, or drop it")
    if found.covered_by is not None:
        return (f"unreachable: {noun} {found.covered_by} above already takes every request this one"
                " would match (first match wins): move this one above it, or drop it")
    return (f"unreachable: the {noun}s above it together take every request this one would match"
            " (first match wins)")


def _check_stats(spec: HAProxy) -> list[Problem]:
    if spec.stats is None:
        return []
    return [((section, STATS_PROXY), f"the stats page is the proxy {STATS_PROXY!r} in haproxy.cfg: "
             "rename this one") for section in ("frontends", "backends")
            if STATS_PROXY in getattr(spec, section)]


def _listeners(spec: HAProxy) -> list[tuple[tuple, str, str, int]]:
    """(location, what, address, port) of every socket HAProxy would bind, in order."""
    out: list[tuple[tuple, str, str, int]] = []
    for name, frontend in spec.frontends.items():
        addr, port = parse_bind(frontend.bind)
        out.append((("frontends", name, "bind"), f"frontend {name!r}", addr, port))
        if frontend.tls and frontend.tls.redirect_http:
            out.append((("frontends", name, "tls", "http_port"), f"frontend {name!r}", addr,
                        frontend.tls.http_port))
    if spec.stats is not None:
        out.append((("stats", "port"), "the stats page", "127.0.0.1", spec.stats.port))
    return out


def listen_ports(spec: HAProxy) -> list[int]:
    """TCP ports HAProxy must hold once it runs this configuration."""
    return sorted({port for _, _, _, port in _listeners(spec)})


def _check_binds(spec: HAProxy, failed: PathSet) -> list[Problem]:
    problems: list[Problem] = []
    listeners = [listener for listener in _listeners(spec) if not failed.at(listener[0])]  # no stand-in's bind
    for j, (loc, _, addr, port) in enumerate(listeners):
        for _, other, oaddr, oport in listeners[:j]:
            if port == oport and (addr == oaddr or "*" in (addr, oaddr)):
                problems.append((loc, f"port {port} is already bound by {other}"))
                break
    return problems


def frontend_at(spec: HAProxy, address: str, port: int) -> tuple[str, tuple] | None:
    """The frontend (and the location of its bind) that takes connections to address:port, or None."""
    for loc, _, addr, lport in _listeners(spec):
        if loc[0] == "frontends" and lport == port and addr in ("*", address):
            return loc[1], loc
    return None

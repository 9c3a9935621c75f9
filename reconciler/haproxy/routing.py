"""Conditions as logic, and a request's way through access rules and routes as haproxy.cfg takes it
(`reconcile check` and the reachability checks use them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import logic
from .models import Condition, Frontend, Route, When, WhenAll, WhenAny


# ---------------------------------------------------------------- conditions as logic
def as_logic(when: When) -> logic.Condition:
    """An `if` of lab.yaml as a condition over the names of its conditions."""
    if isinstance(when, str):
        return logic.Atom(when)
    if isinstance(when, WhenAll):
        return logic.All(tuple(as_logic(w) for w in when.all))
    if isinstance(when, WhenAny):
        return logic.AnyOf(tuple(as_logic(w) for w in when.any))
    return logic.Not(as_logic(when.not_))


def rules_with_conditions(frontend: Frontend) -> list[tuple[tuple, When]]:
    """(location, condition) of every `if` in the frontend's access rules and routes."""
    out = [(("access", i, "if"), r.if_) for i, r in enumerate(frontend.access) if r.if_ is not None]
    return out + [(("routes", i, "if"), r.if_) for i, r in enumerate(frontend.routes) if r.if_ is not None]


def route_logic(route: Route, host_atom: str | None = None, path_atom: str | None = None) -> logic.Condition:
    """What a route matches: its host, its path and its `if`, all of them.  The host and path are
    atoms named by their values (two routes on one host share it), or by the acl names given."""
    parts: list[logic.Condition] = []
    if route.host is not None:
        parts.append(logic.Atom(host_atom or f"host {route.host.lower()}"))
    if route.path_prefix is not None:
        parts.append(logic.Atom(path_atom or f"path_prefix {route.path_prefix}"))
    if route.if_ is not None:
        parts.append(as_logic(route.if_))
    return logic.All(tuple(parts))


# ---------------------------------------------------------------- routing
def _path_matches(prefix: str, path: str) -> bool:
    return prefix.endswith("/") and path.startswith(prefix) or path == prefix \
        or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Request:
    """What HAProxy decides on: a request as it arrives (src: the client's address as HAProxy sees it)."""

    host: str
    path: str = "/"
    method: str = "GET"
    src: str = "127.0.0.1"
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


def condition_holds(cond: Condition, request: Request) -> bool:
    """One named condition on a request, as its haproxy.cfg acl decides it."""
    host = request.host.split(":")[0].lower()
    if cond.src is not None:
        address = ipaddress.ip_address(request.src)
        return any(address in ipaddress.ip_network(n, strict=False) for n in cond.src)
    if cond.host is not None:
        return host in (h.lower() for h in cond.host)
    if cond.path is not None:
        return request.path in cond.path
    if cond.path_prefix is not None:
        return any(_path_matches(p, request.path) for p in cond.path_prefix)
    if cond.method is not None:
        return request.method in cond.method
    value = request.header(cond.header or "")
    return value is not None and (cond.value is None or value in cond.value)


def _truth(conditions: Mapping[str, Condition], request: Request) -> dict[str, bool]:
    return {name: condition_holds(cond, request) for name, cond in conditions.items()}


def access_for(frontend: Frontend, conditions: Mapping[str, Condition], request: Request) -> int | None:
    """The index of the access rule that decides the request (allow or deny), or None."""
    truth = _truth(conditions, request)
    return next((i for i, rule in enumerate(frontend.access)
                 if rule.if_ is None or logic.evaluate(as_logic(rule.if_), truth)), None)


def backend_for(frontend: Frontend, host: str, path: str = "/", conditions: Mapping[str, Condition] | None = None,
                request: Request | None = None) -> str | None:
    """The backend HAProxy picks for a request, as the rendered rules do (None: 503).  Routes with an
    `if` are judged on `request` (GET of host and path from 127.0.0.1 unless given)."""
    request = request or Request(host, path)
    truth = _truth(conditions or {}, request)
    for route in frontend.routes:
        if route.host is not None and route.host.lower() != host.split(":")[0].lower():
            continue
        if route.path_prefix is not None and not _path_matches(route.path_prefix, path):
            continue
        if route.if_ is None or logic.evaluate(as_logic(route.if_), truth):
            return route.backend
    return frontend.default_backend

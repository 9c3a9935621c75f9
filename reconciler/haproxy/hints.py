"""Hints for what people carry over from haproxy.cfg or write in the wrong place: a host name where a
lab container belongs (who serves it, as lab.yaml says), a `server` line, haproxy.cfg keys."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

CONTAINER_NAME = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"  # LXD's instance names


class Served(NamedTuple):
    """The lab containers that serve a host name as lab.yaml says: by its routes to `backends`, or
    (without backends) by naming it in their files."""

    containers: tuple[str, ...]
    backends: tuple[str, ...] = ()


Serving = Callable[[str], "Served | None"]  # a host name -> who serves it, if lab.yaml says


class HintBudget:
    """How many more names closest-name searches may compare (a search compares one with every lab
    container's), so that thousands of bad servers among thousands of containers are read in bounded time."""

    def __init__(self, comparisons: int):
        self.left = comparisons

    def take(self, comparisons: int) -> bool:
        self.left -= comparisons
        return self.left >= 0


def container_hint(name: str, containers: set[str] | frozenset[str], serving: Serving | None = None,
                   budget: HintBudget | None = None) -> str:
    """"; did you mean 'web2'?" for web2.testdomain.com (a host name where a container belongs): the
    container named by its first label, else those that serve it (`serving`), else the closest name
    (while the `budget` lasts)."""
    label = name.split(".")[0]
    if label != name and label in containers:
        return f"; did you mean {label!r}? (servers name lab containers, not host names)"
    served = serving(name) if serving is not None and "." in name else None
    if served:
        how = (f"lab.yaml routes {name} to backend {_listed(served.backends, 'or')}, served by"
               f" {_listed(served.containers, 'and')}" if served.backends else
               f"the files of {_listed(served.containers, 'and')} name {name}")
        return f"; did you mean {_listed(served.containers, 'or')}? (servers name lab containers, not host names; {how})"
    if budget is not None and not budget.take(len(containers)):
        return ""
    close = difflib.get_close_matches(name, sorted(containers), n=1) or \
        difflib.get_close_matches(label, sorted(containers), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _listed(names: Sequence[str], last: str) -> str:
    """'a', 'b' or 'c' (`last` "or"), 'a', 'b' and 'c' (`last` "and")."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def routed_hosts(section: Any, containers: set[str] | frozenset[str]) -> dict[str, Served]:
    """host (lowercase) -> the lab containers that serve it by routes: the servers of the backends its
    routes lead to.  `section` is lab.yaml's haproxy: as read, before validation: what does not read
    as routes and servers is passed over."""
    backends_of: dict[str, dict[str, None]] = {}
    servers_of: dict[str, dict[str, None]] = {}
    for spec in _mappings(section):
        backends = _mapping(spec.get("backends"))
        for frontend in _mappings(spec.get("frontends")):
            for route in _mappings(frontend.get("routes")):
                host, backend = route.get("host"), route.get("backend")
                if not (isinstance(host, str) and isinstance(backend, str)):
                    continue
                backends_of.setdefault(host.lower(), {})[backend] = None
                servers = _mappings(_mapping(backends.get(backend)).get("servers"))
                servers_of.setdefault(host.lower(), {}).update(
                    (s["container"], None) for s in servers if isinstance(s.get("container"), str)
                    and s["container"] in containers)
    return {host: Served(tuple(servers_of[host]), tuple(backends)) for host, backends in backends_of.items()
            if servers_of[host]}


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _mappings(value: Any) -> list[dict]:
    """The mappings in a list, or among a mapping's values: what reads as entries."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [v for v in items if isinstance(v, dict)]


# ---------------------------------------------------------------- the guide's haproxy.cfg
_SERVER_LINE = re.compile(r"server\s+([^\s:]+)\s+([^\s:]+)(?::([0-9]+))?(?:\s.*)?")


def server_line_hint(text: str, containers: set[str]) -> str:
    """What to write instead of a haproxy.cfg `server NAME HOST:PORT check` line."""
    if re.fullmatch(CONTAINER_NAME, text):
        return f"a server is a mapping, not a name: write {{container: {text}}}"
    match = _SERVER_LINE.fullmatch(text.strip())
    if not match:
        return "a server is a mapping such as {name: site1, container: web1, port: 80}"
    name, host, port = match[1], match[2], match[3] or "80"
    label = host.split(".")[0]
    close = difflib.get_close_matches(label, sorted(containers), n=1)
    container = label if label in containers else (close[0] if close else "CONTAINER")
    unknown = "" if container != "CONTAINER" else f", CONTAINER being the lab container that serves {host}"
    return (f"a server is a mapping of name, container and port, not a haproxy.cfg line: write"
            f" {{name: {name}, container: {container}, port: {port}}}{unknown}")


# Keys of haproxy.cfg that people carry over, at (section, key): where they go in lab.yaml.
_CFG_KEYS = {
    ("frontends", "acl"): "HAProxy acl/use_backend lines are written as routes: [{host: ..., backend: ...}]",
    ("frontends", "use_backend"): "HAProxy acl/use_backend lines are written as routes: [{host: ..., backend: ...}]",
    ("backends", "server"): "HAProxy server lines are written as servers: [{name: ..., container: ..., port: ...}]",
    ((), "frontend"): "frontends are written as frontends: {NAME: {bind: ..., routes: [...]}}",
    ((), "backend"): "backends are written as backends: {NAME: {servers: [...]}}",
}


def unknown_field_hint(loc: tuple) -> str:
    """Where an unknown field at `loc` (inside one container's section) goes, or ""."""
    section = loc[0] if len(loc) == 3 else ()
    return _CFG_KEYS.get((section, loc[-1]), "") if loc else ""

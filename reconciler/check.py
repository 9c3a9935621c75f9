"""`reconcile check`: the guide's test, automated.  Real HTTP through each HAProxy frontend's
proxy device, a bounded number of requests per Host, who answered each, and whom HAProxy took the
client for (its `X-Client-Seen`): through a device on loopback, check asks from 127.0.0.2, an address
no device has, so HAProxy seeing it proves the device passed the client on.

It proves what it says: enough requests for round robin to reach every server, one line per
distinct failure with what to do about it, and a plain statement when there is nothing to check.
"""

from __future__ import annotations

import http.client
import math
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from . import haproxy
from .lxd import Lxd
from .remote import is_loopback
from .render import safe
from .spec import Lab, expanded_devices, listen_address
from .values import TRUE_WORDS

TIMEOUT = 5.0
WARM_UP_SECONDS = 15.0
MAX_REQUESTS = 100  # per Host; `--requests` above it is a usage error (every request loop bounded)
MARKER = re.compile(r"\b(SITE\w+)\b")
CLIENT = "127.0.0.2"  # check's own address on loopback: not the 127.0.0.1 a proxy device connects from


@dataclass(frozen=True)
class Answer:
    status: int
    server: str  # HAProxy's server name, from the X-Served-By header
    marker: str  # what the page says about itself (the guide's SITE1 / SITE2)
    seen: str = ""  # the client's address as HAProxy saw it, from the X-Client-Seen header
    sent_from: str = ""  # the address check sent from


@dataclass(frozen=True)
class Target:
    """One Host to ask through one entry point, and the backend that should answer."""

    container: str
    host: str
    point: tuple[str, int]
    backend_name: str
    backend: haproxy.Backend
    path: str = "/"
    tls: bool = False  # the frontend terminates HTTPS
    device: str = ""  # the proxy device asked through
    keeps: bool = False  # it passes the client's address on (PROXY protocol or nat)
    source: str | None = None  # the address check sends from (None: the one the route gives)

    @property
    def shown(self) -> str:
        """`site1.testdomain.com via 127.0.0.1:80`; a path and https when they are not / and http."""
        where = f"{'https://' if self.tls else ''}{self.point[0]}:{self.point[1]}"
        return f"{self.host}{self.path if self.path != '/' else ''} via {where}"

    def ask(self) -> Answer:
        return ask(*self.point, self.host, path=self.path, tls=self.tls, source=self.source)

    def serving(self, running: set[str]) -> set[str]:
        """The servers round robin should reach: those running with a weight, backups only when no other is."""
        live = [s for s in self.backend.servers if s.container in running and s.weight != 0]
        main = [s for s in live if not s.backup]
        return {s.label for s in (main or live)}


def cycle(backend: haproxy.Backend) -> int:
    """Requests in one round of weighted round robin over the servers that are not backups."""
    weights = [s.weight if s.weight is not None else 1 for s in backend.servers if not s.backup]
    weights = [w for w in weights if w] or [1]
    return sum(weights) // math.gcd(*weights)


def _lab_certificate_context() -> ssl.SSLContext:
    """HTTPS to the lab's own proxy on this host, whose certificate is self-signed (made at apply
    inside the container): encrypted, but not verified; check proves the route, not the identity."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ask(host: str, port: int, vhost: str, path: str = "/", tls: bool = False, source: str | None = None) -> Answer:
    """One GET with a Host header (over HTTPS with `tls`, from `source` if given); a failure is status 0
    with the reason as marker."""
    bound = (source, 0) if source else None
    conn = (http.client.HTTPSConnection(host, port, timeout=TIMEOUT, source_address=bound,
                                        context=_lab_certificate_context()) if tls
            else http.client.HTTPConnection(host, port, timeout=TIMEOUT, source_address=bound))
    try:
        conn.request("GET", path, headers={"Host": vhost, "Connection": "close"})
        sent_from = conn.sock.getsockname()[0] if conn.sock else ""
        response = conn.getresponse()
        body = response.read(65536).decode("utf-8", "replace")
        found = MARKER.search(body)
        return Answer(response.status, response.getheader(haproxy.SERVED_BY, "?"), found.group(1) if found else "",
                      response.getheader(haproxy.CLIENT_SEEN, ""), sent_from)
    except OSError as err:
        return Answer(0, "-", f"no answer: {err}")
    finally:
        conn.close()


class EntryPoint(NamedTuple):
    address: str
    port: int
    src: str  # the client's address as HAProxy sees it (what its `src` conditions judge)
    device: str
    keeps: bool  # the device passes the client's address on (PROXY protocol or nat)
    source: str | None  # the address check sends from (None: the one the route gives)


def entry_points(lab: Lab, cname: str, bind_port: int, lxd_host: str | None = None) -> list[EntryPoint]:
    """Each proxy device that forwards to `bind_port` inside the HAProxy container: on this machine, or, for
    a remote LXD on another machine (`lxd_host`), on that one, whose loopback we cannot reach.  Without
    PROXY protocol or nat the device connects from inside the container, so HAProxy sees 127.0.0.1
    whoever asks.  Check asks a device on IPv4 loopback from CLIENT, elsewhere from the host's address."""
    out = []
    for dname, device in expanded_devices(lab, lab.containers[cname]).items():
        listen, connect = listen_address(device.get("listen", "")), listen_address(device.get("connect", ""))
        if device.get("type") == "proxy" and listen and connect and connect[2] == str(bind_port):
            address = listen[1].strip("[]")
            if address in ("0.0.0.0", "::"):
                address = lxd_host or "127.0.0.1"
            elif lxd_host and is_loopback(address):
                continue
            keeps = any(device.get(k) in TRUE_WORDS for k in ("proxy_protocol", "nat"))
            source = CLIENT if address.startswith("127.") else None
            src = (source or address) if keeps else "127.0.0.1"
            out.append(EntryPoint(address, int(listen[2].split("-")[0]), src, dname, keeps, source))
    return out


def targets(lab: Lab, lxd_host: str | None = None) -> tuple[list[Target], list[str]]:
    """What to check, and why some frontends cannot be."""
    found, skipped = [], []
    for cname, spec in lab.haproxy.items():
        for fname, frontend in spec.frontends.items():
            points = entry_points(lab, cname, haproxy.parse_bind(frontend.bind)[1], lxd_host)
            if not points:
                where = f"this machine (LXD runs on {lxd_host}; its loopback is out of reach)" if lxd_host else "the host"
                skipped.append(f"{cname}/{fname}: no proxy device of {cname} forwards to {frontend.bind}:"
                               f" nothing reaches it from {where}")
                continue
            address, port, src, device, keeps, source = points[0]
            for route in frontend.routes:
                if not route.host:
                    continue
                path = route.path_prefix.rstrip("/") + "/" if route.path_prefix else "/"
                request = haproxy.Request(route.host, path, src=src)
                rule = haproxy.access_for(frontend, spec.conditions, request)
                if rule is not None and frontend.access[rule].action == "deny":
                    skipped.append(f"{cname}/{fname}: access rule {rule} denies {route.host} from {src}"
                                   f" ({frontend.access[rule].deny_status}): check cannot ask it")
                    continue
                name = haproxy.backend_for(frontend, route.host, path, conditions=spec.conditions, request=request)
                if name:
                    found.append(Target(cname, route.host, (address, port), name, spec.backends[name], path,
                                        frontend.tls is not None, device, keeps, source))
    return found, skipped


def running_containers(lxd: Lxd) -> set[str]:
    return {i["name"] for i in lxd.read(with_addresses=False).instances if i.get("status") == "Running"}


def run_check(lab: Lab, lxd: Lxd, requests: int) -> int:
    """Print who answered each request; 0 only if every host answers and round robin spreads."""
    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"requests must be 1 to {MAX_REQUESTS}, not {requests}")  # the CLI refuses it first
    # A remote on another machine: its proxy devices listen there. One on loopback is taken as this machine.
    elsewhere = lxd.remote.host if lxd.remote and not lxd.remote.loopback else None
    found, skipped = targets(lab, elsewhere)
    for line in skipped:
        print(line)
    if not found:
        print(f"Nothing to check: lab {lab.lab!r} has no HAProxy frontend with a Host route reachable"
              " through a proxy device (check sends HTTP through them; see docs/cli.md)")
        return 1
    too_few = [t for t in found if t.backend.balance == "roundrobin" and requests < min(cycle(t.backend), MAX_REQUESTS)]
    if too_few:
        for t in too_few:
            print(f"Error: --requests {requests} cannot show round robin reaching the {_servers(t.backend)}"
                  f" of backend {t.backend_name} ({t.host}): use --requests {min(cycle(t.backend), MAX_REQUESTS)} or more")
        return 1
    running = running_containers(lxd)
    ok = True
    for point in dict.fromkeys((t.container, t.point) for t in found):  # each entry point, in order
        mine = [t for t in found if (t.container, t.point) == point]
        results = [_check_host(t, running, min(requests, MAX_REQUESTS)) for t in mine]
        hosts_ok = all(good for good, _ in results)
        client_ok = not hosts_ok or check_client(mine[0], [a for _, answers in results for a in answers])
        ok = ok and hosts_ok and client_ok
    print("check passed" if ok else "check FAILED")
    return 0 if ok else 1


def warm_up(target: Target, seconds: float) -> Answer:
    """Wait, bounded, for a first answer: a reload or a health check may be seconds behind an apply."""
    deadline = time.monotonic() + seconds
    answer = target.ask()
    if answer.status == 200:
        return answer
    print(safe(f"waiting up to {seconds:.0f}s for {target.shown.replace(' via ', ' to answer through ')}"
               " (HAProxy may still be reloading or health-checking its servers) ..."), flush=True)
    while answer.status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = target.ask()
    return answer


def _check_host(target: Target, running: set[str], requests: int) -> tuple[bool, list[Answer]]:
    first = warm_up(target, WARM_UP_SECONDS)
    answers = [target.ask() for _ in range(requests)] if first.status == 200 else [first]
    shown = ", ".join(f"{a.server}({a.marker})" if a.status == 200 else f"{a.status or 'ERR'}" for a in answers)
    print(safe(f"{target.shown} -> backend {target.backend_name}: {shown}"))
    healthy = target.serving(running)
    served = {a.server for a in answers if a.status == 200}
    problems = [f"{n} of {len(answers)} requests: {_failure(a)}" for a, n in Counter(
        a for a in answers if a.status != 200).items()]
    if served and target.backend.balance == "roundrobin" and cycle(target.backend) <= len(answers) \
            and not healthy <= served:
        problems.append(f"round robin never reached {', '.join(sorted(healthy - served))} (its container runs:"
                        " is the server healthy? see HAProxy's log)")
    if not healthy:
        problems.append(f"none of backend {target.backend_name}'s containers is running")
    for problem in problems:
        print(safe(f"  {target.shown.split(' via ')[0]}: {problem}"))  # what a server sent is shown, never obeyed
    return not problems, answers


def check_client(target: Target, answers: list[Answer]) -> bool:
    """Whom HAProxy took check for through this entry point.  Judged only where check chose its own
    address (CLIENT, on loopback: nothing between can change it) and the device passes the client on."""
    served = [a for a in answers if a.status == 200]
    if not served:
        return True  # nothing answered: the host lines above say so
    seen = sorted({a.seen or "(no X-Client-Seen header: apply the lab)" for a in served})
    sent = served[0].sent_from
    where = f"client {sent} via {target.shown.split(' via ')[1]}: HAProxy saw {', '.join(seen)}"
    if not target.keeps:
        print(safe(f"{where} (proxy device {target.device} connects from inside {target.container}: set"
                   " proxy_protocol: true on it, and accept_proxy on its frontend, to keep the client's address)"))
        return True
    if seen == [sent]:
        print(safe(f"{where} (proxy device {target.device} passes the client on)"))
        return True
    if target.source is None:  # another machine's device: an address translation on the way is no fault of the lab's
        print(safe(f"{where} (proxy device {target.device} passes on the address it is reached from)"))
        return True
    print(safe(f"{where}, not {sent}: proxy device {target.device} should pass the client on; `reconcile plan`"
               " shows what differs from lab.yaml"))
    return False


def _failure(answer: Answer) -> str:
    if answer.status == 0:
        return (f"{answer.marker}; is the proxy device there and HAProxy running?"
                " `reconcile plan` shows what differs from lab.yaml")
    if answer.status == 503:
        return "503 from HAProxy: no server of the backend is up (`reconcile plan`, then HAProxy's log)"
    return f"HTTP {answer.status}; `reconcile plan` shows what differs from lab.yaml"


def _servers(backend: haproxy.Backend) -> str:
    """"2 servers", or "4 servers' weights" when one round of weighted round robin takes 4 requests."""
    main = [s for s in backend.servers if not s.backup]
    if cycle(backend) == len(main):
        return f"{len(main)} servers"
    return f"{len(main)} servers (weights: {cycle(backend)} requests a round)"

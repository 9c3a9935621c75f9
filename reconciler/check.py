"""`reconcile check`: the guide's test, automated.  Real HTTP through each HAProxy frontend's
proxy device, a bounded number of requests per Host, and who answered each."""

from __future__ import annotations

import http.client
import re
import time
from dataclasses import dataclass

from . import haproxy
from .lxd import Lxd
from .spec import Lab, expanded_devices, listen_address

TIMEOUT = 5.0
WARM_UP_SECONDS = 15.0
MARKER = re.compile(r"\b(SITE\w+)\b")


@dataclass(frozen=True)
class Answer:
    status: int
    server: str  # HAProxy's server name, from the X-Served-By header
    marker: str  # what the page says about itself (the guide's SITE1 / SITE2)


def ask(host: str, port: int, vhost: str) -> Answer:
    """One GET / with a Host header; a failure is status 0 with the reason as marker."""
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/", headers={"Host": vhost, "Connection": "close"})
        response = conn.getresponse()
        body = response.read(65536).decode("utf-8", "replace")
        found = MARKER.search(body)
        return Answer(response.status, response.getheader(haproxy.SERVED_BY, "?"), found.group(1) if found else "")
    except OSError as err:
        return Answer(0, "-", f"no answer: {err}")
    finally:
        conn.close()


def entry_points(lab: Lab, cname: str, bind_port: int) -> list[tuple[str, int]]:
    """Host addresses whose proxy device forwards to `bind_port` inside the HAProxy container."""
    out = []
    for device in expanded_devices(lab, lab.containers[cname]).values():
        listen, connect = listen_address(device.get("listen", "")), listen_address(device.get("connect", ""))
        if device.get("type") == "proxy" and listen and connect and connect[2] == str(bind_port):
            address = "127.0.0.1" if listen[1] in ("0.0.0.0", "[::]") else listen[1].strip("[]")
            out.append((address, int(listen[2].split("-")[0])))
    return out


def running_containers(lxd: Lxd) -> set[str]:
    return {i["name"] for i in lxd.read(with_addresses=False).instances if i.get("status") == "Running"}


def run_check(lab: Lab, lxd: Lxd, requests: int) -> int:
    """Print who answered each request; 0 only if every host answers and round-robin spreads."""
    running, ok, checked = running_containers(lxd), True, 0
    for cname, spec in lab.haproxy.items():
        for fname, frontend in spec.frontends.items():
            points = entry_points(lab, cname, haproxy.parse_bind(frontend.bind)[1])
            if not points:
                print(f"{cname}/{fname}: no proxy device reaches port {frontend.bind}; nothing to check")
                continue
            for route in (r for r in frontend.routes if r.host):
                ok &= _check_host(spec, frontend, route.host, points[0], running, requests)
                checked += 1
    print("check passed" if ok and checked else "check FAILED")
    return 0 if ok and checked else 1


def warm_up(point: tuple[str, int], vhost: str, seconds: float) -> None:
    """Wait, bounded, for a first answer: a reload or a health check may be seconds behind an apply."""
    deadline = time.monotonic() + seconds
    while ask(point[0], point[1], vhost).status != 200 and time.monotonic() < deadline:
        time.sleep(0.5)


def _check_host(spec, frontend, vhost: str, point: tuple[str, int], running: set[str], requests: int) -> bool:
    backend_name = haproxy.backend_for(frontend, vhost)
    backend = spec.backends[backend_name]
    warm_up(point, vhost, WARM_UP_SECONDS)
    answers = [ask(point[0], point[1], vhost) for _ in range(requests)]
    shown = ", ".join(f"{a.server}({a.marker})" if a.status == 200 else f"{a.status or 'ERR'} {a.marker}"
                      for a in answers)
    print(f"{vhost} via {point[0]}:{point[1]} -> backend {backend_name}: {shown}")
    healthy = {s.label for s in backend.servers if s.container in running}
    served = {a.server for a in answers if a.status == 200}
    problems = []
    if any(a.status != 200 for a in answers):
        problems.append(f"{sum(a.status != 200 for a in answers)} of {requests} requests failed")
    if backend.balance == "roundrobin" and requests >= len(healthy) and not healthy <= served:
        problems.append(f"round robin never reached {', '.join(sorted(healthy - served))}")
    for problem in problems:
        print(f"  {vhost}: {problem}")
    return not problems

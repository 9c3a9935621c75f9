"""HAProxy access rules, named conditions, PROXY protocol and server pools: models, validation,
rendering checked by `haproxy -c`, and a real HAProxy on loopback answering real requests.  No LXD."""

from __future__ import annotations

import contextlib
import copy
import http.client
import http.server
import socket
import socketserver
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import until
from pydantic import ValidationError
from test_haproxy import ADDRESSES, CONTAINERS, GUIDE, HAPROXY, check_config

from reconciler import logic
from reconciler.check import ask
from reconciler.haproxy import (
    HAProxy,
    Request,
    access_for,
    backend_for,
    condition_text,
    frontend_at,
    listen_ports,
    render_config,
    validate_haproxy,
)
from reconciler.logic import All, AnyOf, Atom, Not
from reconciler.source import SourceError
from reconciler.spec import load_lab

A, B, C = Atom("a"), Atom("b"), Atom("c")


# ---------------------------------------------------------------- the logic under it
@pytest.mark.parametrize("cond, text", [
    (A, "a"),
    (Not(A), "!a"),
    (All((A, Not(B))), "a !b"),
    (AnyOf((A, B)), "a || b"),
    (All((A, AnyOf((B, C)))), "a b || a c"),
    (Not(AnyOf((A, B))), "!a !b"),  # De Morgan
    (Not(All((A, B))), "!a || !b"),
    (All((A, Not(A))), "FALSE"),  # never: HAProxy's predefined acl
    (AnyOf((A, Not(A))), "a || !a"),
    (logic.TRUE, ""),
])
def test_conditions_are_written_in_haproxys_form(cond, text):
    assert condition_text(cond) == text


def test_a_condition_too_large_to_write_out_is_refused():
    big = All(tuple(AnyOf((Atom(f"x{i}"), Atom(f"y{i}"))) for i in range(7)))  # 2**7 alternatives
    with pytest.raises(logic.TooComplex):
        logic.dnf(big)


@pytest.mark.parametrize("rules, unreachable", [
    ([A, B], []),
    ([logic.TRUE, A], [(1, 0, False)]),  # behind a catch-all
    ([A, All((A, B))], [(1, 0, False)]),  # narrower than one above
    ([A, Not(A), B], [(2, None, False)]),  # the two above take everything together
    ([All((A, Not(A)))], [(0, None, True)]),  # contradicts itself
    ([All((A, B)), A], []),  # wider than the one above: reachable
    ([AnyOf((A, Not(A))), B], [(1, 0, False)]),  # a tautology is a catch-all
])
def test_unreachable_rules(rules, unreachable):
    assert [(u.index, u.covered_by, u.contradiction) for u in logic.unreachable(rules)] == unreachable


# ---------------------------------------------------------------- models and validation
CONDITIONS = {
    "lan": {"src": ["10.203.7.1", "192.0.2.0/24"]},
    "token": {"header": "X-Lab-Token", "value": "open-sesame"},
    "api": {"path_prefix": "/api"},
    "writes": {"method": ["POST", "PUT"]},
    "site1": {"host": "site1.testdomain.com"},
    "admin": {"path": ["/admin", "/login"]},
    "debug": {"header": "X-Debug"},
}
ACCESS = [{"action": "deny", "if": "lan", "status": 403},
          {"action": "deny", "if": {"all": ["api", {"not": "token"}]}, "status": 401},
          {"action": "allow", "if": {"any": ["debug", {"not": {"any": ["writes", "admin"]}}]}},
          {"action": "deny", "status": 405}]


def access_spec(**frontend) -> dict:
    data = copy.deepcopy(GUIDE)
    data["conditions"] = copy.deepcopy(CONDITIONS)
    data["frontends"]["http_frontend"].update(access=copy.deepcopy(ACCESS), **frontend)
    data["frontends"]["http_frontend"]["routes"].insert(
        0, {"if": {"all": ["api", "site1"]}, "backend": "subdomain2"})
    return data


def problems(data: dict) -> list:
    return validate_haproxy({"proxyha": HAProxy.model_validate(data)}, CONTAINERS)


def test_access_rules_and_conditions_render_and_haproxy_accepts_them(tmp_path):
    spec = HAProxy.model_validate(access_spec())
    assert problems(access_spec()) == []
    text = check_config(tmp_path, spec)
    for line in ["acl lan src 10.203.7.1/32 192.0.2.0/24",
                 "acl token req.hdr(X-Lab-Token) -m str open-sesame",
                 "acl api path /api", "acl api path_beg /api/", "acl writes method POST PUT",
                 "acl site1 req.hdr(host),field(1,:) -i site1.testdomain.com", "acl admin path /admin /login",
                 "acl debug req.hdr(X-Debug) -m found",
                 "http-request deny deny_status 403 if lan",
                 "http-request deny deny_status 401 if api !token",
                 "http-request allow if debug || !writes !admin",
                 "http-request deny deny_status 405",
                 "use_backend subdomain2 if api site1",
                 "use_backend subdomain1 if route2_host"]:
        assert f"    {line}\n" in text, line
    frontend = text.split("frontend http_frontend\n")[1]
    assert frontend.index("http-request deny") < frontend.index("use_backend")  # HAProxy warns otherwise


def test_unused_conditions_are_not_rendered():
    data = access_spec()
    data["conditions"]["spare"] = {"method": "DELETE"}
    assert "spare" not in render_config(HAProxy.model_validate(data), ADDRESSES)


VALIDATION = [
    # (id, change, location inside the haproxy section, words)
    ("unknown-condition", lambda d: d["frontends"]["http_frontend"]["access"][0].update({"if": "lna"}),
     ("frontends", "http_frontend", "access", 0, "if"), "unknown condition 'lna'; did you mean 'lan'?"),
    ("unknown-in-route", lambda d: d["frontends"]["http_frontend"]["routes"][0].update(
        {"if": {"not": "nope"}}), ("frontends", "http_frontend", "routes", 0, "if"), "unknown condition 'nope'"),
    ("behind-a-catch-all", lambda d: d["frontends"]["http_frontend"]["access"].append(
        {"action": "allow", "if": "writes"}), ("frontends", "http_frontend", "access", 4),
     "access rule 3 above has no `if` and takes every request"),
    ("narrower-than-above", lambda d: d["frontends"]["http_frontend"]["access"].insert(
        1, {"action": "allow", "if": {"all": ["lan", "writes"]}}), ("frontends", "http_frontend", "access", 1),
     "access rule 0 above already takes every request this one would match"),
    ("contradiction", lambda d: d["frontends"]["http_frontend"]["access"].insert(
        0, {"action": "deny", "if": {"all": ["lan", {"not": "lan"}]}}), ("frontends", "http_frontend", "access", 0),
     "can never match: its condition contradicts itself"),
    ("shadowed-route", lambda d: d["frontends"]["http_frontend"]["routes"].append(
        {"host": "site1.testdomain.com", "path_prefix": "/x", "backend": "subdomain2"}),
     ("frontends", "http_frontend", "routes", 3), "route 1 above already takes every request"),
    ("route-acl-name", lambda d: d["conditions"].update({"route1_host": {"method": "GET"}}),
     ("conditions", "route1_host"), "the name of a route's own acl"),
    ("stats-name", lambda d: d.update(stats={}) or d["backends"].update(stats=d["backends"]["subdomain1"]),
     ("backends", "stats"), "the stats page is the proxy 'stats'"),
    ("stats-port-taken", lambda d: d.update(stats={"port": 80}), ("stats", "port"),
     "port 80 is already bound by frontend 'http_frontend'"),
    ("status-with-allow", lambda d: d["frontends"]["http_frontend"]["access"].insert(
        0, {"action": "allow", "if": "debug", "status": 403}), ("frontends", "http_frontend", "access", 0, "status"),
     "`status` goes with action: deny (an allowed request is routed)"),
]


@pytest.mark.parametrize("change, loc, words", [c[1:] for c in VALIDATION], ids=[c[0] for c in VALIDATION])
def test_validation_finds_the_problem_at_its_place(change, loc, words):
    data = access_spec()
    change(data)
    found = problems(data)
    assert [p for p in found if p[0] == ("proxyha", *loc) and words in p[1]], found


BAD = [
    # (id, condition or rule, words of pydantic's message)
    ("two-matchers", {"conditions": {"x": {"src": "10.0.0.0/8", "method": "GET"}}}, "exactly one of"),
    ("no-matcher", {"conditions": {"x": {}}}, "exactly one of"),
    ("value-without-header", {"conditions": {"x": {"method": "GET", "value": "a"}}}, "`value` goes with `header`"),
    ("space-in-value", {"conditions": {"x": {"header": "X-A", "value": "a b"}}}, "whitespace"),
    ("newline-in-value", {"conditions": {"x": {"header": "X-A", "value": "a\nserver x 1.2.3.4:80"}}}, "line break"),
    ("lowercase-method", {"conditions": {"x": {"method": "get"}}}, "HTTP method"),
    ("bad-network", {"conditions": {"x": {"src": "10.0.0.300/8"}}}, "not an IPv4 or IPv6"),
    ("injected-network", {"conditions": {"x": {"src": "10.0.0.0/8 || TRUE"}}}, "whitespace"),
    ("bad-name", {"conditions": {"x y": {"method": "GET"}}}, "whitespace"),
    ("unknown-status", {"rule": {"action": "deny", "status": 418}}, "HAProxy cannot answer 418"),
    ("bad-shape", {"rule": {"action": "deny", "if": {"all": ["a"], "any": ["b"]}}}, "a condition's name, or one of"),
    ("empty-all", {"rule": {"action": "deny", "if": {"all": []}}}, "at least 1 item"),
]


@pytest.mark.parametrize("change, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_conditions_and_rules_are_refused_by_the_models(change, words):
    data = access_spec()
    data["conditions"].update(change.get("conditions", {}))
    if "rule" in change:
        data["frontends"]["http_frontend"]["access"].insert(0, change["rule"])
    with pytest.raises(ValidationError) as caught:
        HAProxy.model_validate(data)
    assert words in str(caught.value)


def test_a_status_on_an_allow_rule_hides_no_unreachable_rule(tmp_path):
    """The stray status is validation's to say (not the model's): the rule is still judged with the others."""
    path = tmp_path / "lab.yaml"
    path.write_text("""\
lab: demo
containers:
  proxy: {image: x}
  web1: {image: x}
haproxy:
  proxy:
    conditions: {lan: {src: 10.203.7.0/24}}
    frontends:
      f:
        bind: "*:80"
        access:
          - {action: allow, status: 403}
          - {action: deny, if: lan}
        default_backend: pool
    backends:
      pool: {servers: [{container: web1}]}
""")
    with pytest.raises(SourceError) as caught:
        load_lab(path, {})
    assert [str(p).removeprefix(f"{tmp_path}/") for p in caught.value.problems] == [
        "lab.yaml:12:37: haproxy.proxy.frontends.f.access[0].status: `status` goes with action: deny (an allowed"
        " request is routed)",
        "lab.yaml:13:13: haproxy.proxy.frontends.f.access[1]: unreachable: access rule 0 above has no `if` and takes"
        " every request (first match wins): move this one above it, or drop it"]


@pytest.mark.parametrize("request_, decision", [
    (Request("site1.testdomain.com", src="10.203.7.1"), ("access", 0)),
    (Request("site1.testdomain.com", "/api/x"), ("access", 1)),
    (Request("site1.testdomain.com", "/api/x", headers={"x-lab-token": "open-sesame"}), ("backend", "subdomain2")),
    (Request("site2.testdomain.com", "/api/x", headers={"X-Lab-Token": "open-sesame"}), ("backend", "subdomain2")),
    (Request("site1.testdomain.com", "/admin"), ("access", 3)),
    (Request("site1.testdomain.com", "/admin", headers={"X-Debug": "1"}), ("backend", "subdomain1")),
    (Request("site1.testdomain.com", "/", "POST"), ("access", 3)),
    (Request("site1.testdomain.com"), ("backend", "subdomain1")),
])
def test_the_decision_is_the_one_haproxy_makes(request_, decision):
    spec = HAProxy.model_validate(access_spec())
    frontend = spec.frontends["http_frontend"]
    rule = access_for(frontend, spec.conditions, request_)
    if rule is not None and frontend.access[rule].action == "deny":
        assert decision == ("access", rule)
    else:
        assert decision == ("backend", backend_for(frontend, request_.host, request_.path, spec.conditions, request_))


def test_pool_settings_render_and_haproxy_accepts_them(tmp_path):
    data = copy.deepcopy(GUIDE)
    data["backends"]["subdomain1"]["servers"] = [
        {"name": "site1", "container": "web1", "weight": 3, "maxconn": 20},
        {"name": "site2", "container": "web2", "weight": 1, "backup": True}]
    data["stats"] = {"port": 8404}
    spec = HAProxy.model_validate(data)
    text = check_config(tmp_path, spec)
    assert "    server site1 192.168.1.150:80 check weight 3 maxconn 20\n" in text
    assert "    server site2 192.168.1.101:80 check weight 1 backup\n" in text
    assert "listen stats\n    bind 127.0.0.1:8404\n    stats enable\n    stats uri /stats\n" in text
    assert listen_ports(spec) == [80, 8404]


def test_accept_proxy_goes_on_every_bind_of_the_frontend_with_its_devices_named(tmp_path):
    data = copy.deepcopy(GUIDE)
    data["frontends"]["http_frontend"].update(accept_proxy=True, tls={
        "certificate": str(tmp_path / "site.pem"), "redirect_http": True, "http_port": 81}, bind="*:443")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x",
                    "-keyout", str(tmp_path / "site.pem"), "-out", str(tmp_path / "site.pem")], check=True,
                   capture_output=True)
    spec = HAProxy.model_validate(data)
    text = check_config(tmp_path, spec)
    assert f"    bind *:443 ssl crt {tmp_path / 'site.pem'} accept-proxy\n    bind *:81 accept-proxy\n" in text
    shown = render_config(spec, ADDRESSES, proxied={"http_frontend": ["http (tcp:127.0.0.1:443)"]})
    assert "    # PROXY protocol from LXD proxy device(s): http (tcp:127.0.0.1:443)\n    bind *:443" in shown
    assert frontend_at(spec, "127.0.0.1", 81) == ("http_frontend", ("frontends", "http_frontend", "tls", "http_port"))
    assert frontend_at(spec, "127.0.0.1", 82) is None


# ---------------------------------------------------------------- a real HAProxy, real requests
class Echo(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def echo(name: str, delay: float = 0.0) -> Echo:
    """A backend answering `name client-ip forwarded-for` (after `delay`), one thread per request."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(delay)
            body = f"{name} {self.headers.get('X-Client-IP')} {self.headers.get('X-Forwarded-For')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass
    server = Echo(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(tmp_path: Path, data: dict, servers: dict[str, Echo], port: int):
    """HAProxy in the foreground on `data`, its servers on loopback; stopped on exit."""
    data = {**data, "logging": False,
            "global": {"chroot": str(tmp_path), "stats_socket": str(tmp_path / "admin.sock")}}
    spec = HAProxy.model_validate(data)
    assert validate_haproxy({"proxyha": spec}, set(servers) | {"proxyha"}) == []
    ports = {name: str(s.server_port) for name, s in servers.items()}
    for backend in data["backends"].values():
        for server in backend["servers"]:
            server["port"] = int(ports[server["container"]])
    spec = HAProxy.model_validate(data)
    check_config(tmp_path, spec, {name: "127.0.0.1" for name in servers})
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(cfg.read_text().replace("    daemon\n", ""))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # bounded: until it listens
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for server in servers.values():
            server.shutdown()


def send(port: int, host: str, path: str = "/", method: str = "GET", headers: dict | None = None,
         proxy_from: str | None = None) -> tuple[int, str, str | None]:
    """One request; with `proxy_from`, a PROXY protocol v1 header first, as an LXD proxy device sends it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if proxy_from:
            sock.sendall(f"PROXY TCP4 {proxy_from} 127.0.0.1 40000 {port}\r\n".encode())
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close", "Content-Length: 0",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read().decode(), response.getheader("X-Served-By")


def test_real_haproxy_takes_the_client_from_the_proxy_header_and_applies_access_rules(tmp_path):
    port = free_port()
    data = access_spec(bind=f"127.0.0.1:{port}", accept_proxy=True)
    data["backends"] = {"subdomain1": {"servers": [{"name": "site1", "container": "web1"}]},
                        "subdomain2": {"servers": [{"name": "api", "container": "web2"}]}}
    with running(tmp_path, data, {"web1": echo("one"), "web2": echo("two")}, port):
        # the client named in the PROXY header is the one HAProxy and the backend see
        assert send(port, "site1.testdomain.com", proxy_from="198.51.100.7") == (
            200, "one 198.51.100.7 198.51.100.7", "site1")
        status, body, served = send(port, "site1.testdomain.com", proxy_from="10.203.7.1")
        assert (status, served) == (403, None) and "Request forbidden by administrative rules." in body
        assert send(port, "site1.testdomain.com", "/api/v1", proxy_from="192.0.2.50")[0] == 403  # lan: 192.0.2.0/24
        assert send(port, "site1.testdomain.com", "/api/v1", proxy_from="198.51.100.7")[0] == 401
        assert send(port, "site1.testdomain.com", "/api/v1", headers={"X-Lab-Token": "open-sesame"},
                    proxy_from="198.51.100.7") == (200, "two 198.51.100.7 198.51.100.7", "api")
        assert send(port, "site1.testdomain.com", "/admin", proxy_from="198.51.100.7")[0] == 405
        assert send(port, "site1.testdomain.com", "/admin", headers={"X-Debug": "1"},
                    proxy_from="198.51.100.7")[2] == "site1"
        assert send(port, "site1.testdomain.com", method="POST", proxy_from="198.51.100.7")[0] == 405
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            send(port, "site1.testdomain.com")  # no PROXY header: refused


def test_real_haproxy_expects_the_header_from_loopback_only_with_accept_proxy_loopback(tmp_path):
    port = free_port()
    data = {"frontends": {"f": {"bind": f"127.0.0.1:{port}", "accept_proxy": "loopback", "default_backend": "b"}},
            "backends": {"b": {"servers": [{"name": "one", "container": "web1"}]}}}
    with running(tmp_path, data, {"web1": echo("one")}, port):
        assert send(port, "any.test", proxy_from="198.51.100.7") == (200, "one 198.51.100.7 198.51.100.7", "one")
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            send(port, "any.test")  # from 127.0.0.1 without a header: refused (a device must send one)
    # A client from elsewhere than loopback connects without a header: tests/test_guide_lab.py, on a real LAN.


def test_check_asks_from_its_own_address_and_reads_whom_haproxy_saw(tmp_path):
    port = free_port()
    data = {"frontends": {"f": {"bind": f"127.0.0.1:{port}", "default_backend": "b"}},
            "backends": {"b": {"servers": [{"name": "one", "container": "web1"}]}}}
    with running(tmp_path, data, {"web1": echo("SITE1")}, port):
        answer = ask("127.0.0.1", port, "any.test", source="127.0.0.2")
        assert (answer.status, answer.server, answer.marker) == (200, "one", "SITE1")
        assert (answer.sent_from, answer.seen) == ("127.0.0.2", "127.0.0.2")  # X-Client-Seen, set by HAProxy
        assert ask("127.0.0.1", port, "any.test").seen == "127.0.0.1"


def test_real_haproxy_honours_weights_backups_and_maxconn(tmp_path):
    port, stats = free_port(), free_port()
    data = {"frontends": {"f": {"bind": f"127.0.0.1:{port}", "routes": [
        {"host": "weighted.test", "backend": "weighted"}, {"host": "backup.test", "backend": "backup"},
        {"host": "queued.test", "backend": "queued"}]}},
        "backends": {
            "weighted": {"servers": [{"name": "heavy", "container": "one", "weight": 3},
                                     {"name": "light", "container": "two", "weight": 1}]},
            "backup": {"health_check": {"interval": "200ms", "rise": 1, "fall": 1},
                       "servers": [{"name": "main", "container": "three"},
                                   {"name": "spare", "container": "four", "backup": True}]},
            "queued": {"servers": [{"name": "slow", "container": "slow", "maxconn": 1}]}},
        "stats": {"port": stats}}
    servers = {"one": echo("one"), "two": echo("two"), "three": echo("three"), "four": echo("four"),
               "slow": echo("slow", delay=0.3)}
    with running(tmp_path, data, servers, port):
        counts = Counter(send(port, "weighted.test")[2] for _ in range(40))
        assert counts == {"heavy": 30, "light": 10}, counts
        assert {send(port, "backup.test")[2] for _ in range(6)} == {"main"}
        servers["three"].shutdown()
        servers["three"].server_close()  # the main server is gone: the health check takes it out
        # Until the backup answers, which it does only once HAProxy holds main down (a 200 is not enough:
        # HAProxy may reuse an idle connection whose handler thread outlives main's listener; a unit run saw it).
        assert until(lambda: send(port, "backup.test")[2] == "spare", 10, 0.2)
        assert {send(port, "backup.test")[2] for _ in range(6)} == {"spare"}
        started = time.monotonic()  # four at once to a server that takes 0.3 s and one at a time
        threads = [threading.Thread(target=send, args=(port, "queued.test")) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert time.monotonic() - started >= 4 * 0.3 - 0.05  # served one after another, not together
        csv = http.client.HTTPConnection("127.0.0.1", stats, timeout=5)
        csv.request("GET", "/stats;csv")
        rows = {(r[0], r[1]): r for r in (line.split(",") for line in csv.getresponse().read().decode().splitlines())}
        header = rows[("# pxname", "svname")]
        slow, queue = (dict(zip(header, rows[("queued", name)])) for name in ("slow", "BACKEND"))
        assert slow["slim"] == "1" and slow["smax"] == "1" and int(queue["qmax"]) >= 1, (slow, queue)
        assert dict(zip(header, rows[("weighted", "heavy")]))["weight"] == "3"
        assert dict(zip(header, rows[("backup", "spare")]))["bck"] == "1"

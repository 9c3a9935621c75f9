"""The guide's lab (the repository's lab.yaml) on a real LXD with the real Debian image:
Apache and HAProxy in containers, real HTTP through a proxy device on 127.0.0.1.

One lab for the whole module (Debian containers take seconds to create); every test leaves it
converged.  It runs in a project of its own, with its own veth pair and bridge, so it never
meets the lab `make lab` brings up."""

from __future__ import annotations

import contextlib
import io
import shlex
import shutil
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, LabDir, drop_project, new_project, next_tag, sh, until
from docs_scenario import GUIDE, documented, masked, run_scenario, shown_in_docs, wrong_exit_codes

from reconciler.check import ask

HTTP_PORT = 18480
LAN_HOST = "10.203.41.1"  # the host's address on the test's LAN bridge


def override(tag: str, parent: str, peer: str, extra: str = "", lan_host: str = LAN_HOST,
             http_port: int = HTTP_PORT) -> str:
    return f"""\
lab: {tag}
lxd: {{project: {tag}}}
networks:
  lan0: null
  {tag}lan:
    description: the guide's LAN, simulated (DHCP for the macvlan NICs)
    config: {{ipv4.address: {lan_host}/24, ipv4.nat: false, ipv4.dhcp: true, ipv6.address: none,
             bridge.external_interfaces: {peer}}}
profiles:
  macvlan:
    devices:
      eth0: {{parent: {parent}}}
containers:
  proxyha:
    devices:
      http: {{listen: "tcp:127.0.0.1:{http_port}"}}
      https: {{listen: "tcp:127.0.0.1:{http_port + 1}"}}
{extra}"""


WEB3 = """\
  web3:
    image: reconciler-debian
    profiles: [default, macvlan]
    vars: {marker: SITE3}
    packages: [apache2]
    services: {apache2: {}}
    files:
      /etc/network/interfaces: {content: "auto lo\\niface lo inet loopback\\nauto eth0\\niface eth0 inet dhcp\\n"}
      /var/www/html/index.html: {template: "<h1>{{ vars.marker }} HTTP Server <strong>Test Page</strong></h1>\\n"}
haproxy:
  proxyha:
    backends:
      subdomain1:
        servers:
          - {name: site1, container: web1, port: 80}
          - {name: site2, container: web2, port: 80}
          - {name: site3, container: web3, port: 80}
"""

PORT_81 = """\
    services: {apache2: null}
haproxy:
  proxyha:
    frontends:
      extra_frontend: {bind: "*:81", default_backend: subdomain1}
"""

BAD_TLS = """\
haproxy:
  proxyha:
    frontends:
      http_frontend:
        tls: {certificate: /etc/haproxy/certs/missing.pem}
"""


class Guide(LabDir):
    # The host's address on the lab's simulated LAN and the proxy devices' ports: a module whose lab may
    # be up at the same time as another's (another pytest-xdist worker) sets its own.
    lan_host, http_port = LAN_HOST, HTTP_PORT

    def __init__(self, path: Path, tag: str, parent: str, peer: str):
        super().__init__(path, tag, tag)
        self.parent, self.peer = parent, peer
        shutil.copy(ROOT / "lab.yaml", self.file)
        self.set_override()

    def set_override(self, extra: str = "") -> None:
        (self.dir / "lab.override.yaml").write_text(override(self.tag, self.parent, self.peer, extra, self.lan_host,
                                                             self.http_port))

    def apply(self):
        result = self.run("apply", "--yes")
        assert result.code == 0, result.out[-3000:] + result.err
        return result

    def tutorial_run(self, argv: list[str]) -> tuple[int, str]:
        """How `reconcile ARGV` exits and what it prints (standard output, then error), in the names the
        docs use (those of `make lab`).  Standard input is not a terminal, as in scripts/docs-outputs.py."""
        stdin, sys.stdin = sys.stdin, io.StringIO()
        try:
            result = self.run(*argv)
        finally:
            sys.stdin = stdin
        names = [(f" (with {self.dir / 'lab.override.yaml'} merged)", ""), (" (with lab.override.yaml merged)", ""),
                 (str(self.file), "lab.yaml"), (self.parent, "labnet0"), (self.peer, "labnet1"),
                 (f"{self.tag}lan", "lan0"), (self.tag, "haproxy-lab"), (str(self.http_port + 1), "443"),
                 (str(self.http_port), "80")]
        out = result.out + result.err
        for old, new in names:
            out = out.replace(old, new)
        return result.code, out

    def serving(self) -> bool:
        return all(a.status == 200 for a in self.answers("site1.testdomain.com", 2))

    def answers(self, host: str, n: int = 6) -> list:
        return [ask("127.0.0.1", self.http_port, host) for _ in range(n)]

    def lan_address(self, container: str) -> str:
        nics = self.instance(container, "/state")["network"]["eth0"]["addresses"]
        return next(a["address"] for a in nics if a["family"] == "inet")

    def logged_once(self, container: str, path: str, marker: str) -> str:
        """The one line of a log inside a container naming `marker`, waited for (syslog writes it a moment later)."""
        lines = lambda: [line for line in self.lxc("exec", container, "--", "cat", path).splitlines() if marker in line]
        assert until(lambda: len(lines()) == 1, 10), lines()
        return lines()[0]


def restarted(guide: LabDir, *names: str, seconds: float = 120) -> None:
    """`lxc restart --force` (a clean shutdown timed out on a loaded machine: "Failed shutting down instance"),
    then wait until LXD shows each one running again with a new init process. LXD 5.0's client can exit 1
    while the restart goes on (it lost the operation, "Operation not found"): the test goes on only once the
    restart has visibly happened, whatever the client said."""
    before = {n: guide.instance(n, "/state").get("pid") for n in names}
    done = sh("lxc", "--project", guide.project, "restart", "--force", *names, check=False)
    states: dict = {}

    def again() -> bool:
        states.update({n: guide.instance(n, "/state") for n in names})
        return all(s.get("status") == "Running" and s.get("pid") not in (None, 0, before[n]) for n, s in states.items())

    assert until(again, seconds), (f"lxc restart {' '.join(names)} (exit {done.returncode}: {done.stderr.strip()}):"
                                   f" not running again after {seconds}s: {states}")


@contextlib.contextmanager
def guide_lab(tmp_path_factory, name: str, kind: type = Guide):
    """The repository's lab.yaml (the guide's lab) in an LXD project and on a simulated LAN of its own
    (`kind`: the test's class for it, made with its folder, tag, veth end and peer)."""
    built = sh("bash", str(ROOT / "scripts" / "image-debian.sh"), check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    tag = next_tag()
    parent, peer = f"{tag}v0", f"{tag}v1"
    sh("bash", str(ROOT / "scripts" / "lan-up.sh"), parent, peer)
    new_project(tag)
    try:
        yield kind(tmp_path_factory.mktemp(name), tag, parent, peer)
    finally:
        drop_project(tag)
        sh("ip", "link", "delete", parent, check=False)


@pytest.fixture(scope="module")
def guide(lxd_ready, tmp_path_factory):
    with guide_lab(tmp_path_factory, "guide") as lab:
        lab.scenario = run_scenario(GUIDE, lab.tutorial_run,
                                    lambda command: sh(*shlex.split(_in_project(command, lab.tag))),
                                    lambda: until(lab.serving, 30))
        yield lab


def _in_project(command: str, project: str) -> str:
    """A tutorial command (`lxc exec proxyha -- ...`) aimed at the test's own project."""
    return command.replace("lxc ", f"lxc --project {project} ", 1)


def test_the_docs_outputs_are_what_the_commands_print_and_exit_with(guide):
    """The guide's output blocks in docs/tutorial.md and docs/cli.md come from a real run
    (scripts/docs-outputs.py writes them); each step ended with the exit code the docs give it."""
    assert not wrong_exit_codes(GUIDE, guide.scenario)
    documented_blocks = documented(GUIDE)
    for name, step in shown_in_docs(GUIDE).items():
        printed = guide.scenario[name].text
        assert masked(printed) == masked(documented_blocks[name]), (
            f"{step.doc.name} block {name!r} no longer matches what the command prints; run"
            f" `make docs-outputs`. Printed now:\n{printed}")


def test_from_empty_the_check_alternates_both_sites_and_a_second_plan_is_empty(guide):
    assert "Apply complete!" in guide.scenario["apply-from-nothing"].text
    serving = lambda: all(a.status == 200 for a in guide.answers("site1.testdomain.com", 2))
    assert until(serving, 15)  # HAProxy's reload and first health checks finish just after apply
    for host in ("site1.testdomain.com", "site2.testdomain.com"):
        markers = [a.marker for a in guide.answers(host, 4)]
        assert sorted(set(markers)) == ["SITE1", "SITE2"], markers
        assert all(a != b for a, b in zip(markers, markers[1:])), f"not alternating: {markers}"
    check = guide.run("check")
    assert check.code == 0 and "check passed" in check.out, check.out
    assert guide.run("plan", "--detailed-exitcode").code == 0


def test_the_client_keeps_its_address_through_the_device_and_directly_on_the_lan(guide):
    """HAProxy's log and the backends' X-Client-IP name the client, never 127.0.0.1: through the proxy device
    (PROXY protocol) from a loopback address that is not the device's own, and straight to proxyha on the LAN
    from the host's address there (no header: HAProxy expects one from loopback only)."""
    proxyha = guide.lan_address("proxyha")
    for way, client, (address, port), source in (("device", "127.0.0.2", ("127.0.0.1", HTTP_PORT), "127.0.0.2"),
                                                 ("lan", LAN_HOST, (proxyha, 80), None)):
        path = f"/?client={guide.tag}-{way}"  # this run's own: the logs name it once
        answer = ask(address, port, "site1.testdomain.com", path, source=source)
        assert (answer.status, answer.marker[:4], answer.sent_from) == (200, "SITE", client), answer
        assert answer.seen == client  # HAProxy's own X-Client-Seen
        line = guide.logged_once("proxyha", "/var/log/haproxy.log", path)
        print(f"{way}: haproxy.log: {line}")
        assert f" {client}:" in line and "127.0.0.1" not in line, line
        web = {"site1": "web1", "site2": "web2"}[answer.server]
        line = guide.logged_once(web, "/var/log/apache2/client-ip.log", path)
        print(f"{way}: {web} client-ip.log: {line}")
        assert line == f'{client} {client} {proxyha} "GET {path} HTTP/1.1" 200'  # X-Client-IP, X-Forwarded-For, HAProxy
    check = guide.run("check")  # the proof `make lab` prints
    assert f"client 127.0.0.2 via 127.0.0.1:{HTTP_PORT}: HAProxy saw 127.0.0.2 (proxy device http passes the" \
           " client on)" in check.out, check.out


def test_drift_inside_and_outside_the_containers_is_shown_and_repaired(guide):
    guide.lxc("exec", "proxyha", "--", "sed", "-i", "s/roundrobin/leastconn/", "/etc/haproxy/haproxy.cfg")
    guide.lxc("exec", "proxyha", "--", "rm", "/etc/haproxy/errors/503.http")
    guide.lxc("exec", "proxyha", "--", "systemctl", "stop", "haproxy")
    guide.lxc("exec", "web1", "--", "sed", "-i", "s/SITE1/SITE9/", "/var/www/html/index.html")
    guide.lxc("config", "device", "remove", "proxyha", "http")
    plan = guide.run("plan")
    for expected in ("~ file.proxyha:/etc/haproxy/haproxy.cfg will be updated",
                     "-    balance leastconn", "+    balance roundrobin",
                     "+ file.proxyha:/etc/haproxy/errors/503.http will be created",
                     "~ service.proxyha:haproxy will be updated", "running: false -> true",
                     "-<h1>SITE9 HTTP Server", "+<h1>SITE1 HTTP Server",
                     "~ instance.proxyha will be updated", "devices.http: (none) ->"):
        assert expected in plan.out, f"{expected!r} not in:\n{plan.out}"
    guide.apply()
    assert guide.run("plan", "--detailed-exitcode").code == 0
    assert until(lambda: guide.run("check").code == 0, 15)


def test_a_stopped_backend_is_taken_out_by_the_health_check(guide):
    guide.lxc("stop", "--force", "web2")
    only_site1 = lambda: all(a.status == 200 and a.server == "site1" for a in guide.answers("site1.testdomain.com"))
    assert until(only_site1, 20), [(a.status, a.server) for a in guide.answers("site1.testdomain.com")]
    assert guide.run("check").code == 0  # web2 is not running: round robin over web1 alone is right
    plan = guide.run("plan")
    assert "> instance.web2 will be started" in plan.out
    guide.apply()
    both = lambda: {a.server for a in guide.answers("site1.testdomain.com")} == {"site1", "site2"}
    assert until(both, 30)


def test_a_config_haproxy_rejects_never_goes_live(guide):
    guide.set_override(BAD_TLS)
    try:
        result = guide.run("apply", "--yes")
        assert result.code == 1
        assert "rejected the new file" in result.out and "missing.pem" in result.out, result.out[-3000:]
        assert "Skipped: service.proxyha:haproxy (reload)" in result.out
        assert guide.serving()  # the old config still serves (plain HTTP; check would follow lab.yaml's TLS)
        live = guide.lxc("exec", "proxyha", "--", "cat", "/etc/haproxy/haproxy.cfg")
        assert "missing.pem" not in live
    finally:
        guide.set_override()
    guide.apply()


def test_a_port_haproxy_cannot_bind_fails_the_apply_and_converges_once_free(guide):
    # Something that is not HAProxy holds port 81 inside proxyha: haproxy -c passes, the reload cannot bind.
    guide.lxc("exec", "proxyha", "--", "sh", "-c", "cp /etc/apache2/ports.conf /root/ports.conf.orig &&"
              " echo 'Listen 81' > /etc/apache2/ports.conf && systemctl start apache2")
    guide.set_override(PORT_81)  # lab.yaml's proxyha keeps apache2 stopped: this lab stops caring
    try:
        result = guide.run("apply", "--yes")
        assert result.code == 1, result.out[-2000:]
        assert "haproxy does not hold port(s) 80, 81" in result.out, result.out[-1500:]
        assert "cannot bind socket" in result.out, result.out[-1500:]
        assert "listening: [80] -> [80, 81]" in guide.run("plan").out  # the next run knows
        assert guide.run("check").code == 0  # the old workers still serve port 80
        guide.lxc("exec", "proxyha", "--", "sh", "-c",
                  "systemctl stop apache2 && cp /root/ports.conf.orig /etc/apache2/ports.conf")
        guide.apply()
        assert guide.run("plan", "--detailed-exitcode").code == 0
    finally:
        guide.set_override()
    guide.apply()


def test_a_third_web_server_joins_while_requests_flow_without_one_failing(guide):
    guide.set_override(WEB3)
    results, done = [], threading.Event()
    applier = threading.Thread(target=lambda: (results.append(guide.run("apply", "--yes")), done.set()))
    failures, sent = [], 0
    applier.start()
    while not done.is_set() and sent < 5000:  # bounded: the apply takes well under a minute
        answer = ask("127.0.0.1", HTTP_PORT, "site1.testdomain.com")
        sent += 1
        if answer.status != 200:
            failures.append((answer.status, answer.marker))
    applier.join(timeout=300)
    assert results and results[0].code == 0, results and results[0].out[-3000:]
    # A new container's server: haproxy.cfg written with its address once it has one, and the server added
    # through HAProxy's runtime API (its health down: in by its checks once Apache serves), no reload.
    assert "through HAProxy's runtime API, no reload: subdomain1/site3 added (web3 port 80)" in results[0].out
    assert "service.proxyha:haproxy: reloaded" not in results[0].out, results[0].out
    assert sent > 20 and failures == [], f"{len(failures)} of {sent} failed: {failures[:3]}"
    three = lambda: {a.server for a in guide.answers("site1.testdomain.com", 9)} == {"site1", "site2", "site3"}
    assert until(three, 20)
    check = guide.run("check")
    assert check.code == 0 and "site3(SITE3)" in check.out


def test_the_lab_works_after_its_containers_restart_without_an_apply(guide):
    restarted(guide, "proxyha", "web1", "web2", "web3")
    assert until(lambda: guide.run("check").code == 0, 90, step=3), guide.run("check").out
    plan = guide.run("plan", "--detailed-exitcode")
    assert plan.code == 0, plan.out


def test_check_proves_what_it_says(guide):
    too_few = guide.run("check", "--requests", "1")
    assert too_few.code == 1 and "--requests 1 cannot show round robin reaching the 2 servers" in too_few.out
    guide.lxc("exec", "proxyha", "--", "systemctl", "stop", "haproxy")
    try:
        down = guide.run("check", "--requests", "3")
        assert down.code == 1 and "check FAILED" in down.out
        assert "waiting up to 15s for site1.testdomain.com to answer" in down.out
        failures = [line for line in down.out.splitlines() if line.startswith("  site1.testdomain.com:")]
        assert len(failures) == 1 and "`reconcile plan`" in failures[0], down.out
    finally:
        guide.lxc("exec", "proxyha", "--", "systemctl", "start", "haproxy")
    assert until(lambda: guide.run("check").code == 0, 20)


def test_check_explains_a_lab_without_a_frontend(guide, tmp_path):
    lab = LabDir(tmp_path, guide.project, guide.tag)
    lab.write(f"lab: {guide.tag}x\nlxd: {{project: {guide.project}}}\ncontainers: {{}}\n")
    result = lab.run("check")
    assert result.code == 1 and "Nothing to check: lab" in result.out and "no HAProxy frontend" in result.out

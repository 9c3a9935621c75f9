"""The guide's lab with each example of examples/*.override.yaml, on a real LXD with the real Debian image:
real HAProxy, real Apache, real HTTP.

One lab for the module (Debian containers take seconds to create), in a project of its own with its
own veth pair and LAN bridge (10.203.62.0/24), so it never meets `make lab`'s or test_guide_lab's.
Each test merges one example into the test's own override, applies it, sends traffic, and puts the
guide's lab back.  The host reaches HAProxy through lab.yaml's device on 127.0.0.1, and directly on
the LAN: from its own address on the LAN bridge to proxyha's address there, or to a network forward's.
An example's global names (network ACLs, storage pools) and its addresses on lab.yaml's LAN
(10.203.7.x) are made the test's."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, LabDir, sh
from test_guide_lab import guide_lab, restarted, until

from reconciler import dns
from reconciler.check import ask
from reconciler.source import read_yaml

LAN_HOST, HTTP_PORT = "10.203.62.1", 18610
LAN_PREFIX = "10.203.62."  # the examples' addresses on lab.yaml's LAN (10.203.7.x) are these here
ENV = {"LAB_LAN_ADDRESS": f"{LAN_HOST}/24"}  # the LAN as the examples name it (access-rules: from_lan)


def base_override(tag: str, parent: str, peer: str) -> dict:
    """What makes the guide's lab this test's: its project, LAN bridge, veth pair and host ports."""
    return {"lab": tag, "lxd": {"project": tag},
            "networks": {"lan0": None, f"{tag}lan": {
                "description": "the guide's LAN, simulated (DHCP for the macvlan NICs)",
                "config": {"ipv4.address": f"{LAN_HOST}/24", "ipv4.nat": False, "ipv4.dhcp": True,
                           "ipv6.address": "none", "bridge.external_interfaces": peer}}},
            "profiles": {"macvlan": {"devices": {"eth0": {"parent": parent}}}},
            "containers": {"proxyha": {"devices": {"http": {"listen": f"tcp:127.0.0.1:{HTTP_PORT}"},
                                                   "https": {"listen": f"tcp:127.0.0.1:{HTTP_PORT + 1}"}}}}}


def merged(example: dict, mine: dict) -> dict:
    """`mine` over `example`, mapping by mapping (as lab.override.yaml merges over lab.yaml)."""
    out = dict(example)
    for key, value in mine.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Guide(LabDir):
    def __init__(self, path: Path, tag: str, parent: str, peer: str):
        super().__init__(path, tag, tag)
        self.base = base_override(tag, parent, peer)
        shutil.copy(ROOT / "lab.yaml", self.file)
        self.use()

    def use(self, example: str | None = None) -> None:
        """lab.override.yaml: the example (its LAN and ACL names made this test's), then the test's own."""
        self.write(self.example(example) if example else {})

    def example(self, name: str) -> dict:
        """The example as this test's: its LAN the test's bridge and subnet (lan0 and lab.yaml's default
        10.203.7.0/24, which forwards' keys name), its global names (ACLs, storage pools) the test's."""
        data = json.loads(json.dumps(read_yaml(ROOT / "examples" / f"{name}.override.yaml").data))
        data = {k: v for k, v in data.items() if not k.startswith("x-")}
        text = json.dumps(data).replace('"lan0"', f'"{self.tag}lan"').replace("10.203.7.", LAN_PREFIX)
        for shared in [*data.get("acls", {}), *data.get("storage_pools", {})]:  # global here, as networks are
            text = text.replace(f'"{shared}"', f'"{self.tag}{shared}"').replace(
                f'"security.acls": "{shared}"', f'"security.acls": "{self.tag}{shared}"')
        return json.loads(text)

    def write(self, *overrides: dict) -> None:
        """lab.override.yaml: the overrides merged in order, then the test's own."""
        data: dict = {}
        for override in overrides:
            data = merged(data, override)
        (self.dir / "lab.override.yaml").write_text(json.dumps(merged(data, self.base), indent=1))  # JSON is YAML

    def logged_once(self, container: str, path: str, marker: str) -> str:
        """The one line of a log inside a container naming `marker`, waited for (syslog writes it a moment later)."""
        lines = lambda: [line for line in self.shell(container, f"cat {path}").splitlines() if marker in line]
        assert until(lambda: len(lines()) == 1, 10), lines()
        return lines()[0]

    def apply(self) -> str:
        result = self.run("apply", "--yes")
        errors = "\n".join(line for line in result.out.splitlines() if line.startswith("Error:"))
        assert result.code == 0, errors + "\n" + result.out[-2000:] + result.err
        return result.out

    def plan(self) -> str:
        result = self.run("plan")
        assert result.code == 0, result.err
        return result.out

    def shell(self, container: str, command: str) -> str:
        """What a shell command inside the container prints (through LabDir.exec_recorded, as lxc("exec", ...) is)."""
        return self.exec_recorded(container, ["sh", "-c", command])

    def leases(self) -> list[tuple[str, str, str]]:
        """(host name, MAC, address) of every lease LXD knows on the LAN bridge: what a failure shows."""
        done = sh("lxc", "query", f"/1.0/networks/{self.tag}lan/leases?project={self.tag}", check=False)
        found = json.loads(done.stdout or "[]") if done.returncode == 0 else []
        return [(lease.get("hostname", ""), lease.get("hwaddr", ""), lease.get("address", "")) for lease in found]

    def lan_address(self, container: str) -> str:
        """Its IPv4 address on the LAN ('' while it has none: DHCP just after a start)."""
        nics = (self.instance(container, "/state").get("network") or {}).get("eth0", {}).get("addresses", [])
        return next((a["address"] for a in nics if a["family"] == "inet"), "")


def get(address: str, port: int, host: str, path: str = "/", headers: dict | None = None) -> tuple[int, str, str]:
    """One request from the host; (status, body, X-Served-By) or (0, reason, '-')."""
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close", **(headers or {})})
        response = conn.getresponse()
        answer = response.status, response.read(65536).decode(), response.getheader("X-Served-By", "-")
    except OSError as err:
        answer = 0, str(err), "-"
    finally:
        conn.close()
    print(f"GET http://{host}{path} via {address}:{port} {headers or ''} -> {answer[0]} {answer[2]}"
          f" {answer[1][:60]!r}")  # the record of traffic (pytest -s shows it)
    return answer


def serving(guide: Guide) -> bool:
    return all(get("127.0.0.1", HTTP_PORT, h)[0] == 200 for h in ("site1.testdomain.com", "site2.testdomain.com"))


@pytest.fixture(scope="module")
def guide(lxd_ready, tmp_path_factory):
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        with guide_lab(tmp_path_factory, "examples", Guide) as lab:
            lab.apply()
            assert until(lambda: serving(lab), 30)
            yield lab
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def example(guide, request):
    """The example named by the test's parameter, applied; the guide's lab put back afterwards."""
    guide.use(request.param)
    yield guide
    guide.use()
    guide.apply()
    assert until(lambda: serving(guide), 30)


@pytest.mark.parametrize("example", ["access-rules"], indirect=True)
def test_access_rules_deny_with_the_guides_page_and_route_the_rest(example):
    guide = example
    guide.apply()
    proxyha = guide.lan_address("proxyha")  # asked from the host's address on the LAN bridge, LAN_HOST
    assert until(lambda: get(proxyha, 80, "site1.testdomain.com")[0] == 403, 30)
    status, body, server = get(proxyha, 80, "site1.testdomain.com")  # from the LAN side: denied
    assert (status, server) == (403, "-") and "Request forbidden by administrative rules." in body
    answers = [get("127.0.0.1", HTTP_PORT, "site1.testdomain.com") for _ in range(4)]  # from 127.0.0.1: routed
    assert {(a[0], a[2]) for a in answers} == {(200, "site1"), (200, "site2")}
    status, body, server = get("127.0.0.1", HTTP_PORT, "site1.testdomain.com", "/api/items")
    assert (status, server) == (401, "-") and "Send X-Lab-Token." in body
    status, _, server = get("127.0.0.1", HTTP_PORT, "site2.testdomain.com", "/api/items",
                            {"X-Lab-Token": "open-sesame"})
    assert (status, server) == (404, "api-web2")  # routed to the api pool (web2 has no /api page)
    assert get(proxyha, 80, "site2.testdomain.com", "/api/items", {"X-Lab-Token": "open-sesame"})[0] == 403
    check = guide.run("check")
    assert check.code == 0 and "check passed" in check.out, check.out


@pytest.mark.parametrize("example", ["pools"], indirect=True)
def test_weights_backups_maxconn_and_the_stats_page(example):
    guide = example
    guide.apply()
    assert until(lambda: serving(guide), 30)
    counts: dict[str, int] = {}
    for _ in range(40):  # ten rounds of weighted round robin
        server = get("127.0.0.1", HTTP_PORT, "site1.testdomain.com")[2]
        counts[server] = counts.get(server, 0) + 1
    print("40 requests for site1.testdomain.com answered by:", counts)
    assert counts == {"site1": 30, "site2": 10}, counts
    assert {get("127.0.0.1", HTTP_PORT, "site2.testdomain.com")[2] for _ in range(6)} == {"site2"}  # no backup
    stats = {(row[0], row[1]): row for row in (line.split(",") for line in guide.shell(
        "proxyha", "curl -s 'http://127.0.0.1:8404/stats;csv'").splitlines())}
    field = lambda proxy, server, name: dict(zip(stats[("# pxname", "svname")], stats[(proxy, server)]))[name]
    assert (field("subdomain1", "site1", "weight"), field("subdomain1", "site1", "slim")) == ("3", "20")
    assert field("subdomain2", "site1", "bck") == "1" and field("subdomain2", "site2", "bck") == "0"
    print("stats;csv:", {k: (field(*k, "weight"), field(*k, "slim"), field(*k, "bck")) for k in (
        ("subdomain1", "site1"), ("subdomain1", "site2"), ("subdomain2", "site2"), ("subdomain2", "site1"))})
    assert get(guide.lan_address("proxyha"), 8404, "proxyha", "/stats")[0] == 0  # 127.0.0.1 inside only
    guide.lxc("stop", "--force", "web2")
    backup = lambda: {get("127.0.0.1", HTTP_PORT, "site2.testdomain.com")[2] for _ in range(4)} == {"site1"}
    assert until(backup, 30), "the backup never took over"
    check = guide.run("check")  # web2 down: the backup is the one expected
    assert check.code == 0, check.out
    assert "> instance.web2 will be started" in guide.plan()
    guide.apply()
    assert until(lambda: {get("127.0.0.1", HTTP_PORT, "site2.testdomain.com")[2] for _ in range(4)} == {"site2"},
                 60), "web2 never came back"


@pytest.mark.parametrize("example", ["network-acls"], indirect=True)
def test_an_acl_on_the_lan_keeps_the_host_to_http_and_the_lab_working(example, guide):
    open_lan = guide.example("network-acls")
    del open_lan["acls"]
    open_lan["networks"] = {}
    (guide.dir / "lab.override.yaml").write_text(json.dumps(merged(open_lan, guide.base)))
    guide.apply()  # first without the ACL: web1's port 8081 answers the host
    web1 = guide.lan_address("web1")
    assert until(lambda: get(web1, 8081, "web1")[0] == 200, 30)
    guide.use("network-acls")
    shown = guide.plan()
    assert f"+ acl.{guide.tag}lan-web will be created" in shown and \
        f'config["security.acls"]: (none) -> "{guide.tag}lan-web"' in shown, shown
    guide.apply()
    assert get(web1, 80, "web1")[0] == 200  # HTTP from the host: allowed
    assert get(web1, 8081, "web1")[0] == 0  # the LAN-only port: refused to the host
    inside = guide.shell("proxyha", f"curl -s -o /dev/null -w '%{{http_code}}' http://{web1}:8081/")
    assert inside == "200"  # from the LAN itself: the ACL applies at the bridge's edge only
    print(f"curl http://{web1}:8081/ from proxyha (on the LAN) -> {inside}")
    restarted(guide, "web1")  # DHCP through the bridge with the ACL: web1 gets its address again
    assert until(lambda: guide.run("check").code == 0, 90, step=3), guide.run("check").out
    assert guide.run("plan", "--detailed-exitcode").code == 0


@pytest.fixture
def shared_site(guide):
    """The guide's lab with shared-site's pool and volume; afterwards the guide's lab put back (from nothing
    if the test destroyed it) and the test's pool gone, whatever the test left."""
    guide.use("shared-site")
    yield guide
    guide.use()
    done = guide.run("apply", "--yes", "--force")  # the volume and its pool go: the data with them
    for pool in json.loads(sh("lxc", "storage", "list", "--format=json").stdout):
        if pool["name"].startswith(guide.tag):  # left by a test cut short: its volumes, then the pool
            for vol in json.loads(guide.lxc("storage", "volume", "list", pool["name"], "--format=json")):
                guide.lxc("storage", "volume", "delete", pool["name"], vol["name"], check=False)
            sh("lxc", "storage", "delete", pool["name"], check=False)
    assert done.code == 0, done.out[-2000:] + done.err
    assert until(lambda: serving(guide), 30)


def shared_answers(path: str, n: int = 4) -> set[tuple[int, str, str]]:
    return {(status, body, server) for status, body, server in
            (get("127.0.0.1", HTTP_PORT, "site1.testdomain.com", path) for _ in range(n))}


def test_one_volume_serves_both_web_servers_outlives_a_replace_and_goes_with_destroy(shared_site):
    guide, pool = shared_site, f"{shared_site.tag}labdata"
    shown = guide.plan()
    assert f"+ pool.{pool} will be created" in shown and f"+ volume.{pool}/shared will be created" in shown, shown
    done = guide.apply()
    assert done.index(f"volume.{pool}/shared: created") < done.index("instance.web1: "), done
    assert until(lambda: serving(guide), 30)
    page = f"shared by web1 and web2 ({guide.tag})\n"
    guide.shell("web1", f"printf '{page}' > /var/www/html/shared/hello.txt")  # put there through web1 only
    assert until(lambda: shared_answers("/shared/hello.txt") == {(200, page, "site1"), (200, page, "site2")}, 30)
    check = guide.run("check")  # round robin of site1 and site2 as before
    assert check.code == 0 and "check passed" in check.out, check.out
    # web1 replaced (its image named by fingerprint): a new container, the same volume and content
    image = json.loads(sh("lxc", "image", "list", "reconciler-debian", "--format=json").stdout)[0]["fingerprint"]
    guide.write(guide.example("shared-site"), {"containers": {"web1": {"image": image}}})
    assert "-/+ instance.web1 will be replaced" in guide.plan()
    before = guide.instance("web1")["created_at"]
    assert "instance.web1: replaced" in guide.apply()
    assert guide.instance("web1")["created_at"] != before
    assert guide.shell("web1", "cat /var/www/html/shared/hello.txt") == page
    assert until(lambda: shared_answers("/shared/hello.txt") == {(200, page, "site1"), (200, page, "site2")}, 60)
    assert guide.run("plan", "--detailed-exitcode").code == 0
    # out of lab.yaml, the volume's data would go: apply wants --force, and nothing is done without it
    guide.write({"containers": {"web1": {"image": image}}})  # the example dropped: its mounts, volume and pool
    refused = guide.run("apply", "--yes")
    assert refused.code == 1 and f"it deletes volume.{pool}/shared: the data on it is lost" in refused.err, refused.err
    assert guide.shell("web2", "cat /var/www/html/shared/hello.txt") == page
    # destroy: the lab's volume and pool go (the plan says the data goes), a volume not the lab's stays
    guide.write(guide.example("shared-site"), {"containers": {"web1": {"image": image}}})
    foreign = f"/1.0/storage-pools/default/volumes/custom/{guide.tag}hand?project={guide.project}"
    guide.lxc("storage", "volume", "create", "default", f"{guide.tag}hand")
    try:
        destroyed = guide.run("destroy", "--yes")
        assert destroyed.code == 0, destroyed.out[-2000:] + destroyed.err
        assert "the data on it is lost" in destroyed.out
        assert destroyed.out.index("instance.web2: deleted") < destroyed.out.index(f"volume.{pool}/shared: deleted") \
            < destroyed.out.index(f"pool.{pool}: deleted"), destroyed.out
        assert sh("lxc", "query", f"/1.0/storage-pools/{pool}", check=False).returncode != 0
        assert json.loads(sh("lxc", "query", foreign).stdout)["name"] == f"{guide.tag}hand"  # untouched
    finally:
        guide.lxc("storage", "volume", "delete", "default", f"{guide.tag}hand", check=False)


FORWARD = f"{LAN_PREFIX}250"  # examples/forward.override.yaml's 10.203.7.250


@pytest.mark.parametrize("example", ["forward"], indirect=True)
def test_a_forward_on_the_lan_reaches_haproxy_which_sees_the_hosts_own_address(example):
    guide = example
    shown = guide.plan()
    assert f"+ forward.{guide.tag}lan/{FORWARD} will be created" in shown, shown
    done = guide.apply()
    assert done.index("instance.proxyha: ") < done.index(f"forward.{guide.tag}lan/{FORWARD}: created"), done
    # The LAN bridge's step ended once its dnsmasq served (restarted for the new DHCP range): a container
    # started on it at once gets its fixed address (before, run 16 found dnsmasq gone and proxyha on its old lease).
    assert dns.answers(LAN_HOST, "_gateway.lxd", 0), "the LAN's dnsmasq does not answer after apply"
    proxyha = f"{LAN_PREFIX}5"  # its fixed address on the LAN (LXD's DHCP leases it), the forward's target
    # proxyha's restart step ended once it held its fixed address (else apply's report would say what it holds)
    assert "not its fixed" not in done and guide.lan_address("proxyha") == proxyha, (done, guide.leases())
    assert until(lambda: get(FORWARD, 80, "site1.testdomain.com")[0] == 200, 60)
    servers: set[str] = set()  # through HAProxy to both web servers: bounded, as health checks settle after
    assert until(lambda: servers.add(get(FORWARD, 80, "site1.testdomain.com")[2]) or servers == {"site1", "site2"},
                 30, 0.5), servers  # proxyha's restart (under load one can be down a check or two: seen in a run)
    path = f"/?client={guide.tag}-forward"  # this run's own: the logs name it once
    answer = ask(FORWARD, 80, "site1.testdomain.com", path)
    assert (answer.status, answer.sent_from, answer.seen) == (200, LAN_HOST, LAN_HOST), answer
    line = guide.logged_once("proxyha", "/var/log/haproxy.log", path)
    print(f"forward: haproxy.log: {line}")
    assert f" {LAN_HOST}:" in line and "127.0.0.1" not in line and f" {proxyha}:" not in line, line
    web = {"site1": "web1", "site2": "web2"}[answer.server]
    line = guide.logged_once(web, "/var/log/apache2/client-ip.log", path)
    print(f"forward: {web} client-ip.log: {line}")
    assert line == f'{LAN_HOST} {LAN_HOST} {proxyha} "GET {path} HTTP/1.1" 200'  # X-Client-IP, X-Forwarded-For, HAProxy
    check = guide.run("check")  # the proxy devices on 127.0.0.1 still serve, beside the forward
    assert check.code == 0 and "check passed" in check.out, check.out
    assert guide.run("plan", "--detailed-exitcode").code == 0

"""The guide's lab with each example of examples/*.override.yaml, on a real LXD with the real Debian image:
real HAProxy, real Apache, real HTTP.

One lab for the module (Debian containers take seconds to create), in a project of its own with its
own veth pair and LAN bridge (10.203.62.0/24), so it never meets `make lab`'s or test_guide_lab's.
Each test merges one example into the test's own override, applies it, sends traffic, and puts the
guide's lab back.  The host reaches HAProxy through lab.yaml's device on 127.0.0.1, and directly on
the LAN: from its own address on the LAN bridge to proxyha's address there."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, LabDir
from test_guide_lab import guide_lab, restarted, until

from reconciler.source import read_yaml

LAN_HOST, HTTP_PORT = "10.203.62.1", 18610
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
        data = self.example(example) if example else {}
        (self.dir / "lab.override.yaml").write_text(json.dumps(merged(data, self.base), indent=1))  # JSON is YAML

    def example(self, name: str) -> dict:
        data = json.loads(json.dumps(read_yaml(ROOT / "examples" / f"{name}.override.yaml").data))
        data = {k: v for k, v in data.items() if not k.startswith("x-")}
        if "lan0" in data.get("networks", {}):
            data["networks"][f"{self.tag}lan"] = data["networks"].pop("lan0")
        text = json.dumps(data)
        for acl in data.get("acls", {}):  # network ACLs are global here, as networks are: the test's names
            text = text.replace(f'"{acl}"', f'"{self.tag}{acl}"').replace(f'"security.acls": "{acl}"',
                                                                          f'"security.acls": "{self.tag}{acl}"')
        return json.loads(text)

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
        """What a shell command inside the container prints (LabDir.exec runs an argv, which lxc() relies on)."""
        return self.exec(container, ["sh", "-c", command])

    def lan_address(self, container: str) -> str:
        nics = self.instance(container, "/state")["network"]["eth0"]["addresses"]
        return next(a["address"] for a in nics if a["family"] == "inet")


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

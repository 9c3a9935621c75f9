"""Network ACLs on a real LXD, proven by traffic between lab containers on two real bridges.

A bridge's ACL applies where traffic crosses between the bridge and the host (LXD 5.0: not inside
one bridge), so the client and the server sit on two lab bridges and the host routes between them:
what the server's bridge admits is what the ACL allows.  Tiny containers: busybox httpd on 80 (the
image's) and on 8080, 8081 (started by the test); busybox nc sends the requests."""

from __future__ import annotations

import time

import pytest

from reconciler.daemon import TITLES
from reconciler.engine import build_plan
from reconciler.lxd import Lxd
from reconciler.spec import load_lab

pytestmark = pytest.mark.daemons("lxd", "incus")

LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@}
acls:
  @TAG@web:
    description: the servers' bridge admits HTTP from the clients' bridge, and nothing else
    ingress:
      - {action: allow, source: 10.203.63.0/24, protocol: tcp, destination_port: 80, description: HTTP from the clients}
      - {action: drop, protocol: tcp, destination_port: 8081, description: dropped without an answer}
networks:
  @TAG@c:
    config: {ipv4.address: 10.203.63.1/24, ipv4.nat: false, ipv6.address: none}
  @TAG@s:
    config: {ipv4.address: 10.203.64.1/24, ipv4.nat: false, ipv6.address: none,
             security.acls: @TAG@web, security.acls.default.egress.action: allow}
profiles:
  clients:
    devices: {eth0: {type: nic, network: @TAG@c, name: eth0}}
  servers:
    devices: {eth0: {type: nic, network: @TAG@s, name: eth0}}
containers:
  client: {image: reconciler-tiny, profiles: [default, clients]}
  server: {image: reconciler-tiny, profiles: [default, servers]}
"""
ACL_DROPPED = LAB.split("acls:\n")[0] + "networks:" + LAB.split("networks:")[1].replace(
    "\n             security.acls: @TAG@web, security.acls.default.egress.action: allow", "")


def applied(lab, text: str = LAB) -> str:
    lab.write(text)
    result = lab.run("apply", "--yes")
    assert result.code == 0, result.out + result.err
    return result.out


def plan(lab) -> str:
    result = lab.run("plan")
    assert result.code == 0, result.err
    return result.out


def address(lab, name: str) -> str:
    """The container's IPv4 on eth0, from LXD's DHCP (bounded wait)."""
    for _ in range(60):
        nics = (lab.instance(name, "/state").get("network") or {}).get("eth0", {})
        found = [a["address"] for a in nics.get("addresses", []) if a["family"] == "inet"]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"{name} got no address from its bridge's DHCP")


def ask(lab, server: str, port: int) -> str:
    """One HTTP request from the client to the server: 'answered', 'refused' or 'no answer' (dropped)."""
    out = lab.lxc("exec", "client", "--", "sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {server} {port}"
                  " 2>&1; true")
    if "HTTP/1.1 200 OK" in out and "reconciler-tiny" in out:
        result = "answered"
    else:
        result = "refused" if "refused" in out else "no answer"
    print(f"client -> {server}:{port} GET /: {result}")  # the record of traffic (pytest -s shows it)
    return result


@pytest.fixture
def acl_lab(lab):
    applied(lab)
    server = address(lab, "server")
    address(lab, "client")
    for port in (8080, 8081):
        lab.lxc("exec", "server", "--", "httpd", "-p", str(port), "-h", "/var/www")
    lab.server = server
    return lab


def traffic(lab) -> dict[int, str]:
    return {port: ask(lab, lab.server, port) for port in (80, 8080, 8081)}


ACL_ONLY = {80: "answered", 8080: "refused", 8081: "no answer"}


def test_an_acl_admits_what_it_allows_and_the_lab_keeps_working(acl_lab):
    lab = acl_lab
    acl = lab.query(f"/1.0/network-acls/{lab.tag}web?project={lab.project}")
    assert acl["config"]["user.reconciler.lab"] == lab.tag and len(acl["ingress"]) == 2
    assert traffic(lab) == ACL_ONLY  # DHCP worked on both bridges (the addresses), HTTP on 80 only
    assert "No changes." in plan(lab)
    open_lab = applied(lab, ACL_DROPPED)  # no ACL: every port answers; the network lets go of it first
    assert open_lab.index(f"network.{lab.tag}s: updated") < open_lab.index(f"acl.{lab.tag}web: deleted")
    assert traffic(lab) == {80: "answered", 8080: "answered", 8081: "answered"}
    assert lab.lxc("network", "acl", "list", "--format=csv").count(f"{lab.tag}web") == 0
    again = applied(lab)
    assert again.index(f"acl.{lab.tag}web: created") < again.index(f"network.{lab.tag}s: updated")
    assert traffic(lab) == ACL_ONLY


def test_a_rule_added_by_hand_is_shown_as_that_rule_and_taken_out(acl_lab):
    lab = acl_lab
    lab.lxc("network", "acl", "rule", "add", f"{lab.tag}web", "ingress", "action=allow", "protocol=tcp",
            "destination_port=8080")
    assert traffic(lab)[8080] == "answered"  # the hand-made rule is live
    shown = plan(lab)
    assert f"~ acl.{lab.tag}web will be updated in place (differs: ingress.2) [changed outside lab.yaml]" in shown
    assert 'ingress.2: {"action": "allow", "destination_port": "8080", "protocol": "tcp", "state": "enabled"}' \
           ' -> (none)' in shown, shown
    applied(lab)
    assert traffic(lab) == ACL_ONLY and "No changes." in plan(lab)


def test_a_rule_removed_by_hand_is_put_back(acl_lab):
    lab = acl_lab
    lab.lxc("network", "acl", "rule", "remove", f"{lab.tag}web", "ingress", "destination_port=80")
    assert traffic(lab)[80] == "refused"
    shown = plan(lab)
    assert 'ingress.0: (none) -> {"action": "allow", "description": "HTTP from the clients", "destination_port": "80"' \
           in shown, shown
    applied(lab)
    assert traffic(lab) == ACL_ONLY and "No changes." in plan(lab)


def test_a_rule_changed_in_lab_yaml_is_a_field_of_that_rule(acl_lab):
    lab = acl_lab
    wider = LAB.replace("protocol: tcp, destination_port: 80,", "protocol: tcp, destination_port: [80, 8080],")
    lab.write(wider)
    shown = plan(lab)
    assert 'ingress.0.destination_port: "80" -> "80,8080"' in shown and "[your change]" in shown, shown
    applied(lab, wider)
    assert traffic(lab) == {80: "answered", 8080: "answered", 8081: "no answer"}


def test_destroy_deletes_the_acl_after_its_network_and_a_foreign_acl_is_never_taken(acl_lab):
    lab = acl_lab
    destroyed = lab.run("destroy", "--yes")
    assert destroyed.code == 0, destroyed.out + destroyed.err
    assert destroyed.out.index(f"network.{lab.tag}s: deleted") < destroyed.out.index(f"acl.{lab.tag}web: deleted")
    assert f"{lab.tag}web" not in lab.lxc("network", "acl", "list", "--format=csv")
    lab.lxc("network", "acl", "create", f"{lab.tag}web")  # hand-made, untagged: not the lab's
    lab.write(LAB)
    refused = lab.run("plan")
    assert refused.code == 1 and f"acl.{lab.tag}web already exists in {TITLES[lab.daemon]} and belongs to no lab" in refused.err


def test_plan_reads_acls_in_one_call_however_many(lab):
    def calls(n: int) -> int:
        extra = "".join(f"  @TAG@x{i}:\n    ingress: [{{action: allow, protocol: tcp, destination_port: {80 + i}}}]\n"
                        for i in range(n))
        text = LAB.replace("acls:\n", "acls:\n" + extra)
        lab.write(text)
        applied = lab.run("apply", "--yes")
        assert applied.code == 0, applied.out + applied.err
        lxd = Lxd(None, lab.project)
        spec, _ = load_lab(lab.file)
        made, _ = build_plan(spec, lab.dir, lxd)
        assert made.empty
        return lxd.needed_calls
    assert calls(0) == calls(4)

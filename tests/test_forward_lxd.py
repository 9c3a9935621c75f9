"""Network forwards on a real LXD, proven by HTTP from the host to the forward's listen address.

The lab has its own bridge (10.203.117.0/24, no NAT, no IPv6) and a tiny container with a fixed address
serving HTTP (busybox httpd on 80, the image's; and on 81 a CGI that prints the client's address, started
by the test).  The host asks 10.203.117.250, an address of the bridge's subnet outside its DHCP range:
the kernel forwards it (DNAT) and the container sees the host's own address on the bridge as the client,
not 127.0.0.1 and not a proxy's.  A container with no fixed address there (a DHCP lease) is a target
too, by the address it has live: known after apply while it is created, followed when it changes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from conftest import sh
from test_guide_lab import until

from reconciler.daemon import TITLES
from reconciler.kinds.file import UNKNOWN

pytestmark = pytest.mark.daemons("lxd", "incus")

LISTEN = "10.203.117.250"
LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@}
networks:
  @TAG@f:
    config: {ipv4.address: 10.203.117.1/24, ipv4.nat: false, ipv6.address: none,
             ipv4.dhcp.ranges: 10.203.117.100-10.203.117.200}
containers:
  web1:
    image: reconciler-tiny
    devices: {eth0: {type: nic, network: @TAG@f, name: eth0, ipv4.address: 10.203.117.10}}
forwards:
  "10.203.117.250":
    network: @TAG@f
    description: the web front
    ports:
      - {protocol: tcp, listen_port: "8080-8081", target_port: "80-81", target: web1, description: HTTP}
"""
CGI = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nclient=%s\\n" "$REMOTE_ADDR"\n'
WHO = ["sh", "-c", 'mkdir -p /srv/who/cgi-bin && printf "%s" "$1" > /srv/who/cgi-bin/who'
       ' && chmod +x /srv/who/cgi-bin/who && httpd -p 81 -h /srv/who', "sh", CGI]  # the script as data


def run(lab, *args: str) -> str:
    result = lab.run(*args)
    assert result.code == 0, result.out + result.err
    return result.out


def applied(lab, text: str = LAB, *flags: str) -> str:
    lab.write(text)
    return run(lab, "apply", "--yes", *flags)


def get(url: str, deadline: float = 15) -> str:
    """One answered GET, tried until the deadline (the container's httpd may still be starting)."""
    answered: list[str] = []

    def once() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                answered.append(answer.read(4096).decode())
                return True
        except (urllib.error.URLError, OSError):
            return False

    assert until(once, deadline, step=0.5), f"host -> {url}: no answer within {deadline}s"
    print(f"host -> {url}: {answered[0].strip()}")  # the record of traffic (pytest -s shows it)
    return answered[0]


def unanswered(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3).close()
        return False
    except (urllib.error.URLError, OSError):
        return True


def forwards(lab) -> dict[str, dict]:
    found = json.loads(sh(lab.client, "query", f"/1.0/networks/{lab.tag}f/forwards?recursion=1&project={lab.project}").stdout)
    return {f["listen_address"]: f for f in found}


def test_a_forward_reaches_its_container_which_sees_the_hosts_address(lab):
    lab.write(LAB)
    planned = run(lab, "plan")
    assert f"+ forward.{lab.tag}f/{LISTEN} will be created" in planned, planned
    done = applied(lab)
    assert done.index("instance.web1: created") < done.index(f"forward.{lab.tag}f/{LISTEN}: created"), done
    made = forwards(lab)[LISTEN]
    assert made["config"]["user.reconciler.lab"] == lab.tag and made["description"] == "the web front"
    assert "No changes." in run(lab, "plan")
    assert "reconciler-tiny" in get(f"http://{LISTEN}:8080/")
    lab.lxc("exec", "web1", "--", *WHO)
    assert get(f"http://{LISTEN}:8081/cgi-bin/who").strip() in ("client=10.203.117.1", "client=[::ffff:10.203.117.1]")


# web2 takes a lease from LXD's DHCP server; its NIC has no `name`, so LXD names the interface (eth0,
# the one the image's udhcpc serves): apply finds it from volatile.lan.name.
LIVE = LAB.split("containers:")[0] + """\
containers:
  web2:
    image: reconciler-tiny
    devices: {lan: {type: nic, network: @TAG@f}}
forwards:
  "10.203.117.250":
    network: @TAG@f
    ports:
      - {protocol: tcp, listen_port: 8080, target_port: 80, target: web2}
"""
MOVED = "10.203.117.60"  # outside the DHCP range: web2's address, set by hand


def address_of(lab, name: str) -> str:
    state = json.loads(sh(lab.client, "query", f"/1.0/instances/{name}/state?project={lab.project}").stdout)
    found = [a["address"] for a in (state["network"].get("eth0") or {}).get("addresses", [])
             if a["family"] == "inet" and a["scope"] == "global"]
    return found[0] if found else ""


def target_of(lab) -> str:
    return forwards(lab)[LISTEN]["ports"][0]["target_address"]


def test_a_forward_follows_the_live_address_of_a_container_with_none_fixed(lab):
    lab.write(LIVE)
    planned = run(lab, "plan")
    assert f"+ forward.{lab.tag}f/{LISTEN} will be created" in planned and UNKNOWN in planned, planned
    done = applied(lab, LIVE)
    assert done.index("instance.web2: created") < done.index(f"forward.{lab.tag}f/{LISTEN}: created"), done
    leased = address_of(lab, "web2")
    assert leased.startswith("10.203.117.") and 100 <= int(leased.rsplit(".", 1)[1]) <= 200, leased
    assert target_of(lab) == leased
    assert "No changes." in run(lab, "plan")
    assert "reconciler-tiny" in get(f"http://{LISTEN}:8080/")
    # web2's address changed by hand, inside it: plan follows it as an ordinary update of the forward
    lab.lxc("exec", "web2", "--", "sh", "-c", f"ip -4 addr flush dev eth0 && ip addr add {MOVED}/24 dev eth0")
    assert until(lambda: address_of(lab, "web2") == MOVED, 15, step=0.5), address_of(lab, "web2")
    assert unanswered(f"http://{LISTEN}:8080/")
    shown = run(lab, "plan")
    assert f"~ forward.{lab.tag}f/{LISTEN} will be updated in place" in shown, shown
    assert f'target_address: "{leased}" -> "{MOVED}"' in shown and "instance.web2" not in shown, shown
    moved = applied(lab, LIVE)
    assert f"forward.{lab.tag}f/{LISTEN}: updated" in moved and target_of(lab) == MOVED, moved
    assert "reconciler-tiny" in get(f"http://{LISTEN}:8080/")
    assert "No changes." in run(lab, "plan")
    # web2 stopped by hand: its address is known only once apply has started it again (a new lease)
    lab.lxc("stop", "web2", "--force")
    shown = run(lab, "plan")
    assert f'target_address: "{MOVED}" -> "{UNKNOWN}"' in shown, shown
    started = applied(lab, LIVE)
    assert started.index("instance.web2: started") < started.index(f"forward.{lab.tag}f/{LISTEN}: updated"), started
    assert target_of(lab) == address_of(lab, "web2") != MOVED
    assert "reconciler-tiny" in get(f"http://{LISTEN}:8080/")
    assert "No changes." in run(lab, "plan")


def test_drift_is_shown_and_repaired_and_lab_yaml_changes_are_applied(lab):
    applied(lab)
    lab.lxc("network", "forward", "port", "add", f"{lab.tag}f", LISTEN, "tcp", "9090", "10.203.117.10", "80")
    lab.lxc("network", "forward", "set", f"{lab.tag}f", LISTEN, "target_address=10.203.117.11")
    assert "reconciler-tiny" in get(f"http://{LISTEN}:9090/")  # the hand-made port is live
    shown = run(lab, "plan")
    assert f"~ forward.{lab.tag}f/{LISTEN} will be updated in place" in shown and "[changed outside lab.yaml]" in shown
    assert '"target_port": "80"} -> (none)' in shown and 'config.target_address: "10.203.117.11" -> (none)' in shown
    applied(lab)
    assert "No changes." in run(lab, "plan") and unanswered(f"http://{LISTEN}:9090/")
    assert set(forwards(lab)[LISTEN]["config"]) == {"user.reconciler.lab", "user.reconciler.applied"}
    # lab.yaml moves the port: updated in place
    moved = applied(lab, LAB.replace('listen_port: "8080-8081", target_port: "80-81"', 'listen_port: 8000, target_port: 80'))
    assert f"forward.{lab.tag}f/{LISTEN}: updated" in moved
    assert "reconciler-tiny" in get(f"http://{LISTEN}:8000/") and unanswered(f"http://{LISTEN}:8080/")
    # lab.yaml moves the listen address (the forward's identity): the old one goes, new ones come, in one
    # apply (LXD 5.0 mangles its firewall when one network's forwards change at once: apply takes turns)
    table = LAB.split("forwards:\n")[1]
    other = applied(lab, LAB.split("forwards:\n")[0] + "forwards:\n" + "".join(
        table.replace(f'"{LISTEN}":', f'"10.203.117.{n}":') for n in (251, 252, 253)))
    assert f"forward.{lab.tag}f/{LISTEN}: deleted" in other and f"forward.{lab.tag}f/10.203.117.251: created" in other
    assert sorted(forwards(lab)) == ["10.203.117.251", "10.203.117.252", "10.203.117.253"]
    assert all("reconciler-tiny" in get(f"http://10.203.117.{n}:8080/") for n in (251, 252, 253))
    assert unanswered(f"http://{LISTEN}:8080/")
    # out of lab.yaml: deleted, the network and container stay
    gone = applied(lab, LAB.split("forwards:")[0], "--force")  # 3 of the lab's 5 objects
    assert gone.count(": deleted") == 3 and "network" not in gone.replace("forward.", "")
    assert forwards(lab) == {}


def test_a_forward_not_the_labs_is_never_touched_and_destroy_removes_the_labs(lab):
    lab.write(LAB)
    lab.lxc("network", "create", f"{lab.tag}f", "ipv4.address=10.203.117.1/24", "ipv4.nat=false",
            "ipv6.address=none", "user.reconciler.lab=" + lab.tag)  # the lab's network, made ahead
    lab.lxc("network", "forward", "create", f"{lab.tag}f", LISTEN, "target_address=10.203.117.11")
    refused = lab.run("plan")
    assert refused.code == 1, refused.out
    assert f"forward.{lab.tag}f/{LISTEN} already exists in {TITLES[lab.daemon]} and belongs to no lab" in refused.err
    lab.lxc("network", "forward", "delete", f"{lab.tag}f", LISTEN)
    lab.lxc("network", "forward", "create", f"{lab.tag}f", "10.203.117.251", "target_address=10.203.117.10")
    applied(lab)
    assert "No changes." in run(lab, "plan")
    assert forwards(lab)["10.203.117.251"]["config"] == {"target_address": "10.203.117.10"}  # untouched
    refused = lab.run("destroy", "--yes")  # LXD would delete the hand-made forward with the network
    assert refused.code == 1 and f"holds forward.{lab.tag}f/10.203.117.251, which is not this lab's" in refused.err
    assert set(forwards(lab)) == {LISTEN, "10.203.117.251"}
    lab.lxc("network", "forward", "delete", f"{lab.tag}f", "10.203.117.251")
    done = run(lab, "destroy", "--yes")
    assert done.index(f"forward.{lab.tag}f/{LISTEN}: deleted") < done.index(f"network.{lab.tag}f: deleted"), done
    assert f"{lab.tag}f" not in sh(lab.client, "network", "list", "--format=csv").stdout


def test_plan_reads_forwards_in_one_call_per_network_however_many(lab):
    from reconciler.engine import build_plan
    from reconciler.lxd import Lxd
    from reconciler.spec import load_lab

    def calls(n: int) -> int:
        text = LAB.split("containers:")[0] + "forwards:\n" + "".join(
            f'  "10.203.117.{240 + i}": {{network: @TAG@f, target_address: 10.203.117.{10 + i}}}\n' for i in range(n))
        applied(lab, text)
        lxd = Lxd(None, lab.project)
        spec, _ = load_lab(lab.file)
        made, _ = build_plan(spec, lab.dir, lxd)
        assert made.empty
        return lxd.needed_calls
    assert calls(1) == calls(5)
    assert len(forwards(lab)) == 5

"""`reconcile import` on a real LXD of a lab built by hand with `lxc` that keeps data on a custom volume
and is reached through a network forward: the pool, the volume and the forward come with the container,
the lab.yaml validates, plan shows adoptions only, and after apply plan is empty.  What import leaves
out (a forward to an address that is no chosen container's) is never touched.  Tiny busybox containers;
its own project, bridge (10.203.173.0/24, no NAT, no IPv6) and pool, all named with the test's tag."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, sh
from test_lxd_core import no_changes

CLI = str(ROOT / ".venv" / "bin" / "reconcile")
NET = "10.203.173"


@pytest.fixture
def built(lab):
    """The lab, and afterwards its containers, then the volumes on its pools, then the pools deleted (the
    bridge, with its forwards, goes with the project's fixture)."""
    yield lab
    for inst in json.loads(lab.lxc("list", "--format=json")):
        lab.lxc("delete", "--force", inst["name"], check=False)
    for pool in json.loads(sh("lxc", "storage", "list", "--format=json").stdout):
        if pool["name"].startswith(lab.tag):
            for vol in json.loads(lab.lxc("storage", "volume", "list", pool["name"], "--format=json")):
                if vol["type"] == "custom":
                    lab.lxc("storage", "volume", "delete", pool["name"], vol["name"], check=False)
            sh("lxc", "storage", "delete", pool["name"], check=False)


def forwards(lab, net: str) -> dict[str, dict]:
    found = json.loads(sh("lxc", "query", f"/1.0/networks/{net}/forwards?recursion=1&project={lab.project}").stdout)
    return {f["listen_address"]: f for f in found}


def test_a_volume_its_pool_and_a_forward_built_by_hand_are_imported_and_adopted_as_they_are(built, tmp_path):
    lab = built
    net, pool = f"{lab.tag}i", f"{lab.tag}p"
    sh("lxc", "network", "create", net, f"ipv4.address={NET}.1/24", "ipv4.nat=false", "ipv6.address=none")
    sh("lxc", "storage", "create", pool, "dir")
    lab.lxc("storage", "volume", "create", pool, "site", "size=64MiB")
    lab.lxc("init", "reconciler-tiny", "web1", "-p", "default")
    lab.lxc("config", "device", "add", "web1", "eth0", "nic", f"network={net}", "name=eth0", f"ipv4.address={NET}.10")
    lab.lxc("config", "device", "add", "web1", "site", "disk", f"pool={pool}", "source=site", "path=/srv/site")
    lab.lxc("start", "web1")
    lab.lxc("network", "forward", "create", net, f"{NET}.250")
    lab.lxc("network", "forward", "port", "add", net, f"{NET}.250", "tcp", "80", f"{NET}.10", "8080")
    lab.lxc("network", "forward", "create", net, f"{NET}.251", f"target_address={NET}.99")  # to no container
    written = tmp_path / "imported.yaml"
    done = sh(CLI, "import", "web1", "--project", lab.project, "--lab", lab.tag, "-o", str(written), check=False)
    assert done.returncode == 0, done.stderr
    text = written.read_text()
    assert f"{NET}.250" in text and f"{NET}.251" not in text and "size: 64MiB" in text and "target: web1" in text
    lab.file = written
    checked = lab.run("validate")
    assert checked.code == 0, checked.out + checked.err
    plan = json.loads(lab.run("plan", "--json").out)
    assert all(c["actions"] == ["adopt"] for c in plan["changes"]), plan["changes"]
    assert {c["address"] for c in plan["changes"]} == {f"network.{net}", f"pool.{pool}", f"volume.{pool}/site",
                                                       "instance.web1", f"forward.{net}/{NET}.250"}
    applied = lab.run("apply", "--yes")
    assert applied.code == 0, applied.out + applied.err
    assert no_changes(lab)
    tagged = json.loads(sh("lxc", "query", f"/1.0/storage-pools/{pool}/volumes/custom/site?project={lab.project}").stdout)
    assert tagged["config"]["user.reconciler.lab"] == lab.tag and tagged["config"]["size"] == "64MiB"
    found = forwards(lab, net)
    assert found[f"{NET}.250"]["config"]["user.reconciler.lab"] == lab.tag
    assert found[f"{NET}.250"]["ports"][0]["target_port"] == "8080"
    assert found[f"{NET}.251"]["config"] == {"target_address": f"{NET}.99"}  # not the lab's: untouched

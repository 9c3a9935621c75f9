"""The core reconciler against a real LXD daemon: create, idempotency, drift, replace, delete,
ownership.  Each test has its own LXD project (see conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
from conftest import ROOT, until

from reconciler.daemon import TITLES
from reconciler.engine import build_plan
from reconciler.lxd import Lxd
from reconciler.spec import load_lab

TINY = """\
lab: @TAG@
lxd: {project: @PROJECT@}
networks:
  @TAG@b:
    config: {ipv4.address: 10.203.31.1/24, ipv4.nat: false, ipv6.address: none}
profiles:
  net:
    description: the lab's bridge
    devices:
      eth0: {type: nic, network: @TAG@b, name: eth0}
containers:
  c1:
    image: reconciler-tiny
    profiles: [default, net]
    config: {limits.memory: 64MB, user.note: first}
    devices:
      http: {type: proxy, listen: "tcp:127.0.0.1:18301", connect: "tcp:127.0.0.1:80"}
  c2:
    image: reconciler-tiny
    profiles: [default, net]
"""

HEADER = TINY.split("containers:\n")[0] + "containers:\n"  # the bridge and profile, no containers yet


def applied(lab, text: str = TINY):
    lab.write(text)
    result = lab.run("apply", "--yes")
    assert result.code == 0, result.out + result.err
    return result


def no_changes(lab) -> bool:
    result = lab.run("plan", "--detailed-exitcode")
    assert result.code in (0, 2), result.err
    return result.code == 0


@pytest.mark.daemons("lxd", "incus")
def test_create_from_empty_then_plan_is_empty(lab):
    result = applied(lab)
    assert "Apply complete! 4 done, 0 failed, 0 skipped." in result.out
    c1 = lab.instance("c1")
    assert c1["status"] == "Running" and c1["config"]["user.reconciler.lab"] == lab.tag
    assert c1["profiles"] == ["default", "net"]
    assert no_changes(lab)
    again = lab.run("apply", "--yes")
    assert again.code == 0 and "No changes." in again.out


def test_plan_json_has_the_documented_shape(lab):
    lab.write(TINY)
    result = lab.run("plan", "--json")
    data = json.loads(result.out)
    assert data["format_version"] == 3
    assert [c["address"] for c in data["changes"]] == [f"network.{lab.tag}b", "profile.net", "instance.c1",
                                                        "instance.c2"]
    assert data["summary"]["create"] == 4 and set(data["changes"][0]) == {
        "address", "actions", "reasons", "origin", "before", "after", "diff", "meta", "depends_on", "cost"}
    assert data["changes"][2]["actions"] == ["create"] and data["changes"][2]["meta"]["source"] == {
        "type": "image", "alias": "reconciler-tiny"}


@pytest.mark.daemons("lxd", "incus")
@pytest.mark.parametrize("drift, shown", [
    (("config", "set", "c1", "user.extra", "x"), 'config["user.extra"]: "x" -> (none)'),
    (("config", "set", "c1", "limits.memory", "128MB"), 'config["limits.memory"]: "128MB" -> "64MB"'),
    (("config", "unset", "c1", "user.note"), 'config["user.note"]: (none) -> "first"'),
    (("config", "device", "add", "c2", "extra", "proxy", "listen=tcp:127.0.0.1:18302",
      "connect=tcp:127.0.0.1:80"), 'devices.extra: {"connect": "tcp:127.0.0.1:80"'),
    (("config", "device", "remove", "c1", "http"), 'devices.http: (none) -> {"connect": "tcp:127.0.0.1:80", "listen"'),
    (("config", "device", "set", "c1", "http", "listen=tcp:127.0.0.1:18303"),
     'devices.http.listen: "tcp:127.0.0.1:18303" -> "tcp:127.0.0.1:18301"'),
    (("profile", "assign", "c2", "net,default"), 'profiles: ["net", "default"] -> ["default", "net"]'),
    (("stop", "--force", "c2"), "instance.c2 will be started"),
    (("profile", "set", "net", "user.hand", "1"), 'config["user.hand"]: "1" -> (none)'),
    (("profile", "device", "set", "net", "eth0", "name=eth9"), 'devices.eth0.name: "eth9" -> "eth0"'),
])
def test_drift_done_by_hand_is_shown_and_repaired(lab, drift, shown):
    applied(lab)
    lab.lxc(*drift)
    plan = lab.run("plan")
    assert shown in plan.out, plan.out
    assert not no_changes(lab)
    applied(lab)
    assert no_changes(lab)


@pytest.mark.daemons("lxd", "incus")
def test_network_drift_is_repaired(lab):
    applied(lab)
    lab.lxc("network", "set", f"{lab.tag}b", "ipv4.dhcp", "false")
    assert 'config["ipv4.dhcp"]: "false" -> (none)' in lab.run("plan").out
    applied(lab)
    assert no_changes(lab)


@pytest.mark.daemons("lxd", "incus")
def test_image_change_replaces_and_keeps_the_rest(lab):
    applied(lab)
    fingerprint = json.loads(lab.lxc("image", "list", "reconciler-tiny", "--format=json"))[0]["fingerprint"]
    lab.lxc("image", "alias", "create", f"{lab.tag}-tiny", fingerprint, check=False)
    try:
        changed = TINY.replace("  c2:\n    image: reconciler-tiny", f"  c2:\n    image: {lab.tag}-tiny")
        lab.write(changed)
        plan = lab.run("plan")
        assert "-/+ instance.c2 will be replaced (replace because image 'reconciler-tiny'" in plan.out
        uuid_c1 = lab.instance("c1")["config"]["volatile.uuid"]
        applied(lab, changed)
        assert lab.instance("c2")["config"]["user.reconciler.image"] == f"{lab.tag}-tiny"
        assert lab.instance("c1")["config"]["volatile.uuid"] == uuid_c1
        assert no_changes(lab)
    finally:
        lab.lxc("image", "alias", "delete", f"{lab.tag}-tiny", check=False)


@pytest.mark.daemons("lxd", "incus")
def test_update_keeps_lxd_keys_so_the_mac_survives(lab):
    applied(lab)
    before = lab.instance("c1")["config"]
    lab.lxc("config", "set", "c1", "user.extra", "x")
    applied(lab)
    after = lab.instance("c1")["config"]
    assert after["volatile.eth0.hwaddr"] == before["volatile.eth0.hwaddr"]
    assert after["volatile.uuid"] == before["volatile.uuid"]


@pytest.mark.daemons("lxd", "incus")
def test_removal_from_lab_yaml_deletes_the_owned_object(lab):
    applied(lab)
    smaller = TINY.split("  c2:\n")[0]
    applied(lab, smaller)
    names = [i["name"] for i in json.loads(lab.lxc("list", "--format=json"))]
    assert names == ["c1"]
    assert no_changes(lab)


@pytest.mark.daemons("lxd", "incus")
def test_objects_the_lab_does_not_own_are_untouched(lab):
    lab.lxc("profile", "create", "handmade")
    lab.lxc("init", "reconciler-tiny", "manual")
    applied(lab)
    plan = lab.run("plan")
    assert "handmade" not in plan.out and "manual" not in plan.out
    destroyed = lab.run("destroy", "--yes")
    assert destroyed.code == 0 and "4 done" in destroyed.out
    assert [i["name"] for i in json.loads(lab.lxc("list", "--format=json"))] == ["manual"]
    profiles = {p["name"] for p in json.loads(lab.lxc("profile", "list", "--format=json"))}
    assert profiles == {"default", "handmade"}


@pytest.mark.daemons("lxd", "incus")
def test_a_name_taken_by_an_object_the_lab_does_not_own_is_refused(lab):
    lab.lxc("profile", "create", "net")
    lab.write(TINY)
    result = lab.run("plan")
    assert result.code == 1
    assert f"profile.net already exists in {TITLES[lab.daemon]} and belongs to no lab" in result.err
    assert lab.run("apply", "--yes").code == 1
    assert lab.lxc("profile", "show", "net").count("user.reconciler") == 0


def test_a_failed_step_stops_its_dependants_and_a_rerun_converges(lab):
    # Something the lab does not own already listens on c1's port: c1 fails, so its file (which
    # waits for c1) is skipped, and c2, which does not depend on c1, goes on.
    lab.lxc("init", "reconciler-tiny", "squatter")
    lab.lxc("config", "device", "add", "squatter", "p", "proxy", "listen=tcp:127.0.0.1:18301",
            "connect=tcp:127.0.0.1:80")
    lab.lxc("start", "squatter")
    with_file = TINY.replace("    config: {limits.memory: 64MB, user.note: first}\n",
                             "    config: {limits.memory: 64MB, user.note: first}\n"
                             "    files:\n      /etc/motd: {content: \"c1\\n\"}\n")
    lab.write(with_file)
    result = lab.run("apply", "--yes")
    assert result.code == 1
    assert "Error: instance.c1 (create):" in result.out and "instance.c2: created" in result.out
    assert "Skipped: file.c1:/etc/motd (create): instance.c1" in result.out, result.out
    assert "Apply failed." in result.out and ", 1 failed, 1 skipped" in result.out
    lab.lxc("delete", "--force", "squatter")
    applied(lab, with_file)
    assert lab.lxc("file", "pull", "c1/etc/motd", "-") == "c1\n"
    assert no_changes(lab)


def test_without_a_terminal_apply_refuses_to_run_without_yes(lab):
    lab.write(TINY)
    result = lab.run("apply")
    assert result.code == 1 and "refusing to apply without --yes" in result.err
    assert json.loads(lab.lxc("list", "--format=json")) == []


def test_unreachable_lxd_is_one_line_saying_where_it_looked(lab):
    lab.write(TINY.replace("lxd: {project: @PROJECT@}", "lxd: {socket: /nonexistent/unix.socket}"))
    result = lab.run("plan")
    assert result.code == 1
    assert result.err.count("\n") == 1 and "/nonexistent/unix.socket" in result.err


def test_plan_reads_lxd_in_a_constant_number_of_calls(lab):
    def calls(n: int) -> int:
        text = HEADER + "".join(
            f"  k{i}:\n    image: reconciler-tiny\n    profiles: [default, net]\n" for i in range(n))
        applied(lab, text)
        lxd_ = Lxd(None, lab.project)
        spec, _ = load_lab(lab.file)
        plan, _ = build_plan(spec, lab.dir, lxd_)
        assert plan.empty
        return lxd_.needed_calls
    assert calls(1) == calls(6)


def test_the_guide_as_written_for_rocky_is_validated_and_planned(lab, monkeypatch):
    monkeypatch.setenv("LAB_PROJECT", lab.project)
    lab.file.write_text((ROOT / "examples" / "rocky.yaml").read_text())
    assert lab.run("validate").code == 0
    result = lab.run("plan", "--json")
    assert result.code == 0, result.err
    changes = {c["address"]: c for c in json.loads(result.out)["changes"]}
    assert changes["instance.web1"]["after"]["image"] == "images:rockylinux/8"
    assert changes["profile.macvlan"]["after"]["devices"]["eth0"]["parent"] == "eno1"
    assert changes["instance.proxyha"]["after"]["devices"]["http"]["listen"] == "tcp:0.0.0.0:80"
    assert "package.web1:httpd" in changes and "file.proxyha:/etc/haproxy/haproxy.cfg" in changes
    assert json.loads(lab.lxc("list", "--format=json")) == []  # a plan changes nothing


FILES = HEADER + """\
  c2:
    image: reconciler-tiny
    profiles: [default, net]
  c1:
    image: reconciler-tiny
    profiles: [default, net]
    files:
      /etc/motd: {content: "hello\\n", mode: "0600"}
      /srv/www: {type: directory}
      /srv/www/peer: {template: "c2 is at {{ containers.c2.address }}\\n"}
"""


@pytest.mark.daemons("lxd", "incus")
def test_files_inside_a_container_are_created_compared_repaired_and_deleted(lab):
    applied(lab, FILES)
    assert lab.lxc("exec", "c1", "--", "cat", "/etc/motd") == "hello\n"
    assert lab.lxc("exec", "c1", "--", "stat", "-c", "%a", "/etc/motd").strip() == "600"
    c2 = lab.instance("c2", "/state")
    address = [a["address"] for a in c2["network"]["eth0"]["addresses"] if a["family"] == "inet"][0]
    assert lab.lxc("exec", "c1", "--", "cat", "/srv/www/peer") == f"c2 is at {address}\n"
    assert no_changes(lab)

    lab.lxc("exec", "c1", "--", "sh", "-c", "echo bye > /etc/motd; chmod 644 /etc/motd")
    plan = lab.run("plan").out
    assert "~ file.c1:/etc/motd will be updated" in plan and "-bye" in plan and "+hello" in plan
    assert 'mode: "0644" -> "0600"' in plan
    applied(lab, FILES)
    assert no_changes(lab)

    smaller = FILES.replace('      /etc/motd: {content: "hello\\n", mode: "0600"}\n', "")
    lab.write(smaller)
    assert "- file.c1:/etc/motd will be deleted (not in lab.yaml)" in lab.run("plan").out
    applied(lab, smaller)
    assert lab.lxc("exec", "c1", "--", "ls", "/etc/motd", check=False) == ""
    assert no_changes(lab)


@pytest.mark.daemons("lxd", "incus")
def test_apply_refuses_a_plan_that_moved_on_since_it_was_reviewed(lab):
    lab.write(TINY)
    reviewed = json.loads(lab.run("plan", "--json").out)["fingerprint"]
    lab.lxc("profile", "create", "handmade")  # not the lab's: the plan stays the same
    assert lab.run("apply", "--yes", "--fingerprint", reviewed).code == 0
    lab.lxc("config", "set", "c1", "user.extra", "x")
    drifted = lab.run("apply", "--yes", "--fingerprint", reviewed)
    assert drifted.code == 1 and "no longer the one reviewed" in drifted.err
    assert lab.instance("c1")["config"]["user.extra"] == "x"  # nothing was done


def _forkproxy(lab, container: str, listen: str) -> int | None:
    """The pid of the container's proxy listener on `listen` (`lxd forkproxy` or `incusd forkproxy`, whose
    arguments are `-- DAEMON_PID FD LISTEN CONTAINER_PID ...`), or None."""
    pid = str(lab.instance(container, "/state")["pid"])
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # not a process, or gone meanwhile
        if "forkproxy" in args[1:2] and "--" in args and args[args.index("--") + 3:args.index("--") + 5] == [listen, pid]:
            return int(proc.name)
    return None


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.daemons("lxd", "incus")
@pytest.mark.parametrize("how", ["killed", "never-started"])
def test_a_proxy_device_nobody_listens_for_is_planned_and_plugged_in_again(lab, how):
    """A daemon killed while it started a container leaves it running without its proxy listener (the daemon
    starts it after the container): `never-started` is that state, its pid file gone as well; `killed` is a
    listener that died later, its pid file left behind."""
    applied(lab)
    listen = "tcp:127.0.0.1:18301"
    listener = _forkproxy(lab, "c1", listen)
    assert listener is not None and _answers(18301), "c1's proxy device does not listen after apply"
    os.kill(listener, signal.SIGKILL)
    assert until(lambda: not _answers(18301), 10, step=0.1), "the killed listener still answers"
    if how == "never-started":
        record = Path(lab.socket).parent / "devices" / f"{lab.project}_c1" / "proxy.http"
        assert record.exists(), f"the daemon keeps no record of its listener at {record}"
        record.unlink()
    plan = lab.run("plan", "--detailed-exitcode")
    assert plan.code == 2, plan.out + plan.err
    assert f"nobody listens on this host for devices.http ({listen})" in plan.out, plan.out
    assert "Plan: 1 to update," in plan.out, plan.out
    result = applied(lab)
    assert "instance.c1: updated" in result.out, result.out
    assert _answers(18301), "apply returned before c1's proxy device listened again"
    assert _forkproxy(lab, "c1", listen) not in (None, listener)
    assert lab.instance("c1")["devices"]["http"]["listen"] == listen  # no mask left behind
    assert no_changes(lab)

"""The everyday loop on a real LXD, each defect users reported guarded by a test: unknown is not
absent, one apply is always enough, profiles' settings take effect, images checked at plan,
renames in place, who moved (lab.yaml or the live object).  Tiny busybox containers."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import sh
from test_lxd_core import HEADER, applied, no_changes

from reconciler.daemon import TITLES

KEEP = HEADER + """\
  c1:
    image: reconciler-tiny
    profiles: [default, net]
    state: @STATE@
    files:
      /etc/keep.txt: {content: "keep me\\n"}
"""


def with_state(state: str) -> str:
    return KEEP.replace("@STATE@", state)


@pytest.mark.daemons("lxd", "incus")
def test_a_stopped_container_keeps_its_declared_files(lab):
    applied(lab, with_state("running"))
    lab.write(with_state("stopped"))
    plan = lab.run("plan")
    assert "deleted" not in plan.out, plan.out
    assert "< instance.c1 will be stopped" in plan.out
    applied(lab, with_state("stopped"))
    plan = lab.run("plan")
    daemon, note = plan.out.splitlines()[:2]
    assert daemon.startswith(f"Daemon: {TITLES[lab.daemon]} ") and note.startswith(
        "Note: lab.yaml wants c1 stopped: its files, packages and services are not checked while it is"), plan.out
    assert "No changes." in plan.out
    applied(lab, with_state("running"))
    assert lab.lxc("exec", "c1", "--", "cat", "/etc/keep.txt") == "keep me\n"
    assert no_changes(lab)


@pytest.mark.daemons("lxd", "incus")
def test_a_container_stopped_by_hand_plans_no_creates_and_one_apply_converges(lab):
    applied(lab, with_state("running"))
    lab.lxc("stop", "--force", "c1")
    plan = lab.run("plan", "--json")
    data = json.loads(plan.out)
    by_address = {c["address"]: c for c in data["changes"]}
    assert by_address["instance.c1"]["actions"] == ["start"]
    assert by_address["file.c1:/etc/keep.txt"]["actions"] == ["converge"]
    assert data["summary"]["create"] == 0 and data["summary"]["delete"] == 0
    lab.lxc("start", "c1")
    lab.lxc("exec", "c1", "--", "rm", "/etc/keep.txt")  # changed while nobody looked
    lab.lxc("stop", "--force", "c1")
    result = applied(lab, with_state("running"))
    assert "file.c1:/etc/keep.txt: converged" in result.out, result.out
    assert lab.lxc("exec", "c1", "--", "cat", "/etc/keep.txt") == "keep me\n"
    assert no_changes(lab)


def test_files_dropped_while_a_container_was_stopped_are_deleted_by_the_apply_that_starts_it(lab):
    """The case the property test found: files an earlier apply wrote, dropped from lab.yaml while
    the container was stopped, are the lab's to delete once it runs again, in the same apply."""
    applied(lab, with_state("running"))
    applied(lab, with_state("stopped"))
    lab.write(with_state("running").replace('    files:\n      /etc/keep.txt: {content: "keep me\\n"}\n', ""))
    plan = json.loads(lab.run("plan", "--json").out)
    by_address = {c["address"]: c for c in plan["changes"]}
    assert by_address["file.c1:/etc/keep.txt"]["actions"] == ["converge"], plan["changes"]
    assert by_address["file.c1:/etc/keep.txt"]["after"] is None
    result = lab.run("apply", "--yes")
    assert result.code == 0 and "file.c1:/etc/keep.txt: converged" in result.out, result.out + result.err
    assert lab.lxc("exec", "c1", "--", "ls", "/etc/keep.txt", check=False) == ""
    assert no_changes(lab)


def test_an_image_change_converges_in_one_apply_with_the_files_in_the_new_container(lab):
    applied(lab, with_state("running"))
    fingerprint = json.loads(lab.lxc("image", "list", "reconciler-tiny", "--format=json"))[0]["fingerprint"]
    changed = with_state("running").replace("image: reconciler-tiny", f"image: {fingerprint[:16]}")
    lab.write(changed)
    plan = json.loads(lab.run("plan", "--json").out)
    actions = {c["address"]: c["actions"] for c in plan["changes"]}
    assert actions["instance.c1"] == ["replace"] and actions["file.c1:/etc/keep.txt"] == ["create"]
    uuid = lab.instance("c1")["config"]["volatile.uuid"]
    applied(lab, changed)
    assert lab.instance("c1")["config"]["volatile.uuid"] != uuid  # a new container ...
    assert lab.lxc("exec", "c1", "--", "cat", "/etc/keep.txt") == "keep me\n"  # ... set up in the same apply
    assert no_changes(lab)


def test_a_missing_image_fails_the_plan_with_a_pointer(lab):
    lab.write(with_state("running").replace("image: reconciler-tiny", "image: reconciler-tiyn"))
    result = lab.run("plan")
    assert result.code == 1
    assert "containers.c1.image: no image 'reconciler-tiyn' in LXD" in result.err
    assert "did you mean 'reconciler-tiny'?" in result.err


def test_a_declared_rename_keeps_the_container(lab):
    applied(lab, with_state("running"))
    uuid = lab.instance("c1")["config"]["volatile.uuid"]
    renamed = with_state("running").replace("  c1:\n", "  c9:\n    renamed_from: c1\n")
    lab.write(renamed)
    plan = lab.run("plan")
    assert "-> instance.c9 will be renamed (renamed from c1 in lab.yaml)" in plan.out, plan.out
    assert "delete" not in plan.out and "create" not in plan.out
    applied(lab, renamed)
    assert lab.instance("c9")["config"]["volatile.uuid"] == uuid
    assert lab.lxc("exec", "c9", "--", "cat", "/etc/keep.txt") == "keep me\n"
    assert no_changes(lab)


def test_dropping_a_running_container_says_so_loudly(lab):
    applied(lab, with_state("running"))
    lab.write(HEADER.replace("containers:\n", "containers: {}\n"))
    plan = lab.run("plan")
    assert "- instance.c1 will be deleted (not in lab.yaml)" in plan.out
    assert "it is RUNNING: its root filesystem is lost" in plan.out and "renamed_from" in plan.out


PRIV = HEADER.replace("profiles:\n", """\
profiles:
  priv:
    config: {security.privileged: @PRIV@}
""") + """\
  c1:
    image: reconciler-tiny
    profiles: [default, net, priv]
"""


def uid_map(lab) -> str:
    return lab.lxc("exec", "c1", "--", "cat", "/proc/self/uid_map").split()[1]


def test_a_restart_key_set_on_a_profile_takes_effect(lab):
    applied(lab, PRIV.replace("@PRIV@", "false"))
    assert uid_map(lab) != "0"  # unprivileged: root is mapped to a high uid
    lab.write(PRIV.replace("@PRIV@", "true"))
    plan = lab.run("plan")
    assert "~ profile.priv will be updated in place" in plan.out
    assert '<> instance.c1 will be restarted (config["security.privileged"] (profile priv)' in plan.out, plan.out
    applied(lab, PRIV.replace("@PRIV@", "true"))
    assert uid_map(lab) == "0"
    assert no_changes(lab)


def test_a_restart_left_undone_by_a_failed_run_is_planned_again(lab):
    applied(lab, PRIV.replace("@PRIV@", "false"))
    lab.write(PRIV.replace("@PRIV@", "true"))
    lab.lxc("profile", "set", "priv", "security.privileged", "true")  # as if apply stopped before the restart
    plan = lab.run("plan")
    assert "<> instance.c1 will be restarted (settings applied earlier take effect only after a restart" \
        in plan.out, plan.out
    applied(lab, PRIV.replace("@PRIV@", "true"))
    assert uid_map(lab) == "0"
    assert no_changes(lab)


NIC = HEADER.replace("networks:\n", """\
networks:
  @TAG@x:
    config: {ipv4.address: 10.203.32.1/24, ipv4.nat: false, ipv6.address: none}
""") + """\
  c1:
    image: reconciler-tiny
    profiles: [default, net]
"""


def address_of(lab) -> str:
    state = lab.instance("c1", "/state")
    found = [a["address"] for a in (state["network"] or {}).get("eth0", {}).get("addresses", [])
             if a["family"] == "inet"]
    return found[0] if found else ""


def test_a_nic_moved_through_a_profile_takes_effect(lab):
    from test_guide_lab import until
    applied(lab, NIC)
    assert until(lambda: address_of(lab).startswith("10.203.31."), 20)
    moved = NIC.replace("eth0: {type: nic, network: @TAG@b, name: eth0}", "eth0: {type: nic, network: @TAG@x,"
                        " name: eth0}")
    lab.write(moved)
    plan = lab.run("plan")
    assert "<> instance.c1 will be restarted (devices.eth0 (profile net)" in plan.out, plan.out
    applied(lab, moved)
    assert until(lambda: address_of(lab).startswith("10.203.32."), 20), address_of(lab)
    assert no_changes(lab)


@pytest.mark.daemons("lxd", "incus")
def test_each_change_says_whether_lab_yaml_or_the_live_object_moved(lab):
    text = with_state("running").replace("    state: running\n", "    config: {user.note: a}\n")
    applied(lab, text)
    lab.lxc("config", "set", "c1", "user.note", "b")
    assert "[changed outside lab.yaml]" in lab.run("plan").out
    applied(lab, text)
    lab.write(text.replace("user.note: a", "user.note: c"))
    assert "[your change]" in lab.run("plan").out
    lab.lxc("config", "set", "c1", "user.note", "b")
    assert "[lab.yaml changed and the live object moved]" in lab.run("plan").out
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo edited > /etc/keep.txt")
    data = json.loads(lab.run("plan", "--json").out)
    origins = {c["address"]: c["origin"] for c in data["changes"]}
    assert origins["file.c1:/etc/keep.txt"] == "outside" and origins["instance.c1"] == "both"


def test_usage_errors_exit_1_never_2(lab):
    lab.write(with_state("running"))
    for argv in (["plan", "--bogus"], ["check", "--requests", "x"], ["apply", "--parallelism", "0"],
                 ["check", "--requests", "0"]):
        done = sh(str(_cli()), *argv, "-f", str(lab.file), check=False)
        assert done.returncode == 1, (argv, done.returncode, done.stderr)
        assert f"reconcile {argv[0]}" in done.stderr  # the subcommand's own usage
    too_many = sh(str(_cli()), "check", "--requests", "100000", "-f", str(lab.file), check=False)
    assert too_many.returncode == 1 and too_many.stdout == ""  # refused, never quietly sent as 100
    assert "reconcile check: error: argument --requests: must be at most 100, not 100000" in too_many.stderr
    assert sh(str(_cli()), "--version").stdout.startswith("reconcile ")


def _cli():
    from conftest import ROOT
    return ROOT / ".venv" / "bin" / "reconcile"


def test_a_lab_network_on_the_hosts_own_subnet_is_refused_at_plan(lab):
    from pathlib import Path

    from reconciler.live import host_routes
    route = host_routes(Path("/proc/net/route").read_text())[-1]  # a subnet the host is on
    subnet = route.split()[0]
    address = subnet.rsplit(".", 1)[0] + ".77/" + subnet.split("/")[1]
    lab.write(HEADER.replace("10.203.31.1/24", address).replace("containers:\n", "containers: {}\n"))
    assert lab.run("validate").code == 0  # validate cannot know the host; plan does
    result = lab.run("plan")
    assert result.code == 1 and f"overlaps the host route '{route}'" in result.err, result.err


def test_ctrl_d_at_the_question_cancels_cleanly(lab):
    import pty
    import select
    lab.write(with_state("running"))
    pid, fd = pty.fork()
    if pid == 0:  # the child: reconcile apply on a terminal
        os.execv(str(_cli()), [str(_cli()), "apply", "-f", str(lab.file)])
    out = b""
    deadline = time.monotonic() + 60
    while b"Only 'yes' will be accepted" not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            out += os.read(fd, 65536)
    os.write(fd, b"\x04")  # Ctrl-D: end of input
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 1 and b"Apply cancelled." in out and b"Traceback" not in out, out[-2000:]
    assert json.loads(lab.lxc("list", "--format=json")) == []


def test_ctrl_c_during_apply_waits_for_the_running_step_and_reports(lab):
    import signal
    import subprocess
    lab.write(with_state("running"))
    # Started with SIGINT as a terminal's foreground job has it, whatever pytest inherited (a CI runner's
    # background job ignores it, and apply keeps an ignored SIGINT ignored).
    apply = subprocess.Popen([str(_cli()), "apply", "--yes", "--parallelism", "1", "-f", str(lab.file)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in apply.stdout:  # bounded: the apply ends by itself within seconds
        lines.append(line)
        if line.startswith(f"network.{lab.tag}b: created"):
            apply.send_signal(signal.SIGINT)
            break
    rest, err = apply.communicate(timeout=120)
    out = "".join(lines) + rest
    assert apply.returncode == 1, out + err
    assert "Apply interrupted." in out and "Not started:" in out and "Traceback" not in out + err, out + err
    assert "Interrupted: waited for the running steps" in err
    assert no_changes(lab) is False  # what was not started is still pending
    applied(lab, with_state("running"))  # and the next apply finishes it

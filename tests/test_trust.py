"""Trust at apply time, on a real LXD: saved plans applied exactly or refused, one apply at a time
(a lock kept in LXD), safety limits, targets, operations left running by a killed run, adoption of
labs built by hand.  Tiny busybox containers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
from conftest import ROOT, sh
from terminal import Terminal
from test_guide_lab import until
from test_lxd_core import HEADER, TINY, applied, no_changes

from reconciler.daemon import TITLES
from reconciler.lock import BEAT, COMMAND, HOLDER, MARK, STARTED, lock_name

CLI = str(ROOT / ".venv" / "bin" / "reconcile")


@pytest.mark.daemons("lxd", "incus")
def test_a_saved_plan_is_applied_exactly(lab, tmp_path):
    lab.write(TINY)
    saved = tmp_path / "plan.json"
    planned = lab.run("plan", "-o", str(saved))
    assert planned.code == 0 and saved.exists()
    data = json.loads(saved.read_text())
    assert data["kind"] == "reconciler-plan" and data["plan"]["format_version"] == 3
    assert data["lab_file"] == str(lab.file) and len(data["lab_digest"]) == 64
    result = lab.run("apply", str(saved), "--yes")
    assert result.code == 0 and "Apply complete! 4 done" in result.out, result.out + result.err
    assert no_changes(lab)


@pytest.mark.daemons("lxd", "incus")
def test_a_saved_plan_is_refused_when_lxd_moved_naming_the_object_and_how(lab, tmp_path):
    applied(lab)
    lab.write(TINY.replace("user.note: first", "user.note: second"))
    saved = tmp_path / "plan.json"
    assert lab.run("plan", "-o", str(saved)).code == 0
    lab.lxc("config", "set", "c2", "user.extra", "by hand")  # after the review
    result = lab.run("apply", str(saved), "--yes")
    assert result.code == 1, result.out
    assert f"{TITLES[lab.daemon]} moved since the plan" in result.err and "instance.c2: now needs update" in result.err
    assert lab.instance("c1")["config"]["user.note"] == "first"  # nothing was done


@pytest.mark.daemons("lxd", "incus")
def test_a_saved_plan_is_refused_when_the_lab_changed_or_the_file_was_edited(lab, tmp_path):
    lab.write(TINY)
    saved = tmp_path / "plan.json"
    assert lab.run("plan", "-o", str(saved)).code == 0
    lab.write(TINY.replace("limits.memory: 64MB", "limits.memory: 96MB"))
    changed = lab.run("apply", str(saved), "--yes")
    assert changed.code == 1 and "the lab changed since the plan was saved" in changed.err
    lab.write(TINY)
    data = json.loads(saved.read_text())
    data["plan"]["changes"][0]["after"]["description"] = "edited"
    saved.write_text(json.dumps(data))
    edited = lab.run("apply", str(saved), "--yes")
    assert edited.code == 1 and "was edited" in edited.err
    saved.write_text("not json")
    assert "not a plan" not in lab.run("apply", str(saved), "--yes").out
    assert json.loads(lab.lxc("list", "--format=json")) == []


@pytest.mark.daemons("lxd", "incus")
def test_a_plan_file_holds_no_secret(lab, tmp_path):
    secret = HEADER + """\
  c1:
    image: reconciler-tiny
    profiles: [default, net]
    files:
      /etc/key: {content: "hunter2-very-secret\\n", secret: true}
"""
    lab.write(secret)
    saved = tmp_path / "plan.json"
    assert lab.run("plan", "-o", str(saved)).code == 0
    import hashlib
    text = saved.read_text()
    assert "hunter2" not in text and hashlib.sha256(b"hunter2-very-secret\n").hexdigest() not in text
    result = lab.run("apply", str(saved), "--yes")
    assert result.code == 0, result.out + result.err
    assert lab.lxc("exec", "c1", "--", "cat", "/etc/key") == "hunter2-very-secret\n"


def hold_lock(lab, holder: str, beat: float) -> None:
    name = lock_name(lab.tag)
    lab.lxc("profile", "create", name)
    for key, value in ((MARK, lab.tag), (HOLDER, holder), (STARTED, "2026-01-01T00:00:00+00:00"),
                       (BEAT, f"{beat:.0f}"), (COMMAND, "apply")):
        lab.lxc("profile", "set", name, key, value)


@pytest.mark.daemons("lxd", "incus")
def test_a_second_apply_is_refused_naming_the_holder(lab):
    lab.write(TINY)
    hold_lock(lab, f"{socket.gethostname()}:{os.getppid()}", time.time())  # a live process here
    started = time.monotonic()
    result = lab.run("apply", "--yes", "--lock-timeout", "2")
    assert result.code == 1 and time.monotonic() - started >= 2
    assert f"lab {lab.tag!r} is locked: apply by process {os.getppid()} on {socket.gethostname()}" in result.err
    assert "Waiting for the lock" in result.err
    assert json.loads(lab.lxc("list", "--format=json")) == []
    assert lab.run("plan").code == 0  # plan takes no lock


@pytest.mark.daemons("lxd", "incus")
def test_a_lock_left_by_a_killed_run_is_taken_over(lab):
    lab.write(TINY)
    dead = subprocess.Popen(["true"])
    dead.wait()
    hold_lock(lab, f"{socket.gethostname()}:{dead.pid}", time.time())
    result = lab.run("apply", "--yes")
    assert result.code == 0 and "Took over the lock" in result.err, result.err
    assert lock_name(lab.tag) not in lab.lxc("profile", "list", "--format=csv")  # released: nothing left behind


@pytest.mark.daemons("lxd", "incus")
def test_a_lock_on_another_host_is_taken_over_only_after_its_lease(lab):
    lab.write(TINY)
    hold_lock(lab, "elsewhere:1234", time.time())
    assert "elsewhere" in lab.run("apply", "--yes").err
    lab.lxc("profile", "set", lock_name(lab.tag), BEAT, f"{time.time() - 600:.0f}")
    assert lab.run("apply", "--yes").code == 0


@pytest.mark.daemons("lxd", "incus")
def test_two_applies_at_once_one_runs(lab):
    """The first apply holds the lock while it asks for confirmation on its terminal: the second is
    refused then, whatever the timing; answered, the first goes on."""
    lab.write(TINY)
    first = Terminal([CLI, "apply", "-f", str(lab.file)])
    first.read_until(b"Only 'yes' will be accepted")
    second = subprocess.run([CLI, "apply", "--yes", "-f", str(lab.file)], capture_output=True, text=True,
                            timeout=120)
    first.write(b"yes\n")
    code, out = first.finish()
    assert code == 0 and b"Apply complete!" in out, out[-2000:]
    assert second.returncode == 1 and "is locked: apply by process" in second.stderr, second.stderr


def test_an_unsafe_plan_needs_force(lab):
    four = HEADER + "".join(f"  k{i}:\n    image: reconciler-tiny\n    profiles: [default, net]\n" for i in range(4))
    applied(lab, four)
    lab.write(HEADER + "  k0:\n    image: reconciler-tiny\n    profiles: [default, net]\n")
    refused = lab.run("apply", "--yes")
    assert refused.code == 1 and "deletes or replaces 3 of the lab's 6 objects (50%, over 30%)" in refused.err
    assert len(json.loads(lab.lxc("list", "--format=json"))) == 4
    assert lab.run("apply", "--yes", "--force").code == 0
    assert len(json.loads(lab.lxc("list", "--format=json"))) == 1


def test_target_plans_and_applies_a_subset_with_what_it_depends_on(lab):
    lab.write(TINY)
    plan = json.loads(lab.run("plan", "--json", "--target", "instance.c2").out)
    assert [c["address"] for c in plan["changes"]] == [f"network.{lab.tag}b", "profile.net", "instance.c2"]
    assert any("targeted plan" in n for n in plan["notes"])
    assert lab.run("apply", "--yes", "--target", "instance.c2").code == 0
    assert [i["name"] for i in json.loads(lab.lxc("list", "--format=json"))] == ["c2"]
    bad = lab.run("plan", "--target", "instanse.c2")
    assert bad.code == 1 and "unknown kind 'instanse'" in bad.err
    for command in (["plan"], ["apply", "--yes"]):  # a typo is an error, never "No changes"
        typo = lab.run(*command, "--target", "instance.c3")
        assert typo.code == 1 and typo.out == "", typo.out
        assert typo.err == ("Error: --target instance.c3 is neither in lab.yaml nor one of the lab's objects in LXD;"
                            " did you mean instance.c1 or instance.c2?\n"), typo.err
    nothing_close = lab.run("plan", "--target", "file.c9:/etc/nope")
    assert nothing_close.code == 1 and (f"the lab's addresses: network.{lab.tag}b, profile.net, instance.c1,"
                                        " instance.c2\n") in nothing_close.err, nothing_close.err


@pytest.mark.daemons("lxd", "incus")
def test_apply_waits_for_an_operation_a_killed_run_left(lab):
    """An exec left running (it waits for a line on its stdin) is seen by LXD; apply waits for it, and
    goes on once it ends: each side moves on an event the other can see, never on a timer."""
    applied(lab)
    lab.lxc("config", "set", "c1", "user.note", "moved")
    left = subprocess.Popen([lab.client, "--project", lab.project, "exec", "c1", "--", "sh", "-c", "read line"],
                            stdin=subprocess.PIPE, text=True)
    apply = None
    try:
        assert until(lambda: _executing_on(lab, "c1"), 30, step=0.1), "the exec never showed in LXD"
        apply = subprocess.Popen([CLI, "apply", "--yes", "-f", str(lab.file)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert apply.stderr is not None
        said = apply.stderr.readline()  # bounded: apply says it or goes on, and ends either way
        assert f"Waiting for {TITLES[lab.daemon]} to finish 'Executing command' on c1" in said, said
    finally:
        left.communicate("done\n", timeout=30)  # the exec ends: apply goes on
    out, err = apply.communicate(timeout=120)
    assert apply.returncode == 0, out + err
    assert no_changes(lab)


def _executing_on(lab, name: str) -> bool:
    ops = lab.query(f"/1.0/operations?recursion=1&project={lab.project}")
    return any(f"/1.0/instances/{name}" in " ".join((op.get("resources") or {}).get("instances") or [])
               for op in ops.get("running") or [])


@pytest.mark.daemons("lxd", "incus")
def test_a_lab_built_by_hand_is_imported_and_adopted_as_it_is(lab, tmp_path):
    net = f"{lab.tag}h"
    lab.lxc("network", "create", net, "ipv4.address=10.203.33.1/24", "ipv4.nat=false", "ipv6.address=none")
    lab.lxc("profile", "create", "lan")
    lab.lxc("profile", "device", "add", "lan", "eth0", "nic", f"network={net}", "name=eth0")
    lab.lxc("launch", "reconciler-tiny", "web1", "-p", "default", "-p", "lan", "-c", "limits.memory=64MB")
    lab.lxc("init", "reconciler-tiny", "web2", "-p", "default", "-p", "lan")
    lab.lxc("config", "device", "add", "web1", "http", "proxy", "listen=tcp:127.0.0.1:18330",
            "connect=tcp:127.0.0.1:80")
    uuids = {n: lab.instance(n)["config"]["volatile.uuid"] for n in ("web1", "web2")}
    written = tmp_path / "imported.yaml"
    done = sh(CLI, "import", "--project", lab.project, "--lab", lab.tag, "-o", str(written), check=False)
    assert done.returncode == 0, done.stderr
    text = written.read_text()
    assert "adopt:" in text and "limits.memory: 64MB" in text and "listen: tcp:127.0.0.1:18330" in text
    lab.file = written
    assert lab.run("validate").code == 0
    plan = json.loads(lab.run("plan", "--json").out)
    assert plan["changes"] and all(c["actions"] == ["adopt"] for c in plan["changes"]), plan["changes"]
    assert {c["address"] for c in plan["changes"]} == {f"network.{net}", "profile.lan", "instance.web1",
                                                       "instance.web2"}
    assert lab.run("apply", "--yes").code == 0
    assert no_changes(lab)
    assert {n: lab.instance(n)["config"]["volatile.uuid"] for n in uuids} == uuids
    assert lab.instance("web2")["status"] == "Stopped"  # as it was

"""Convergence after any crash, on a real LXD: the guide's lab brought up from nothing while
`reconcile apply` is SIGKILLed at points spread over the whole run (several while containers are
being created), and while the LXD daemon itself is killed and restarted.  Each time the next apply
converges: plan is empty, `reconcile check` passes, nothing the lab owns is duplicated or lost, and
what it does not own is untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, sh
from test_guide_lab import guide_lab, until

CLI = str(ROOT / ".venv" / "bin" / "reconcile")
KILL_AFTER = [0.5, 1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 12.0, 16.0, 21.0]  # seconds into an apply from nothing
DAEMON_KILL_AFTER = [2.0, 6.0, 12.0]
RESULTS: list[str] = []


@pytest.fixture(scope="module")
def crashed(lxd_ready, tmp_path_factory):
    with guide_lab(tmp_path_factory, "crash") as lab:
        lab.lxc("profile", "create", "handmade")  # not the lab's: must stay as it is
        lab.lxc("init", "reconciler-tiny", "bystander", "-c", "user.note=mine")
        lab.untouched = _etags(lab)
        try:
            yield lab
        finally:
            print("\n".join(RESULTS))


def _etags(lab) -> dict[str, str]:
    """What LXD says of the objects the lab does not own: their ETags cover every setting."""
    from reconciler.lxd import Lxd
    lxd = Lxd(None, lab.project)
    return {f"{kind}.{name}": lxd.get(kind, name)[1] for kind, name in (("instance", "bystander"),
                                                                         ("profile", "handmade"))}


def _start_apply(lab) -> subprocess.Popen:
    return subprocess.Popen([CLI, "apply", "--yes", "-f", str(lab.file)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _converges(lab, what: str) -> None:
    """The next apply finishes the job, and the lab is exactly the lab."""
    started = time.monotonic()
    result = lab.run("apply", "--yes")
    errors = "\n".join(line for line in result.out.splitlines() if line.startswith("Error"))
    assert result.code == 0, f"{what}: the next apply failed:\n{errors}\n{result.out[-1500:]}{result.err}"
    assert lab.run("plan", "--detailed-exitcode").code == 0, f"{what}: plan not empty after the next apply"
    assert until(lambda: lab.run("check").code == 0, 60, step=2), f"{what}: {lab.run('check').out}"
    names = sorted(i["name"] for i in json.loads(lab.lxc("list", "--format=json")))
    assert names == ["bystander", "proxyha", "web1", "web2"], f"{what}: {names}"
    profiles = sorted(p["name"] for p in json.loads(lab.lxc("profile", "list", "--format=json")))
    assert profiles == sorted(["default", "handmade", "macvlan"]), profiles  # the killed run's lock is gone too
    assert _etags(lab) == lab.untouched, f"{what}: an object the lab does not own changed"
    waited = "waited for LXD" if "Waiting for LXD to finish" in result.err else ""
    took = "took over the lock" if "Took over the lock" in result.err else ""
    remade = f"made {result.out.count('made again')} half-made container(s) again" if "made again" in result.out else ""
    RESULTS.append(f"{what}: converged in {time.monotonic() - started:.1f}s {waited} {took} {remade}".rstrip())


@pytest.mark.parametrize("seconds", KILL_AFTER)
def test_a_killed_apply_converges_on_the_next(crashed, seconds):
    assert crashed.run("destroy", "--yes").code == 0
    apply = _start_apply(crashed)
    time.sleep(seconds)
    finished = apply.poll() is not None
    os.killpg(apply.pid, signal.SIGKILL)
    out, _ = apply.communicate(timeout=60)
    assert not finished, f"the apply ended before {seconds}s: move the kill earlier\n{out}"
    done = [line.split(":")[0] + ":" + line.split(":")[1] for line in out.splitlines() if line.endswith("s]")]
    _converges(crashed, f"SIGKILL after {seconds}s ({len(done)} steps done, the last {done[-1] if done else 'none'})")


def _host_lxd_pids() -> list[int]:
    """The host's own LXD daemon (nested members' daemons run in other pid namespaces)."""
    mine = os.readlink("/proc/self/ns/pid")
    out = []
    for pid in sh("pgrep", "-x", "lxd", check=False).stdout.split():
        try:  # an `lxd` process may end between pgrep and here (a member's, a short-lived client)
            if os.readlink(f"/proc/{pid}/ns/pid") == mine and b"--group" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(int(pid))
        except OSError:
            continue
    return out


@pytest.mark.parametrize("seconds", DAEMON_KILL_AFTER)
def test_an_apply_whose_lxd_daemon_is_killed_converges_once_it_is_back(crashed, seconds):
    assert crashed.run("destroy", "--yes").code == 0
    apply = _start_apply(crashed)
    try:
        time.sleep(seconds)
        pids = _host_lxd_pids()
        assert pids, "no LXD daemon of this host found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        restarted = sh("bash", str(ROOT / "scripts" / "lxd-up.sh"), check=False)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        out, _ = apply.communicate(timeout=600)
    finally:
        if apply.poll() is None:  # never leave an apply running into the next test
            os.killpg(apply.pid, signal.SIGKILL)
            apply.wait(timeout=60)
    assert apply.returncode != 0 or "Apply complete" in out
    _converges(crashed, f"LXD daemon killed after {seconds}s (that apply exited {apply.returncode})")

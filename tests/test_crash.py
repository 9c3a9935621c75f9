"""Convergence after any crash, on a real LXD: the guide's lab brought up from nothing while
`reconcile apply` is SIGKILLed at points spread over the whole run (after its k-th step, read from
its output: an event, not a timer), and while the LXD daemon itself is killed and restarted (while
an operation of the apply is running in LXD, seen in LXD's own list).  Each time: the killed run
ends as it should, and the next apply converges: it redoes nothing the killed run reported done,
plan is empty, `reconcile check` passes, nothing the lab owns is duplicated or lost, and what it
does not own is untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, sh
from test_guide_lab import Guide, guide_lab, until

CLI = str(ROOT / ".venv" / "bin" / "reconcile")
KILL_AFTER_STEPS = [0, 1, 2, 3, 5, 8, 12, 17, 23, 29]  # of the ~34 steps of the guide's lab from nothing
# (what LXD's operation list says, on which container): a create, a start, an exec inside
DAEMON_KILL_DURING = [("Creating instance", "web1"), ("Starting instance", "proxyha"), ("Executing command", "web2")]
LXD_LOST = ("lost the connection to LXD", "did not answer", "not found")
RESULTS: list[str] = []


class CrashGuide(Guide):
    lan_host, http_port = "10.203.42.1", 18490  # its own LAN and ports: it may run beside test_guide_lab


@pytest.fixture(scope="module")
def crashed(lxd_ready, tmp_path_factory):
    with guide_lab(tmp_path_factory, "crash", CrashGuide) as lab:
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


def _converges(lab, what: str, done_before: set[str]) -> None:
    """The next apply finishes the job without redoing what the killed run reported done, and the
    lab is exactly the lab."""
    started = time.monotonic()
    result = lab.run("apply", "--yes")
    errors = "\n".join(line for line in result.out.splitlines() if line.startswith("Error"))
    assert result.code == 0, f"{what}: the next apply failed:\n{errors}\n{result.out[-1500:]}{result.err}"
    redone = done_before & _created(result.out)
    assert not redone, f"{what}: the next apply created again what the killed run had made: {sorted(redone)}"
    assert lab.run("plan", "--detailed-exitcode").code == 0, f"{what}: plan not empty after the next apply"
    assert until(lambda: lab.run("check").code == 0, 60, step=2), f"{what}: {lab.run('check').out}\n{_listening(lab)}"
    names = sorted(i["name"] for i in json.loads(lab.lxc("list", "--format=json")))
    assert names == ["bystander", "proxyha", "web1", "web2"], f"{what}: {names}"
    profiles = sorted(p["name"] for p in json.loads(lab.lxc("profile", "list", "--format=json")))
    assert profiles == sorted(["default", "handmade", "macvlan"]), profiles  # the killed run's lock is gone too
    assert _etags(lab) == lab.untouched, f"{what}: an object the lab does not own changed"
    waited = "waited for LXD" if "Waiting for LXD to finish" in result.err else ""
    took = "took over the lock" if "Took over the lock" in result.err else ""
    remade = f"made {result.out.count('made again')} half-made container(s) again" if "made again" in result.out else ""
    steps = len(_finished(result.out))
    RESULTS.append(f"{what}: converged in {time.monotonic() - started:.1f}s ({steps} steps) {waited} {took}"
                   f" {remade}".rstrip())


def _listening(lab) -> str:
    """For a failed check (run 15 once found nothing listening on the proxy device's port after a daemon
    kill): who listens on the host's lab ports, and proxyha's devices and state as LXD has them."""
    ports = sh("ss", "-Hltnp", check=False).stdout.splitlines()
    held = [line for line in ports if f":{lab.http_port} " in line or f":{lab.http_port + 1} " in line]
    proxyha = json.loads(lab.lxc("query", f"/1.0/instances/proxyha?project={lab.project}", check=False) or "{}")
    return (f"listening on {lab.http_port}/{lab.http_port + 1}: {held or 'nothing'}; proxyha: "
            f"{proxyha.get('status')}, devices {proxyha.get('expanded_devices', {}).get('http')}")


def _finished(out: str) -> list[str]:
    """`address: past-tense` of every step an apply's plain progress reported done."""
    return [line.rsplit(" [", 1)[0] for line in out.splitlines() if line.endswith("s]") and ": " in line]


def _created(out: str) -> set[str]:
    return {line.split(": ")[0] for line in _finished(out) if line.endswith(": created")}


@pytest.mark.parametrize("steps", KILL_AFTER_STEPS)
def test_a_killed_apply_converges_on_the_next(crashed, steps):
    assert crashed.run("destroy", "--yes").code == 0
    apply = _start_apply(crashed)
    assert apply.stdout is not None
    seen: list[str] = []
    for line in apply.stdout:  # bounded: the apply ends by itself
        seen.append(line)
        if (steps == 0 and line.startswith("Plan: ")) or (steps and len(_finished("".join(seen))) == steps):
            break
    os.killpg(apply.pid, signal.SIGKILL)
    out, _ = apply.communicate(timeout=60)
    out = "".join(seen) + out
    assert "Apply complete" not in out, f"the apply ended before its step {steps}: move the kill earlier\n{out}"
    done = _finished(out)
    assert len(done) >= steps, out
    _converges(crashed, f"SIGKILL after step {steps} ({done[-1] if done else 'none done'})", _created(out))


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


def _running_operation(lab, description: str, name: str) -> bool:
    found = sh("lxc", "query", f"/1.0/operations?recursion=1&project={lab.project}", check=False)
    if found.returncode != 0:
        return False
    ops = (json.loads(found.stdout) or {}).get("running") or []
    return any(op.get("description") == description
               and f"/1.0/instances/{name}" in " ".join((op.get("resources") or {}).get("instances") or [])
               for op in ops)


@pytest.mark.daemon_exclusive  # kills the daemon: run alone, after the parallel tests (Makefile)
@pytest.mark.parametrize("description, name", DAEMON_KILL_DURING)
def test_an_apply_whose_lxd_daemon_is_killed_fails_clearly_and_converges_once_it_is_back(crashed, description, name):
    assert crashed.run("destroy", "--yes").code == 0
    apply = _start_apply(crashed)
    try:
        assert until(lambda: _running_operation(crashed, description, name), 300, step=0.05), \
            f"never saw {description!r} on {name} running"
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
    # An operation of the apply was running when LXD died, and steps remained: the run cannot have
    # completed; it says which steps failed, in LXD's terms, and never with a traceback.
    errors = [line for line in out.splitlines() if line.startswith("Error: ")]
    assert apply.returncode == 1 and "Apply failed." in out and "Traceback" not in out, out[-3000:]
    assert errors and any(lost in line for line in errors for lost in LXD_LOST), "\n".join(errors) or out[-3000:]
    _converges(crashed, f"LXD daemon killed during {description!r} on {name} ({len(errors)} steps failed)",
               _created(out))

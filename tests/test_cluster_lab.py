"""Labs on the real three-member LXD cluster scripts/cluster-up.sh builds (lxdm1..3, system containers on
the bridge lcbr0, the lxc remote `labcluster`): the guide's lab spread over the members
(examples/cluster.yaml), checked by HTTP through the proxy device on lxdm3's own address; a container
moved by hand and moved back by apply, then its member evacuated and restored, each under a steady stream
of requests through that device (none may fail: docs/performance.md); placement with groups, stopped and
held containers; plan's API calls the same for one container and for three spread over the members.

Each lab lives in a project it owns and deletes.  The cluster is left up, every member Online (a test
that evacuates a member restores it, whatever happens).  `make cluster-test` runs this module alone;
the timings it prints (pytest -s) are those of docs/scale.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PREFIXES, ROOT, RUN_KEY, LabDir, next_tag, sh
from test_cluster_infra import cluster_up

from reconciler.check import ask
from reconciler.haproxy.runtime import client_argv

REMOTE = "labcluster"
MEMBERS = ("lxdm1", "lxdm2", "lxdm3")
TIMES: list[tuple[str, float]] = []  # what, seconds: printed at the end, for docs/scale.md
EVACUATIONS = Path("/run/reconciler-test/evacuated")  # member -> pid of the test run that evacuated it
CHECK_TRIES = 6  # a moved server is seconds from HAProxy's health checks marking it up
PROXY = ("10.203.90.13", 80)  # proxyha's proxy device: lxdm3's own address (examples/cluster.yaml's defaults)
HOSTS = ("site1.testdomain.com", "site2.testdomain.com")
MAX_REQUESTS = 12000  # bounded: at 20 a second, ten minutes
INTERVAL = 0.05  # seconds between two requests (an Event's wait: the end of the load cuts it short)


@contextmanager
def timed(what: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    TIMES.append((what, time.monotonic() - start))


def rlxc(*args: str) -> str:
    return sh("lxc", *args).stdout


def query(path: str):
    return json.loads(rlxc("query", f"{REMOTE}:{path}"))


def placed(project: str) -> dict[str, tuple[str, str]]:
    """container -> (member, status)."""
    return {i["name"]: (i["location"], i["status"]) for i in query(f"/1.0/instances?project={project}&recursion=1")}


def member_states() -> dict[str, str]:
    return {m["server_name"]: m["status"] for m in query("/1.0/cluster/members?recursion=1")}


def _alive(pid: str | None) -> bool:
    """A process has this pid now (never pid 0: os.kill would signal our own process group)."""
    if not pid or not pid.isdigit() or int(pid) == 0:
        return False
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False


def drop_cluster_project(name: str) -> None:
    for inst in json.loads(sh("lxc", "list", f"{REMOTE}:", "--project", name, "--format=json").stdout):
        sh("lxc", "delete", "--force", "--project", name, f"{REMOTE}:{inst['name']}", check=False)
    sh("lxc", "project", "delete", f"{REMOTE}:{name}", check=False)


def remove_leftovers() -> None:
    """Members a killed run left evacuated, and test projects of runs that are gone. A member another
    live run evacuated is that run's to restore: restoring it here would pull the floor from its test."""
    for member, status in member_states().items():
        if status == "Evacuated" and not _alive(_evacuated_by(member)):
            rlxc("cluster", "restore", f"{REMOTE}:{member}", "--force")
            (EVACUATIONS / member).unlink(missing_ok=True)
    for project in query("/1.0/projects?recursion=1"):
        if project["name"].startswith(PREFIXES) and not _alive(project["config"].get(RUN_KEY)):
            drop_cluster_project(project["name"])


@pytest.fixture(scope="module")
def cluster(lxd_ready) -> Iterator[None]:
    with timed("scripts/cluster-up.sh (idempotent re-run)"):
        cluster_up()
    remove_leftovers()
    yield
    assert set(member_states().values()) == {"Online"}
    print("\ncluster timings (s):\n" + "\n".join(f"  {what}: {seconds:.1f}" for what, seconds in TIMES))


@pytest.fixture
def on_cluster(cluster, tmp_path) -> Iterator[LabDir]:
    """A lab directory bound to a project the lab itself makes on the cluster."""
    tag = next_tag()
    yield LabDir(tmp_path, tag, tag)
    drop_cluster_project(tag)
    sh("lxc", "profile", "delete", f"{REMOTE}:reconciler-lock-{tag}", check=False)


def _evacuated_by(member: str) -> str | None:
    try:
        return (EVACUATIONS / member).read_text()
    except FileNotFoundError:
        return None


@contextmanager
def evacuated(member: str, holding: str) -> Iterator[None]:
    EVACUATIONS.mkdir(parents=True, exist_ok=True)
    (EVACUATIONS / member).write_text(str(os.getpid()))  # the members run on this host: so do all test runs
    with timed(f"lxc cluster evacuate {member} --force ({holding})"):
        rlxc("cluster", "evacuate", f"{REMOTE}:{member}", "--force")
    try:
        yield
    finally:
        with timed(f"lxc cluster restore {member} --force ({holding})"):
            rlxc("cluster", "restore", f"{REMOTE}:{member}", "--force")
        (EVACUATIONS / member).unlink(missing_ok=True)


def ok(lab: LabDir, *args: str, what: str = "") -> str:
    with timed(what or " ".join(("reconcile",) + args)):
        done = lab.run(*args)
    assert done.code == 0, done.out + done.err
    return done.out


def moved_by_hand(lab: LabDir, name: str, member: str) -> None:
    """As an operator would (LXD 5.0 moves a container between members only stopped)."""
    with timed(f"by hand: lxc stop, move --target {member}, start ({name})"):
        running = placed(lab.project)[name][1] == "Running"
        if running:
            rlxc("stop", "--project", lab.project, f"{REMOTE}:{name}")
        rlxc("move", "--project", lab.project, f"{REMOTE}:{name}", "--target", member)
        if running:
            rlxc("start", "--project", lab.project, f"{REMOTE}:{name}")


def checked(lab: LabDir, what: str) -> str:
    """`reconcile check`, again (bounded) while HAProxy's health checks catch up with a moved server."""
    with timed(what):
        for _ in range(CHECK_TRIES):
            done = lab.run("check")
            if done.code == 0:
                return done.out
            time.sleep(3)
    raise AssertionError(done.out + done.err + "\n" + proxyha_state(lab))


def proxyha_state(lab: LabDir) -> str:
    """What a failed check needs to be understood: where proxyha runs, its proxy device, HAProxy's state."""
    placement = placed(lab.project).get("proxyha")
    devices = query(f"/1.0/instances/proxyha?project={lab.project}").get("expanded_devices", {})
    haproxy = sh("lxc", "exec", "--project", lab.project, f"{REMOTE}:proxyha", "--", "systemctl", "status",
                 "--no-pager", "haproxy", check=False)
    member = placement[0] if placement else "lxdm3"
    listening = sh("lxc", "exec", "--project", "reconciler-cluster", member, "--", "ss", "-ltnp", check=False)
    return (f"proxyha: {placement}; its proxy devices: {devices}\n{haproxy.stdout}{haproxy.stderr}"
            f"listening on {member}:\n{listening.stdout}{listening.stderr}")


def address(lab: LabDir, name: str) -> str | None:
    """The container's IPv4 on eth0, as LXD reports it."""
    state = query(f"/1.0/instances/{name}/state?project={lab.project}")
    found = [a["address"] for a in ((state.get("network") or {}).get("eth0") or {}).get("addresses", [])
             if a["family"] == "inet"]
    return found[0] if found else None


def until_addressed(lab: LabDir, name: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if address(lab, name):
            return
        time.sleep(1)
    raise AssertionError(f"{name} has no address after {seconds}s")


def haproxy_addresses(lab: LabDir) -> dict[tuple[str, str], str]:
    """(backend, server) -> the address proxyha's running HAProxy sends it requests at (`show servers state`)."""
    lines = rlxc("exec", "--project", lab.project, f"{REMOTE}:proxyha", "--",
                 *client_argv("/run/haproxy/admin.sock", "show servers state")).splitlines()
    header = lines[1][2:].split()
    rows = [dict(zip(header, line.split())) for line in lines[2:] if line.strip()]
    return {(r["be_name"], r["srv_name"]): r["srv_addr"] for r in rows}


@dataclass
class Stream:
    """Requests sent through the proxy device while something happens: how many, the failed ones (seconds
    since the start, status, server, marker), and marks (seconds, what began) to tell the phases apart."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    failed: list[tuple[float, int, str, str]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0

    def now(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def mark(self, what: str) -> None:
        self.marks.append((self.now(), what))

    def failed_during(self, what: str) -> list[tuple[float, int, str, str]]:
        """The failures from the mark `what` to the next mark."""
        starts = [t for t, w in self.marks if w == what]
        ends = [t for t, _ in self.marks if t > starts[0]] if starts else []
        return [f for f in self.failed if starts and starts[0] <= f[0] < (ends[0] if ends else float("inf"))]

    def said(self, what: str) -> str:
        phases = ", ".join(f"{w} at {t:.1f}s: {len(self.failed_during(w))} failed" for t, w in self.marks)
        return (f"{what} under load: {self.sent} requests in {self.seconds:.1f}s, {len(self.failed)} failed"
                f" ({phases}); first failures: {self.failed[:5]}")


@contextmanager
def under_load() -> Iterator[Stream]:
    """A steady stream of requests through proxyha's proxy device, alternating both sites, from a thread,
    for as long as the body runs (at most MAX_REQUESTS)."""
    stream, done = Stream(), threading.Event()

    def requesting() -> None:
        while not done.is_set() and stream.sent < MAX_REQUESTS:
            answer = ask(*PROXY, HOSTS[stream.sent % 2])
            stream.sent += 1
            if answer.status != 200:
                stream.failed.append((stream.now(), answer.status, answer.server, answer.marker))
            done.wait(INTERVAL)

    requester = threading.Thread(target=requesting, daemon=True)
    requester.start()
    try:
        yield stream
    finally:
        done.set()
        requester.join(timeout=30)
        stream.seconds = time.monotonic() - stream.started
    assert not requester.is_alive(), "the requests did not stop"
    assert stream.sent < MAX_REQUESTS, f"the load stopped at {MAX_REQUESTS} requests, before the body ended"


def settled(lab: LabDir, what: str) -> None:
    """Apply, then plan has nothing left (a moved server's address is known once it runs again)."""
    ok(lab, "apply", "--yes", what=what)
    plan = lab.run("plan", "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err


# --- the guide's lab over three members ---------------------------------------------------------------

def test_the_guides_lab_over_three_members_moves_back_and_rides_out_an_evacuation(on_cluster, monkeypatch):
    lab = on_cluster
    monkeypatch.setenv("LAB_PROJECT", lab.project)
    lab.write((ROOT / "examples" / "cluster.yaml").read_text())
    (lab.dir / "lab.override.yaml").write_text(f'project:\n  config: {{{RUN_KEY}: "{os.getpid()}"}}\n')

    plan = ok(lab, "plan", what="plan from nothing (no project yet)")
    daemon, _, changes = plan.partition("\n")
    assert daemon.startswith("Daemon: LXD ") and changes.startswith(f"  + project.{lab.project} will be created"), plan
    ok(lab, "apply", "--yes", what="apply from nothing (3 Debian containers on 3 members)")
    assert {n: m for n, (m, _) in placed(lab.project).items()} == {"web1": "lxdm1", "web2": "lxdm2", "proxyha": "lxdm3"}
    out = checked(lab, "reconcile check (12 requests)")
    assert "site1.testdomain.com via 10.203.90.13:80 -> backend subdomain1" in out, out
    assert {"site1(SITE1)", "site2(SITE2)"} <= set(re.findall(r"site\d\(SITE\d\)", out))
    assert lab.run("plan", "--detailed-exitcode").code == 0

    moved_by_hand(lab, "web2", "lxdm1")
    plan = lab.run("plan")
    assert (">> instance.web2 will be moved to another cluster member (on lxdm1, lab.yaml says lxdm2)"
            " [changed outside lab.yaml]") in plan.out, plan.out
    refused = lab.run("apply", "--yes")
    assert refused.code == 1 and "this plan moves web2 to another cluster member" in refused.err
    assert "--allow-restart" in refused.err and placed(lab.project)["web2"][0] == "lxdm1"  # nothing was done
    assert "drains subdomain1/site2, subdomain2/site2 first" in plan.out, plan.out  # disruption.py: a move drains
    before = address(lab, "web2")
    with under_load() as move:
        move.mark("apply --allow-restart")
        moved = ok(lab, "apply", "--yes", "--allow-restart", what="apply --allow-restart moving web2 back (under load)")
    after = address(lab, "web2")
    print("\n" + move.said(f"move of web2 back to lxdm2 by apply (its address {before} -> {after})"))
    assert "instance.web2: moved" in moved and placed(lab.project)["web2"] == ("lxdm2", "Running")
    assert move.sent > 40 and move.failed == [], move.said("the move") + "\n" + proxyha_state(lab)
    # draining._bring_back set site2's address to web2's live one before it set it ready (a move may change it)
    live = haproxy_addresses(lab)
    assert live[("subdomain1", "site2")] == live[("subdomain2", "site2")] == after, (live, after)
    assert lab.run("plan", "--detailed-exitcode").code == 0
    checked(lab, "reconcile check after the move")

    # LXD, not apply, takes web2 away (stop, copy, start elsewhere) and back: HAProxy learns it from its
    # health checks only.
    with under_load() as evacuation:
        evacuation.mark("evacuate")
        with evacuated("lxdm2", "web2 migrated, under load"):
            evacuation.mark("evacuated")
            web2 = placed(lab.project)["web2"]
            assert web2[0] in ("lxdm1", "lxdm3") and web2[1] == "Running"  # cluster.evacuate: migrate
            plan = ok(lab, "plan", what="plan with lxdm2 evacuated")
            assert (f"Note: web2 is on {web2[0]}, lab.yaml says lxdm2, but lxdm2 is evacuated: it stays where it is"
                    in plan), plan
            assert ">>" not in plan  # no move to a member that cannot start it
            until_addressed(lab, "web2")
            settled(lab, "apply with lxdm2 evacuated")
            checked(lab, "reconcile check with lxdm2 evacuated")
            evacuation.mark("restore")
        evacuation.mark("restored")
        assert placed(lab.project)["web2"][0] == "lxdm2"  # LXD brought it back
        until_addressed(lab, "web2")
        settled(lab, "apply after the restore")
        checked(lab, "reconcile check after the restore")
    print("\n" + evacuation.said("evacuation of lxdm2 and its restore"))
    assert evacuation.sent > 40 and evacuation.failed == [], evacuation.said("the evacuation") + "\n" + proxyha_state(lab)

    gone = ok(lab, "destroy", "--yes", what="destroy (3 containers, then the project)")
    assert f"project.{lab.project}: deleted" in gone
    assert lab.project not in {p["name"] for p in query("/1.0/projects?recursion=1")}


# --- placement on tiny containers -----------------------------------------------------------------------

OWN_PROJECT = """\
lab: @TAG@
lxd: {remote: labcluster, project: @PROJECT@}
project:
  config: {@RUN_KEY@: "@PID@"}
profiles:
  default:
    devices: {root: {type: disk, path: /, pool: default}}
containers:
"""


def in_own_project(containers: str) -> str:
    """A lab that owns its project on the cluster, marked as this run's (the leftover clean-up spares it)."""
    return OWN_PROJECT.replace("@RUN_KEY@", RUN_KEY).replace("@PID@", str(os.getpid())) + containers


TINY = """\
  a1: {image: reconciler-tiny, target: lxdm1}
  a2: {image: reconciler-tiny, target: "@g2"}
  held:                               # a NIC on the member's own lan0 cannot migrate: evacuating stops it there
    image: reconciler-tiny
    target: lxdm2
    devices: {eth0: {type: nic, nictype: macvlan, parent: lan0, name: eth0}}
  s1: {image: reconciler-tiny, target: lxdm3, state: stopped}
"""
LATE = "  late: {image: reconciler-tiny, target: lxdm2}\n"


def tiny(lab: LabDir, extra: str = "") -> Path:
    return lab.write(in_own_project(TINY + extra))


def test_placement_groups_cold_moves_and_an_evacuated_member(on_cluster):
    lab = on_cluster
    tiny(lab, "  a9: {image: reconciler-tiny, target: lxdm9}\n")
    wrong = lab.run("plan")
    assert wrong.code == 1 and "containers.a9.target: no cluster member 'lxdm9'; did you mean" in wrong.err

    tiny(lab)
    ok(lab, "apply", "--yes", what="apply from nothing (4 tiny containers)")
    assert placed(lab.project) == {"a1": ("lxdm1", "Running"), "a2": ("lxdm2", "Running"),
                                   "held": ("lxdm2", "Running"), "s1": ("lxdm3", "Stopped")}

    moved_by_hand(lab, "s1", "lxdm1")
    assert ">> instance.s1 will be moved to another cluster member (on lxdm1, lab.yaml says lxdm3)" \
        in lab.run("plan").out
    ok(lab, "apply", "--yes", what="apply moving a stopped container back (no restart: no flag needed)")
    assert placed(lab.project)["s1"] == ("lxdm3", "Stopped")

    with evacuated("lxdm2", "tiny: a2 migrated, held stopped there"):
        now = placed(lab.project)
        assert now["held"] == ("lxdm2", "Stopped") and now["a2"][0] != "lxdm2"
        plan = lab.run("plan", "--detailed-exitcode")
        assert plan.code == 0, plan.out  # nothing to do: nothing fails either
        assert f"Note: a2 is on {now['a2'][0]}, lab.yaml says @g2, but every member of @g2 is away (lxdm2 is" \
               " evacuated)" in plan.out
        assert "Note: held is stopped on lxdm2, which is evacuated: LXD starts it again when the member is" \
               " restored" in plan.out
        tiny(lab, LATE)
        plan = lab.run("plan")
        assert "Note: late is created where LXD places it, since lxdm2 is evacuated" in plan.out, plan.out
        ok(lab, "apply", "--yes", what="apply creating a container whose member is evacuated")
        assert placed(lab.project)["late"][0] != "lxdm2"
    now = placed(lab.project)
    assert now["a2"] == ("lxdm2", "Running") and now["held"] == ("lxdm2", "Running")  # LXD's restore
    plan = lab.run("plan")
    assert f">> instance.late will be moved to another cluster member (on {now['late'][0]}, lab.yaml says lxdm2)" \
        in plan.out, plan.out
    ok(lab, "apply", "--yes", "--allow-restart", what="apply moving the late container to its member")
    assert placed(lab.project)["late"] == ("lxdm2", "Running")
    assert lab.run("plan", "--detailed-exitcode").code == 0
    ok(lab, "destroy", "--yes", what="destroy (5 tiny containers, then the project)")


# --- plan's reads -----------------------------------------------------------------------------------------



def calls(lab: LabDir, monkeypatch) -> int:
    monkeypatch.setenv("RECONCILER_STATS", "1")
    done = lab.run("plan", "--detailed-exitcode")
    monkeypatch.delenv("RECONCILER_STATS")
    assert done.code == 0, done.out + done.err
    return int(re.search(r"lxd api calls: (\d+)", done.err).group(1))


def test_plan_reads_the_same_for_one_container_and_for_three_spread_over_the_members(cluster, tmp_path, monkeypatch):
    counts = {}
    for n, targets in ((1, ["lxdm1"]), (3, list(MEMBERS)), (3, ["@g1", "@g2", "@g3"])):
        tag = next_tag()
        lab = LabDir(tmp_path / tag, tag, tag)
        lab.dir.mkdir()
        try:
            lab.write(in_own_project("".join(f"  c{i}: {{image: reconciler-tiny, target: '{t}'}}\n"
                                             for i, t in enumerate(targets))))
            ok(lab, "apply", "--yes", what=f"apply from nothing ({n} tiny, targets {', '.join(targets)})")
            members = [f"lxdm{t[2:]}" if t.startswith("@g") else t for t in targets]  # group gN holds lxdmN
            assert sorted(m for m, _ in placed(lab.project).values()) == sorted(members)
            counts[(n, targets[0])] = calls(lab, monkeypatch)
        finally:
            drop_cluster_project(tag)
            sh("lxc", "profile", "delete", f"{REMOTE}:reconciler-lock-{tag}", check=False)
    # GET /1.0, the project, instances, profiles, networks, images, network ACLs, storage pools, cluster members
    # (no nested reads: the lab owns no network or pool, and names none for a forward or a volume)
    assert set(counts.values()) == {9}, counts


def test_a_new_bridge_on_a_cluster_is_refused_at_plan_with_the_way_out(cluster, tmp_path):
    tag = next_tag()
    lab = LabDir(tmp_path, tag, tag)
    lab.write(in_own_project("  c1: {image: reconciler-tiny}\nnetworks:\n  @TAG@br:\n"
                             "    config: {ipv4.address: 10.203.66.1/24}\n"))
    done = lab.run("plan")
    assert done.code == 1 and done.err.count("Error:") == 1, done.err
    assert f"Error: networks.{tag}br: LXD at remote 'labcluster'" in done.err and "is a cluster" in done.err, done.err
    assert "macvlan" in done.err and "existing.networks" in done.err
    assert tag not in {p["name"] for p in query("/1.0/projects?recursion=1")}  # a plan makes nothing


def test_a_target_on_an_lxd_that_is_not_a_cluster_fails_the_plan_in_one_line(lab):
    lab.write("lab: @TAG@\nlxd: {project: @PROJECT@}\ncontainers:\n  c1: {image: reconciler-tiny, target: lxdm1}\n")
    done = lab.run("plan")
    assert done.code == 1 and done.err.count("\n") == 1, done.err
    assert "lab.yaml places containers on cluster members (target:), but LXD at" in done.err
    assert "not clustered" in done.err


def test_waiting_for_an_operation_on_another_member_is_paced(on_cluster):
    """LXD 5.0 answers a wait at once for an operation on another member than the one asked (the remote is
    lxdm1): lxd.py must not turn that into a busy loop of requests."""
    from reconciler.lxd import Lxd
    from reconciler.remote import load
    lab = on_cluster
    lab.write(in_own_project("  far: {image: reconciler-tiny, target: lxdm3}\n"))
    ok(lab, "apply", "--yes")
    lxd = Lxd(None, lab.project, load(REMOTE))
    before, start = lxd.needed_calls, time.monotonic()
    assert lxd.execute("far", ["sleep", "3"])[0] == 0
    took, calls = time.monotonic() - start, lxd.needed_calls - before
    assert 3 <= took < 5, took
    assert calls <= 16, calls  # the exec, its output, and at most a few waits a second (it was hundreds)


def test_a_member_another_live_run_evacuated_is_left_to_that_run(cluster):
    """Two test runs on one cluster: the clean-up of one must not restore what the other evacuated."""
    rlxc("cluster", "evacuate", f"{REMOTE}:lxdm3", "--force")
    try:
        EVACUATIONS.mkdir(parents=True, exist_ok=True)
        (EVACUATIONS / "lxdm3").write_text("1")  # a live process that is not this run
        remove_leftovers()
        assert member_states()["lxdm3"] == "Evacuated"
        gone = subprocess.Popen(["true"])
        gone.wait()
        (EVACUATIONS / "lxdm3").write_text(str(gone.pid))  # its run is gone: a leftover
        remove_leftovers()
        assert member_states()["lxdm3"] == "Online" and not (EVACUATIONS / "lxdm3").exists()
    finally:
        if member_states()["lxdm3"] == "Evacuated":
            rlxc("cluster", "restore", f"{REMOTE}:lxdm3", "--force")
        (EVACUATIONS / "lxdm3").unlink(missing_ok=True)

"""Incus (LXD's fork, Debian's incus 6.0 LTS) beside LXD: which daemon a lab talks to (lab.yaml's
socket, $LXD_DIR / $INCUS_DIR, the usual sockets of both, `lxd.daemon`), the plan saying which, and a
small lab's whole life on a real Incus (scripts/incus-up.sh starts it) and on LXD, the same lab.yaml:
planned, applied (a file written inside through exec), served through a proxy device, drift shown
and repaired, destroyed. Saved plans are refused on the other daemon."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import (
    INCUS_PREFIX,
    INCUS_SOCKET,
    ROOT,
    RUN,
    IncusLab,
    drop_incus_project,
    incus,
    new_incus_project,
    sh,
    until,
)
from test_guide_lab import Guide

from reconciler.daemon import Daemon
from reconciler.errors import LxdError, LxdUnreachable
from reconciler.lxd import SOCKETS, Lxd, candidate_sockets
from reconciler.plan import Plan, plan_from_json
from reconciler.render import plan_text

# Alone, after the parallel tests: Incus's bridge set-up lists the host's interfaces, and failed when an LXD
# test's interface vanished meanwhile ("Failed to delete bridge children interfaces ... does not exist").
pytestmark = pytest.mark.daemon_exclusive

# --- which socket, without a daemon -----------------------------------------------------------------

@pytest.fixture
def no_dirs(monkeypatch):
    monkeypatch.delenv("LXD_DIR", raising=False)
    monkeypatch.delenv("INCUS_DIR", raising=False)
    return monkeypatch


def test_lab_yaml_socket_is_the_only_one_tried(no_dirs):
    no_dirs.setenv("INCUS_DIR", "/srv/incus")
    assert candidate_sockets("/x/unix.socket", "incus") == ["/x/unix.socket"]


def test_without_a_socket_lxd_comes_first_then_incus(no_dirs):
    assert candidate_sockets(None) == [*SOCKETS["lxd"], *SOCKETS["incus"]]
    assert INCUS_SOCKET in SOCKETS["incus"] and "/run/incus/unix.socket" in SOCKETS["incus"]


def test_a_named_daemon_tries_only_its_own_sockets(no_dirs):
    assert candidate_sockets(None, "incus") == list(SOCKETS["incus"])
    assert candidate_sockets(None, "lxd") == list(SOCKETS["lxd"])


@pytest.mark.parametrize("env, daemon, expected", [
    ({"LXD_DIR": "/l"}, None, ["/l/unix.socket"]),
    ({"INCUS_DIR": "/i"}, None, ["/i/unix.socket"]),
    ({"LXD_DIR": "/l", "INCUS_DIR": "/i"}, None, ["/l/unix.socket"]),  # LXD's first, as before Incus
    ({"LXD_DIR": "/l", "INCUS_DIR": "/i"}, "incus", ["/i/unix.socket"]),
    ({"LXD_DIR": "/l"}, "incus", list(SOCKETS["incus"])),  # LXD's directory says nothing about Incus
])
def test_a_daemon_directory_is_honoured_alone(no_dirs, env, daemon, expected):
    for name, value in env.items():
        no_dirs.setenv(name, value)
    assert candidate_sockets(None, daemon) == expected


def test_no_socket_anywhere_is_one_clear_error(no_dirs, tmp_path):
    no_dirs.setenv("INCUS_DIR", str(tmp_path))
    with pytest.raises(LxdUnreachable, match=r"no LXD or Incus socket at .*unix\.socket \(from \$INCUS_DIR\)"):
        Lxd(None, daemon="incus")


def test_the_daemon_is_read_from_get_1_0():
    assert Daemon.from_host_info({"environment": {"server": "incus", "server_version": "6.0.4"}}) == Daemon(
        "incus", "6.0.4")
    assert str(Daemon.from_host_info({"environment": {"server_version": "5.0.2"}})) == "LXD 5.0.2"


def test_the_plan_says_which_daemon_in_its_header_and_json():
    plan = Plan("l", (), {}, daemon=Daemon("incus", "6.0.4"))
    assert plan_text(plan).splitlines()[0] == "Daemon: Incus 6.0.4"
    data = json.loads(json.dumps(plan.as_json()))
    assert data["daemon"] == {"name": "incus", "version": "6.0.4"}
    assert plan_from_json(data).daemon == Daemon("incus", "6.0.4")
    assert plan.fingerprint() == Plan("l", (), {}).fingerprint()  # what it does, not where


def test_a_new_projects_default_profile_names_its_daemon():
    from reconciler.kinds.project import made_with
    assert made_with("p1", "incus")["description"] == "Default Incus profile for project p1"
    assert made_with("p1", "lxd")["description"] == "Default LXD profile for project p1"


def test_an_object_the_lab_does_not_own_is_said_to_be_in_the_daemon_that_holds_it():
    from reconciler.address import profile
    from reconciler.engine import _check_conflicts
    from reconciler.live import Live
    from reconciler.plan import PlanError
    from reconciler.state import Resource
    desired = {profile("net"): Resource(profile("net"), {})}
    live = Live(owned={}, foreign={profile("net"): None}, profiles={}, nics={})
    with pytest.raises(PlanError, match=r"^profile\.net already exists in Incus and belongs to no lab \(it has no"):
        _check_conflicts(desired, live, set(), "Incus")
    _check_conflicts(desired, live, {profile("net")}, "Incus")  # adopted: taken over as it is


def test_an_unknown_daemon_in_lab_yaml_is_refused_with_its_line(tmp_path, capsys):
    from reconciler.cli import main
    lab = tmp_path / "lab.yaml"
    lab.write_text("lab: x\nlxd:\n  daemon: docker\ncontainers: {}\n")
    assert main(["validate", "-f", str(lab)]) == 1
    said = capsys.readouterr()
    assert "lab.yaml:3" in said.err + said.out and "daemon" in said.err + said.out, said


@pytest.mark.parametrize("url", ["/1.0/instances/c2/logs/exec_1.stdout", "/1.0/instances/c1/logs/../../c2/x",
                                 "/1.0/images/x", "/1.0/instances/c1"])
def test_exec_output_is_read_only_under_the_instances_own_logs(url):
    lxd = object.__new__(Lxd)
    lxd.where = "/var/lib/incus/unix.socket"
    with pytest.raises(LxdError, match="recorded the output of an exec in instance c1"):
        lxd._output_node("c1", url)


# --- a real Incus ------------------------------------------------------------------------------------

# One lab.yaml for both daemons: no socket, no daemon; $INCUS_DIR (set by the `lab` fixture) points it
# at Incus. Each daemon's
# bridge has its own subnet and each proxy its own port (no LXD test uses them: grep tests/), so a
# leftover of one never stands in the other's way.
SMALL = """\
lab: @TAG@
lxd: {project: @PROJECT@}
networks:
  @TAG@b:
    config: {ipv4.address: "${NET}.1/24", ipv4.nat: false, ipv6.address: none}
profiles:
  net:
    description: the lab's bridge
    devices:
      eth0: {type: nic, network: @TAG@b, name: eth0}
containers:
  c1:
    image: reconciler-tiny
    profiles: [default, net]
    config: {user.note: first}
    files:
      /var/www/hello.txt: {content: "hello from ${DAEMON}\\n"}
    devices:
      http: {type: proxy, listen: "tcp:127.0.0.1:${PORT}", connect: "tcp:127.0.0.1:80"}
"""
PLACES = {"lxd": ("10.203.151", 18952), "incus": ("10.203.150", 18951)}


def served(port: int, path: str) -> str:
    """A GET through the lab's proxy device, retried for a bounded time (busybox httpd starts with it)."""
    answered: list[str] = []

    def once() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as answer:
                answered.append(answer.read().decode())
                return True
        except OSError:
            return False

    assert until(once, 20, step=0.3), f"http://127.0.0.1:{port}{path}: no answer within 20s"
    return answered[0]


@pytest.mark.daemons("lxd", "incus")
def test_a_small_lab_lives_its_whole_life_on_either_daemon(lab, monkeypatch):
    daemon = lab.daemon
    net, port = PLACES[daemon]
    for name, value in (("NET", net), ("PORT", str(port)), ("DAEMON", daemon)):
        monkeypatch.setenv(name, value)
    lab.write(SMALL)
    plan = lab.run("plan")
    assert plan.code == 0, plan.out + plan.err
    assert plan.out.splitlines()[0].startswith({"lxd": "Daemon: LXD 5.", "incus": "Daemon: Incus 6."}[daemon])
    assert "Plan: 4 to create." in plan.out
    title = {"lxd": "LXD", "incus": "Incus"}[daemon]
    assert f"instance.c1 will be created (not in {title})" in plan.out, plan.out  # the daemon it talks to

    applied = lab.run("apply", "--yes")
    assert applied.code == 0 and "Apply complete! 4 done, 0 failed" in applied.out, applied.out + applied.err
    assert lab.instance("c1")["config"]["user.reconciler.lab"] == lab.tag
    hello = f"hello from {daemon}\n"
    assert served(port, "/hello.txt") == hello  # written inside through exec, served by the proxy
    assert "No changes." in lab.run("plan").out

    lab.lxc("config", "set", "c1", "user.note", "by hand")
    lab.lxc("profile", "set", "net", "user.hand", "1")
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo changed > /var/www/hello.txt")
    drift = lab.run("plan", "--json")
    data = json.loads(drift.out)
    assert data["daemon"]["name"] == daemon
    assert {c["address"]: c["actions"] for c in data["changes"]} == {
        "instance.c1": ["update"], "profile.net": ["update"], "file.c1:/var/www/hello.txt": ["update"]}
    repaired = lab.run("apply", "--yes")
    assert repaired.code == 0, repaired.out + repaired.err
    assert served(port, "/hello.txt") == hello
    assert lab.instance("c1")["config"]["user.note"] == "first"
    again = lab.run("plan", "--detailed-exitcode")
    assert again.code == 0 and "No changes." in again.out, again.out + again.err

    gone = lab.run("destroy", "--yes")
    assert gone.code == 0, gone.out + gone.err
    assert json.loads(lab.lxc("list", "--format=json")) == []
    assert f"{lab.tag}b" not in [n["name"] for n in json.loads(lab.lxc("network", "list", "--format=json"))]


@pytest.mark.daemons("lxd", "incus")
def test_exec_output_is_read_where_each_daemon_records_it(lab):
    """Incus records it under logs/exec-output/, LXD 5.0 under logs/: each is read, then deleted."""
    lab.lxc("launch", "reconciler-tiny", "c1")
    lxd = Lxd(lab.socket, lab.project)
    assert lxd.execute("c1", ["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    logs = lab.query(f"/1.0/instances/c1/logs?project={lab.project}")
    assert not [log for log in logs if "exec" in log], logs


@pytest.mark.daemons("lxd", "incus")
def test_an_operation_outlasting_one_wait_is_waited_for_again_on_either_daemon(lab):
    """LXD 5.0 answers a wait whose timeout passed with the operation still running; Incus 6.0 with an
    error ("context deadline exceeded"), which must not read as the operation's failure."""
    lab.lxc("launch", "reconciler-tiny", "c1")
    lxd = Lxd(lab.socket, lab.project)
    lxd.wait_slice = 1
    assert lxd.execute_once("c1", ["sh", "-c", "sleep 3; echo slept"], timeout=60) == (0, "slept\n", "")


@pytest.mark.lxd
def test_an_lxd_socket_that_does_not_answer_never_sends_the_lab_to_incus(incus_ready, tmp_path, no_dirs):
    import socket
    stale = tmp_path / "unix.socket"  # bound, never listening: what a killed daemon leaves
    with socket.socket(socket.AF_UNIX) as left:
        left.bind(str(stale))
        no_dirs.setitem(SOCKETS, "lxd", (str(stale),))
        with pytest.raises(LxdUnreachable, match=f"LXD at {stale} did not answer"):
            Lxd(None)
        assert Lxd(None, daemon="incus").daemon.name == "incus"


@pytest.mark.lxd
def test_discovery_finds_lxd_first_and_incus_when_named(incus_ready, lxd_ready, no_dirs):
    assert Lxd(None).daemon.name == "lxd"  # both run here: LXD's sockets come first, as before
    assert Lxd(None, daemon="incus").daemon.name == "incus"
    no_dirs.setenv("INCUS_DIR", str(Path(INCUS_SOCKET).parent))
    assert Lxd(None).daemon.name == "incus"  # $INCUS_DIR alone (no $LXD_DIR) names the daemon
    with pytest.raises(LxdError, match=r"/var/lib/incus/unix\.socket is Incus 6\.\S+, not LXD: lab\.yaml says"
                                       r" lxd\.daemon: lxd"):
        Lxd(INCUS_SOCKET, daemon="lxd")


OWNED = """\
lab: @TAG@
lxd: {project: @PROJECT@}
project: {}
profiles:
  default:
    devices:
      root: {type: disk, path: /, pool: default}
containers:
  c1: {image: reconciler-tiny}
"""


@pytest.mark.daemons("incus")
def test_a_plan_saved_against_incus_is_refused_on_lxd(lab, no_dirs):
    """The same lab.yaml (no socket) reaches Incus through $INCUS_DIR, LXD without it: a plan saved
    on one is not applied on the other, and nothing is made there."""
    lab.write(OWNED.replace("@PROJECT@", f"{lab.tag}o"))
    no_dirs.setenv("INCUS_DIR", str(Path(INCUS_SOCKET).parent))
    saved = lab.run("plan", "-o", str(lab.dir / "plan.json"))
    assert saved.code == 0 and saved.out.startswith("Daemon: Incus "), saved.out + saved.err
    no_dirs.delenv("INCUS_DIR")
    refused = lab.run("apply", "--yes", str(lab.dir / "plan.json"))
    assert refused.code == 1
    assert "was made against Incus 6." in refused.err and "/var/lib/lxd/unix.socket is LXD 5." in refused.err
    assert sh("lxc", "project", "show", f"{lab.tag}o", check=False).returncode != 0  # nothing made on LXD
    no_dirs.setenv("INCUS_DIR", str(Path(INCUS_SOCKET).parent))
    try:
        applied = lab.run("apply", "--yes", str(lab.dir / "plan.json"))
        assert applied.code == 0 and "Apply complete! 3 done" in applied.out, applied.out + applied.err
    finally:
        gone = lab.run("destroy", "--yes")
    assert gone.code == 0 and incus("project", "show", f"{lab.tag}o", check=False) == "", gone.out + gone.err


INCUS_HTTPS = "127.0.0.1:18943"  # Incus over HTTPS on loopback only, while the test runs


@pytest.fixture
def incus_remote(incus_ready, tmp_path, no_dirs):
    """An incus remote `inc` in a client configuration of the test's own ($INCUS_CONF), added with a
    trust token (Incus has no trust passwords), its certificate pinned; undone after."""
    conf = tmp_path / "incus-conf"
    name = f"{INCUS_PREFIX}{RUN}-remote"
    incus("config", "set", "core.https_address", INCUS_HTTPS)
    try:
        token = incus("config", "trust", "add", name).strip().splitlines()[-1]
        done = sh("incus", "remote", "add", "inc", token, env={**os.environ, "INCUS_CONF": str(conf)}, check=False)
        assert done.returncode == 0, done.stderr
        no_dirs.setenv("INCUS_CONF", str(conf))
        no_dirs.setenv("LXD_CONF", str(tmp_path / "no-lxc-conf"))  # lxc lists no such remote
        yield conf
    finally:
        for trusted in json.loads(incus("config", "trust", "list", "--format=json")):
            if trusted["name"] == name:
                incus("config", "trust", "remove", trusted["fingerprint"])
        incus("config", "unset", "core.https_address")


REMOTE_LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@, remote: inc@DAEMON@}
containers:
  c1: {image: reconciler-tiny, config: {user.note: over https}}
"""


@pytest.mark.daemons("incus")
@pytest.mark.parametrize("named", [True, False])
def test_a_lab_reaches_incus_through_an_incus_remote(lab, incus_remote, named):
    """The remote comes from incus's client configuration: named (`daemon: incus`), or found there when
    lxc's lists no such remote."""
    lab.write(REMOTE_LAB.replace("@DAEMON@", ", daemon: incus" if named else ""))
    applied = lab.run("apply", "--yes")
    assert applied.code == 0 and applied.out.startswith("Daemon: Incus 6."), applied.out + applied.err
    assert f"Incus: remote 'inc' (https://{INCUS_HTTPS}), its certificate as pinned in {incus_remote}" in applied.err
    assert lab.instance("c1")["config"]["user.note"] == "over https"
    assert lab.run("destroy", "--yes").code == 0


def test_an_lxd_lab_does_not_read_incus_remotes(tmp_path, no_dirs):
    from reconciler.remote import RemoteError, load
    (tmp_path / "incus").mkdir()
    (tmp_path / "incus" / "config.yml").write_text("remotes:\n  inc: {addr: 'https://127.0.0.1:1', protocol: incus}\n")
    no_dirs.setenv("INCUS_CONF", str(tmp_path / "incus"))
    no_dirs.setenv("LXD_CONF", str(tmp_path / "lxc"))
    with pytest.raises(RemoteError, match=r"no lxc configuration .*lxc/config\.yml"):
        load("inc", daemon="lxd")
    with pytest.raises(RemoteError, match=r"remote 'inc': no pinned server certificate .*incus/servercerts/inc\.crt"):
        load("inc")  # lxc has none: incus's is read


def test_a_lab_needing_an_extension_the_daemon_lacks_is_named(tmp_path):
    from reconciler.daemon import missing_extensions
    from reconciler.spec import load_lab
    (tmp_path / "lab.yaml").write_text("""\
lab: x
lxd: {project: p1}
project: {}
profiles:
  default: {devices: {root: {type: disk, path: /, pool: default}}}
acls:
  a1: {ingress: [{action: allow, protocol: icmp4}]}
containers:
  c1: {image: i, files: {/etc/x: {content: "x"}}}
""")
    lab, _ = load_lab(tmp_path / "lab.yaml")
    every = {"instances", "network_acl", "projects", "container_exec_recording"}
    assert missing_extensions(lab, every) == []
    assert missing_extensions(lab, every - {"network_acl", "container_exec_recording"}) == [
        "network ACLs (acls:) need the API extension network_acl",
        "files, packages or services inside containers need the API extension container_exec_recording"]


@pytest.mark.lxd
@pytest.mark.parametrize("socket", [INCUS_SOCKET, "/var/lib/lxd/unix.socket"])
def test_both_daemons_have_every_extension_a_lab_may_need(incus_ready, lxd_ready, socket):
    from reconciler.daemon import needs
    have = Lxd(socket).daemon.extensions
    assert {extension for _, extension, _ in needs()} <= have


class IncusGuide(IncusLab, Guide):
    """The repository's lab.yaml with test_guide_lab's override (its own LAN and ports), on Incus."""

    lan_host, http_port = "10.203.152.1", 18962  # no other test uses them


@contextmanager
def incus_guide(tmp_path: Path, no_dirs) -> Iterator[IncusGuide]:
    """The guide's lab directory on an Incus project of its own, with its own LAN; the Debian image in
    Incus first. Nothing of it is left afterwards."""
    for script, env in (("image-debian.sh", {}), ("incus-up.sh", {"INCUS_IMAGES": "reconciler-debian"})):
        done = sh("bash", str(ROOT / "scripts" / script), env={**os.environ, **env}, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    tag = new_incus_project()
    # Not rx-prefixed: another run's conftest clears rx*v0 veths whose LXD project it does not see.
    parent, peer = f"ig{tag[len(INCUS_PREFIX):]}v0", f"ig{tag[len(INCUS_PREFIX):]}v1"
    sh("bash", str(ROOT / "scripts" / "lan-up.sh"), parent, peer)
    no_dirs.setenv("INCUS_DIR", str(Path(INCUS_SOCKET).parent))
    try:
        yield IncusGuide(tmp_path, tag, parent, peer)
    finally:
        drop_incus_project(tag)
        sh("ip", "link", "delete", parent, check=False)


@pytest.mark.lxd
def test_the_guides_lab_comes_up_on_incus_drifts_and_is_repaired(incus_ready, tmp_path, no_dirs):
    """The guide's lab from nothing on Incus (Debian containers, apache2, HAProxy, a macvlan LAN), the
    same lab.yaml as on LXD: applied, checked by HTTP, its HAProxy configuration edited by hand and put
    back, destroyed."""
    with incus_guide(tmp_path, no_dirs) as guide:
        applied = guide.apply()
        assert applied.out.startswith("Daemon: Incus 6."), applied.out[:300]
        checked = guide.run("check")
        assert checked.code == 0 and "check passed" in checked.out, checked.out + checked.err
        guide.lxc("exec", "proxyha", "--", "sed", "-i", "s/roundrobin/leastconn/", "/etc/haproxy/haproxy.cfg")
        drift = guide.run("plan")
        assert "-    balance leastconn\n" in drift.out and "~> service.proxyha:haproxy will be reloaded" in drift.out
        guide.apply()
        again = guide.run("plan", "--detailed-exitcode")
        assert again.code == 0, again.out + again.err
        assert guide.run("check").code == 0
        gone = guide.run("destroy", "--yes")
        assert gone.code == 0, gone.out + gone.err


@pytest.mark.lxd
@pytest.mark.daemon_exclusive  # alone, as the Incus half of every two-daemon test
@pytest.mark.parametrize("steps", [3, 12])
def test_a_killed_apply_of_the_guides_lab_converges_on_incus(incus_ready, tmp_path, no_dirs, steps):
    """Crash recovery on Incus as on LXD (tests/test_crash.py): the guide's lab from nothing, the apply
    SIGKILLed after its k-th step (an event read from its output, not a timer), then the next apply
    redoes nothing the killed run reported made; the plan after it is empty and `check` passes."""
    from test_crash import _created, _finished, _start_apply
    with incus_guide(tmp_path, no_dirs) as guide:
        apply = _start_apply(guide)
        assert apply.stdout is not None
        seen: list[str] = []
        for line in apply.stdout:  # bounded: the apply ends by itself
            seen.append(line)
            if len(_finished("".join(seen))) == steps:
                break
        os.killpg(apply.pid, signal.SIGKILL)
        out = "".join(seen) + apply.communicate(timeout=60)[0]
        assert "Apply complete" not in out and len(_finished(out)) >= steps, out
        assert out.startswith("Daemon: Incus 6."), out[:300]
        again = guide.run("apply", "--yes")
        assert again.code == 0, again.out + again.err
        redone = _created(out) & _created(again.out)
        assert not redone, f"made again what the killed run had made: {sorted(redone)}"
        assert guide.run("plan", "--detailed-exitcode").code == 0
        assert until(lambda: guide.run("check").code == 0, 60, step=2), guide.run("check").out
        assert sorted(i["name"] for i in json.loads(guide.lxc("list", "--format=json"))) == ["proxyha", "web1", "web2"]
        assert guide.run("destroy", "--yes").code == 0


def test_a_create_or_delete_is_tried_again_only_when_an_interface_of_the_host_vanished():
    from reconciler.errors import interface_vanished
    seen = ('Failed to delete bridge children interfaces: Failed to run: ip -d -j link show veth9acabc83: exit'
            ' status 1 (Device "veth9acabc83" does not exist.)')
    assert interface_vanished(LxdError(seen))
    # Seen in CI: the lab's other bridge, deleted at the same time, went between the listing and the look.
    raced = ('Failed to delete bridge children interfaces: Failed to run: ip -d -j link show rxi9fa051s: exit'
             ' status 1 (RTNETLINK answers: No such device\nCannot send link get request: No such device)')
    assert interface_vanished(LxdError(raced))
    assert not interface_vanished(LxdError('Network "lan" already exists'))
    assert not interface_vanished(LxdError("Failed to delete bridge children interfaces: permission denied"))


@pytest.mark.daemons("lxd", "incus")
def test_a_failed_create_is_made_again_only_when_nothing_was_made(lab):
    lxd = Lxd(lab.socket, lab.project)
    assert not lxd._may_exist("network", {"name": f"{lab.tag}n"}, "")
    lab.lxc("network", "create", f"{lab.tag}n", "ipv4.address=none", "ipv6.address=none")
    assert lxd._may_exist("network", {"name": f"{lab.tag}n"}, "")
    assert lxd._may_exist("forward", {"listen_address": "10.203.1.1"}, f"{lab.tag}n")  # nameless: never again


@pytest.mark.lxd
def test_a_lab_built_by_hand_on_lxd_moves_to_incus_by_import_then_apply(incus_ready, lab, tmp_path, monkeypatch):
    """docs/lab-yaml.md's move: `reconcile import` against LXD (the `lab` fixture's project), then the
    lab.yaml it wrote applied against Incus (only lxd.project changed, to an Incus project of its own):
    the same container and profile there, running, and the plan after it empty."""
    lab.lxc("profile", "create", "mv")
    lab.lxc("profile", "set", "mv", "user.note", "moved")
    lab.lxc("launch", "reconciler-tiny", "m1", "--profile", "default", "--profile", "mv", "-c", "limits.memory=64MiB")
    written = tmp_path / "imported.yaml"
    on_lxd = {**{k: v for k, v in os.environ.items() if k != "INCUS_DIR"}, "LXD_DIR": "/var/lib/lxd"}
    done = sh(str(ROOT / ".venv" / "bin" / "reconcile"), "import", "m1", "--project", lab.project, "-o", str(written),
              env=on_lxd, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert written.read_text().startswith(f"# Written by `reconcile import` from LXD project {lab.project!r} on")
    monkeypatch.delenv("LXD_DIR", raising=False)
    monkeypatch.setenv("INCUS_DIR", str(Path(INCUS_SOCKET).parent))
    tag = new_incus_project()
    try:
        moved = IncusLab(tmp_path, tag, tag)
        moved.write(written.read_text().replace(f"project: {lab.project}\n", f"project: {tag}\n", 1))
        applied = moved.run("apply", "--yes")
        assert applied.code == 0 and applied.out.startswith("Daemon: Incus 6."), applied.out + applied.err
        assert moved.run("plan", "--detailed-exitcode").code == 0
        there = moved.instance("m1")
        assert there["status"] == "Running" and there["profiles"] == ["default", "mv"], there
        assert there["config"]["limits.memory"] == "64MiB"
        assert moved.query(f"/1.0/profiles/mv?project={tag}")["config"]["user.note"] == "moved"
    finally:
        drop_incus_project(tag)

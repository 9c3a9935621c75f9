"""Incus (LXD's fork, Debian's incus 6.0 LTS) beside LXD: which daemon a lab talks to (lab.yaml's
socket, $LXD_DIR / $INCUS_DIR, the usual sockets of both, `lxd.daemon`), the plan saying which, and a
small lab's whole life on a real Incus (scripts/incus-up.sh starts it): planned, applied (a file
written inside through exec), served through a proxy device, drift shown and repaired, destroyed.
The same lab on LXD is tests/test_lxd_core.py's and tests/test_everyday.py's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import PREFIX, ROOT, RUN, RUN_KEY, LabDir, _alive, _counter, sh

from reconciler.daemon import Daemon
from reconciler.errors import LxdError, LxdUnreachable
from reconciler.lxd import SOCKETS, Lxd, candidate_sockets
from reconciler.plan import Plan, plan_from_json
from reconciler.render import plan_text

INCUS_SOCKET = "/var/lib/incus/unix.socket"
INCUS_PREFIX = f"{PREFIX}i"  # of every Incus test project and network: rxi<run><n>


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


def test_an_unknown_daemon_in_lab_yaml_is_refused_with_its_line(tmp_path, capsys):
    from reconciler.cli import main
    lab = tmp_path / "lab.yaml"
    lab.write_text("lab: x\nlxd:\n  daemon: docker\ncontainers: {}\n")
    assert main(["validate", "-f", str(lab)]) == 1
    said = capsys.readouterr()
    assert "lab.yaml:3" in said.err + said.out and "daemon" in said.err + said.out, said


# --- a real Incus ------------------------------------------------------------------------------------

def incus(*argv: str, check: bool = True) -> str:
    done = sh("incus", *argv, check=False)
    assert not check or done.returncode == 0, f"incus {' '.join(argv)}: exit {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def incus_ready(lxd_ready) -> None:
    """Incus running beside LXD, initialised, with LXD's tiny image (scripts/incus-up.sh); leftovers of
    earlier runs whose pytest is gone removed."""
    done = sh("bash", str(ROOT / "scripts" / "incus-up.sh"), check=False)
    assert done.returncode == 0, f"incus-up.sh failed:\n{done.stdout}\n{done.stderr}"
    for project in json.loads(incus("project", "list", "--format=json")):
        if project["name"].startswith(INCUS_PREFIX) and not _alive(project.get("config", {}).get(RUN_KEY)):
            drop_incus_project(project["name"])


def drop_incus_project(tag: str) -> None:
    for inst in json.loads(incus("list", "--project", tag, "--format=json")):
        incus("delete", "--force", "--project", tag, inst["name"], check=False)
    for prof in json.loads(incus("profile", "list", "--project", tag, "--format=json")):
        if prof["name"] != "default":
            incus("profile", "delete", "--project", tag, prof["name"], check=False)
    incus("project", "delete", tag, check=False)
    for net in json.loads(incus("network", "list", "--format=json")):
        if net["name"].startswith(tag) and net.get("managed"):
            incus("network", "delete", net["name"], check=False)


class IncusLab(LabDir):
    """A lab directory bound to an Incus project of its own; `lxc` here is Incus's client."""

    def lxc(self, *args: str, check: bool = True) -> str:
        return incus("--project", self.project, *args, check=check)

    def instance(self, name: str, part: str = "") -> dict:
        return json.loads(incus("query", f"/1.0/instances/{name}{part}?project={self.project}"))


@pytest.fixture
def incus_lab(incus_ready, tmp_path):
    tag = f"{INCUS_PREFIX}{RUN}{next(_counter):02d}"
    incus("project", "create", tag, "-c", "features.images=false", "-c", "features.profiles=true",
          "-c", f"{RUN_KEY}={os.getpid()}")
    incus("profile", "device", "add", "default", "root", "disk", "path=/", "pool=default", "--project", tag)
    yield IncusLab(tmp_path, tag, tag)
    drop_incus_project(tag)


@pytest.mark.lxd
def test_discovery_finds_lxd_first_and_incus_when_named(incus_ready, lxd_ready, no_dirs):
    assert Lxd(None).daemon.name == "lxd"  # both run here: LXD's sockets come first, as before
    assert Lxd(None, daemon="incus").daemon.name == "incus"
    no_dirs.setenv("INCUS_DIR", str(Path(INCUS_SOCKET).parent))
    assert Lxd(None).daemon.name == "incus"  # $INCUS_DIR alone (no $LXD_DIR) names the daemon
    with pytest.raises(LxdError, match=r"/var/lib/incus/unix\.socket is Incus 6\.\S+, not LXD: lab\.yaml says"
                                       r" lxd\.daemon: lxd"):
        Lxd(INCUS_SOCKET, daemon="lxd")

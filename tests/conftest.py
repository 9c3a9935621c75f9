"""The test harness: a real LXD daemon (installed, started and initialised if needed), a tiny
local image, and an LXD project per test so leftovers of earlier runs never matter. A test marked
`@pytest.mark.daemons("lxd", "incus")` runs once per daemon (its `lab` is an Incus project on Incus,
beside LXD); its Incus variant runs alone, after the parallel tests."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import io
import itertools
import json
import os
import re
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from xdist.scheduler import LoadFileScheduling

# Hypothesis: CI replays a fixed set (derandomized: the same examples on every run and machine, plus the
# explicit @example cases found earlier); `make fuzz` explores new ones and prints each failure as an
# @example to paste in (tests/fuzz.py).
settings.register_profile("ci", derandomize=True, database=None, print_blob=False, deadline=None)
settings.register_profile("fuzz", derandomize=False, database=None, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("RECONCILER_HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
RUN = secrets.token_hex(2)  # this run's mark in every global name (networks are not per project)
PREFIX = "rx"  # of every test project, network and veth pair
PREFIXES = ("rx", "rt")  # leftovers of earlier runs: rt was the prefix of an older harness
_counter = itertools.count(1)


# LXD test modules that share something global on the daemon (a subnet, a lab's network names, the
# cluster) run in one pytest-xdist worker, one after the other; every other module is a unit of its own
# (its module fixtures are set up once). `--dist loadgroup` schedules by these groups (SharedScheduling
# below: pytest-xdist's own loadgroup does not group under pytest 9).
SHARED = {
    "test_lxd_core": "core", "test_everyday": "core", "test_trust": "core", "test_exec": "core",
    "test_cluster_infra": "cluster", "test_cluster_lab": "cluster",
}


class SharedScheduling(LoadFileScheduling):
    """pytest-xdist's load-by-file, with the modules of one SHARED group as one unit."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return SHARED.get(Path(path).stem, path)


def pytest_xdist_make_scheduler(config, log):
    return SharedScheduling(config, log) if config.getoption("dist") == "loadgroup" else None


@pytest.hookimpl(trylast=True)  # after @pytest.mark.parametrize: ids end with the daemon, test[...-incus]
def pytest_generate_tests(metafunc):
    """A test (or module) marked `daemons("lxd", "incus")` runs its `lab` once per daemon; one marked
    `skip_on("incus", "why")` as well has its Incus variant skipped, saying why."""
    daemons = metafunc.definition.get_closest_marker("daemons")
    if daemons is None or "lab" not in metafunc.fixturenames:
        return
    skips = {mark.args[0]: mark.args[1] for mark in metafunc.definition.iter_markers("skip_on")}
    metafunc.parametrize("lab", [
        pytest.param(daemon, id=daemon, marks=[pytest.mark.skip(reason=f"{SKIPPED_ON}{daemon}: {skips[daemon]}")]
                     if daemon in skips else []) for daemon in daemons.args], indirect=True)


SKIPPED_ON = "not run on "  # the start of a daemon variant's skip reason, counted at the end of the run


def daemon_of(item) -> str:
    """The daemon a test's `lab` is on: lxd unless the test runs once per daemon."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("lab", "lxd") if callspec else "lxd"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if "lxd_ready" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lxd)
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)
        if daemon_of(item) == "incus":  # Incus's bridge set-up fails when an LXD test's interface vanishes
            item.add_marker(pytest.mark.daemon_exclusive)


def pytest_terminal_summary(terminalreporter):
    """How many daemon variants were skipped, and why: a test that cannot run on one daemon says so."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(SKIPPED_ON):
            reasons[reason] = reasons.get(reason, 0) + 1
    ran = {"incus" for reports in terminalreporter.stats.values() for report in reports
           if (getattr(report, "nodeid", "") or "").endswith(("[incus]", "-incus]"))}
    for daemon in sorted(ran | {reason[len(SKIPPED_ON):].split(":")[0] for reason in reasons}):
        mine = {reason.split(": ", 1)[1]: count for reason, count in reasons.items()
                if reason.startswith(f"{SKIPPED_ON}{daemon}:")}
        said = "; ".join(f"{why} ({count})" for why, count in sorted(mine.items()))
        terminalreporter.write_line(f"{sum(mine.values())} tests skipped on {daemon}" + (f": {said}" if said else ""))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under `make fuzz`, a falsifying example is printed as the @example line that replays it in CI."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and os.environ.get("RECONCILER_HYPOTHESIS_PROFILE") == "fuzz":
        found = as_example(report.longreprtext, item.name.split("[")[0])
        if found:
            report.sections.append(("Paste above the test to replay it in CI", found))


def as_example(text: str, test: str) -> str | None:
    """Hypothesis's report of a failure (`Failing test case: test(x=...)`, or `Falsifying example:` in
    older versions) as the `@example(x=...)` that replays it, fixtures left out."""
    found = re.search(rf"(?:Failing test case|Falsifying example): {re.escape(test)}\(\n(.*?)\n(?:E\s*)?\)",
                      text, flags=re.S)
    if not found:
        return None
    body = []
    for line in found.group(1).splitlines():
        argument = re.sub(r"^E?\s*", "", line).split("  # ")[0].rstrip()
        if argument and argument.split("=")[0] not in FIXTURE_ARGS:
            body.append("    " + argument)
    return "@example(\n" + "\n".join(body) + "\n)"


FIXTURE_ARGS = {"prop_lab", "tmp_path", "loader", "lab"}


MODULE_LOCKS = Path("/tmp/reconciler-test-locks")


@pytest.fixture(scope="module", autouse=True)
def one_run_per_group_from_the_start(request):
    """The group's lock before the module's own fixtures (a lab brought up once for the module), when
    the module's first test here needs LXD."""
    first = getattr(request, "_pyfuncitem", None)
    if first is not None and first.get_closest_marker("lxd"):
        request.getfixturevalue("group_lock")
    yield


@pytest.fixture(autouse=True)
def one_run_per_group(request):
    """An LXD test holds its group's lock (below) for the rest of its module; other tests take none, so
    the unit tests of a module that also has LXD tests run in any worker."""
    if request.node.get_closest_marker("lxd"):
        request.getfixturevalue("group_lock")
    yield


@pytest.fixture(scope="module")
def group_lock(request):
    """Two test runs on one daemon (two checkouts) never run the same LXD test module, or two modules
    that share something global (SHARED), at once: their fixed subnets and global names would clash.
    The second waits for the lock (an event both can see), never for a time."""
    MODULE_LOCKS.mkdir(exist_ok=True)
    module = request.module.__name__
    with open(MODULE_LOCKS / f"{SHARED.get(module, module)}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def sh(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, text=True, capture_output=True, **kwargs)


@pytest.fixture(scope="session")
def lxd_ready() -> None:
    """A running, initialised LXD with the tiny image; leftovers of earlier runs removed."""
    for script in ("lxd-up.sh", "image-tiny.sh"):
        done = sh("bash", str(ROOT / "scripts" / script), check=False)
        assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    remove_leftovers()
    yield
    remove_leftovers(only_run=RUN)


RUN_KEY = "user.reconciler-test.pid"  # on each test project: the pytest process it belongs to


def _another_pytest() -> bool:
    found = sh("pgrep", "-f", "-a", "pytest", check=False).stdout.splitlines()
    return any(int(line.split()[0]) not in (os.getpid(), os.getppid()) for line in found if line.strip())


def remove_leftovers(only_run: str | None = None) -> None:
    """Delete test projects and test networks (named rt*) of earlier runs, or of this one; never
    those of a test run still going on (another pytest on the same daemon)."""
    prefix = f"{PREFIX}{only_run}" if only_run else PREFIXES
    projects = json.loads(sh("lxc", "project", "list", "--format=json").stdout)
    alive = {p["name"] for p in projects if p["name"].startswith(PREFIXES) and _alive(p.get("config", {}).get(RUN_KEY))
             and not (only_run and p["name"].startswith(prefix))}
    for project in projects:
        if project["name"].startswith(prefix) and project["name"] not in alive:
            delete_project(project["name"])
    for net in json.loads(sh("lxc", "network", "list", "--format=json").stdout):
        if net["name"].startswith(prefix) and net.get("managed") and not net["name"].startswith(tuple(alive) or ("-",)):
            sh("lxc", "network", "delete", net["name"], check=False)
    delete_acls(prefix, spare=tuple(alive))  # a run still going on keeps its ACLs, as its networks
    _stop_orphan_dnsmasq(prefix)
    _stop_orphan_forkproxies()
    for link in json.loads(sh("ip", "-j", "link", "show", "type", "veth").stdout or "[]"):
        if (link["ifname"].startswith(prefix) and link["ifname"].endswith("v0")  # a test LAN's veth pair
                and not link["ifname"].startswith(tuple(alive) or ("-",))):
            sh("ip", "link", "delete", link["ifname"], check=False)


def _in_our_pid_namespace(pid: str) -> bool:
    """pgrep on the host also lists the processes of the cluster's members (system containers, each with
    its own LXD), whose PIDs and interfaces are their own: judged from the host, a member's forkproxy
    looked orphaned, and killing it closed the member's proxy device (tests/test_cluster_lab.py saw the
    requests through lxdm3's address refused while another test session started)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    except OSError:  # gone meanwhile
        return False


def _stop_orphan_dnsmasq(prefix: str | tuple[str, ...]) -> None:
    """A test bridge's dnsmasq that outlived its bridge (its LXD was killed meanwhile) keeps the bridge's
    address bound, and the next bridge on that subnet cannot start its own: stop it."""
    for line in sh("pgrep", "-a", "dnsmasq", check=False).stdout.splitlines():
        pid, _, command = line.partition(" ")
        if not _in_our_pid_namespace(pid):
            continue
        interface = next((arg.split("=", 1)[1] for arg in command.split() if arg.startswith("--interface=")), "")
        if interface.startswith(prefix) and sh("ip", "link", "show", interface, check=False).returncode != 0:
            sh("kill", pid, check=False)


def _stop_orphan_forkproxies() -> None:
    """A proxy device's `lxd forkproxy` whose container is gone (its LXD was killed meanwhile) still holds
    the listening port, and the next lab with that port cannot start: stop it. Its arguments are
    `-- LXD_PID FD LISTEN CONTAINER_PID FD CONNECT ...`."""
    for line in sh("pgrep", "-a", "-f", "lxd forkproxy", check=False).stdout.splitlines():
        pid, *args = line.split()
        if _in_our_pid_namespace(pid) and "--" in args and len(args) > args.index("--") + 4:
            container = args[args.index("--") + 4]
            if container.isdigit() and not Path(f"/proc/{container}").exists():
                sh("kill", pid, check=False)


def _alive(pid: str | None) -> bool:
    if not pid or not pid.isdigit():
        return _another_pytest()  # unmarked (an older harness): spare it while another run may own it
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False


def delete_project(name: str) -> None:
    for inst in json.loads(sh("lxc", "list", "--project", name, "--format=json").stdout):
        sh("lxc", "delete", "--force", "--project", name, inst["name"], check=False)
    for prof in json.loads(sh("lxc", "profile", "list", "--project", name, "--format=json").stdout):
        if prof["name"] != "default":
            sh("lxc", "profile", "delete", "--project", name, prof["name"], check=False)
    sh("lxc", "project", "delete", name, check=False)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, such as LXD's."""

    def __init__(self, path: str):
        super().__init__("lxd", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


@dataclass
class Result:
    code: int
    out: str
    err: str


class LabDir:
    """A lab.yaml in a temporary directory, bound to this test's own LXD project."""

    daemon, client = "lxd", "lxc"  # the daemon, and the command line client that talks to it

    @property
    def socket(self) -> str:
        return os.path.join(os.environ.get("LXD_DIR", "/var/lib/lxd"), "unix.socket")

    def __init__(self, path: Path, project: str, tag: str):
        self.dir, self.project, self.tag = path, project, tag
        self.file = path / "lab.yaml"

    def write(self, text: str) -> Path:
        self.file.write_text(text.replace("@PROJECT@", self.project).replace("@TAG@", self.tag))
        return self.file

    def run(self, *args: str) -> Result:
        """The CLI in this process (fast), stdout and stderr captured."""
        from reconciler.cli import main
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args) + ["-f", str(self.file)])
        return Result(code, out.getvalue(), err.getvalue())

    def lxc(self, *args: str, check: bool = True) -> str:
        if args[:1] == ("exec",) and args[2:3] == ("--",):
            return self.exec_recorded(args[1], list(args[3:]), check=check)
        done = sh(self.client, "--project", self.project, *args, check=False)
        assert not check or done.returncode == 0, f"{self.client} {' '.join(args)}: exit {done.returncode}: {done.stderr}"
        return done.stdout

    def exec_recorded(self, container: str, argv: list[str], check: bool = True) -> str:
        """What `lxc exec CONTAINER -- ARGV` prints, read from the output LXD records. The CLI's stdout
        websocket can lose a short command's output (LXD 5.0 once gave '' for a `cat` in CI)."""
        body = {"command": argv, "record-output": True, "interactive": False, "wait-for-websocket": False}
        done = sh(self.client, "query", "-X", "POST", "--wait", "-d", json.dumps(body),
                  f"/1.0/instances/{container}/exec?project={self.project}", check=False)
        if done.returncode != 0:  # LXD fails the operation itself for exit codes 126 and 127
            assert not check, f"lxc exec {container} -- {' '.join(argv)}: {done.stderr}"
            return ""
        meta = json.loads(done.stdout)["metadata"]
        stdout, stderr = (self._recorded(meta["output"][fd]) for fd in ("1", "2"))
        assert not check or meta["return"] == 0, f"lxc exec {container} -- {' '.join(argv)}: exit {meta['return']}: {stderr}"
        return stdout

    def _recorded(self, log: str) -> str:
        """A recorded output, read straight from the daemon's socket (`lxc query` parses what it reads as
        JSON, and fails on an empty log or one that is a number)."""
        connection = UnixHTTPConnection(self.socket)
        connection.request("GET", f"{log}?project={self.project}")
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
        connection.close()
        assert response.status == 200, f"{log}: {response.status} {body}"
        return body

    def instance(self, name: str, part: str = "") -> dict:
        return self.query(f"/1.0/instances/{name}{part}?project={self.project}")

    def query(self, path: str):
        """GET PATH from this lab's daemon, as JSON."""
        return json.loads(sh(self.client, "query", path).stdout)


class IncusLab(LabDir):
    """A lab directory bound to an Incus project of its own; `lxc` here is Incus's client."""

    daemon, client = "incus", "incus"

    @property
    def socket(self) -> str:
        return INCUS_SOCKET


def new_project(tag: str) -> None:
    """An empty LXD project: profiles of its own (default with a root disk), images shared."""
    sh("lxc", "project", "create", tag, "-c", "features.images=false", "-c", "features.profiles=true",
       "-c", f"{RUN_KEY}={os.getpid()}")
    sh("lxc", "profile", "device", "add", "default", "root", "disk", "path=/", "pool=default",
       "--project", tag)


def drop_project(tag: str) -> None:
    """The project, and the networks and network ACLs (global in LXD) whose names start with its tag."""
    delete_project(tag)
    for net in json.loads(sh("lxc", "network", "list", "--format=json").stdout):
        if net["name"].startswith(tag):
            sh("lxc", "network", "delete", net["name"], check=False)
    delete_acls(tag)


def delete_acls(prefix: str | tuple[str, ...], spare: tuple[str, ...] = ()) -> None:
    """Network ACLs (global without features.networks, as networks are) named with a test's prefix,
    after the networks that use them; those of the `spare` projects' tags kept."""
    for acl in json.loads(sh("lxc", "network", "acl", "list", "--format=json").stdout or "[]"):
        if acl["name"].startswith(prefix) and not (spare and acl["name"].startswith(spare)):
            sh("lxc", "network", "acl", "delete", acl["name"], check=False)


def next_tag() -> str:
    return f"{PREFIX}{RUN}{next(_counter):02d}"


@pytest.fixture
def lab(request, lxd_ready, tmp_path) -> LabDir:
    """A lab directory bound to a project of its own for one test, deleted after: on LXD, or on Incus
    (the parameter of a test marked `daemons`), with the environment that points the reconciler there
    ($INCUS_DIR: the same lab.yaml reaches either).  Its environment is its own (not the test's
    `monkeypatch`, which would then be undone after this teardown: a test's $LXD_CONF pointing the client
    at another remote would still hold while the project is deleted)."""
    incus = getattr(request, "param", "lxd") == "incus"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LXD_DIR" if incus else "INCUS_DIR", raising=False)
        if incus:
            request.getfixturevalue("incus_ready")
            env.setenv("INCUS_DIR", os.path.dirname(INCUS_SOCKET))
            tag = new_incus_project()
            yield IncusLab(tmp_path, tag, tag)
            drop_incus_project(tag)
            return
        tag = next_tag()
        new_project(tag)
        yield LabDir(tmp_path, tag, tag)
        drop_project(tag)


# --- Incus, beside LXD --------------------------------------------------------------------------------

INCUS_SOCKET = "/var/lib/incus/unix.socket"
INCUS_PREFIX = f"{PREFIX}i"  # of every Incus test project and network: rxi<run><n>


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
    if not _another_pytest():  # a killed run's client certificate, trusted for its remote test
        for trusted in json.loads(incus("config", "trust", "list", "--format=json")):
            if trusted["name"].startswith(INCUS_PREFIX):
                incus("config", "trust", "remove", trusted["fingerprint"], check=False)


def until(condition, seconds: float, step: float = 1.0) -> bool:
    """Poll a condition, bounded in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def _delete_incus_network(name: str, deadline: float = 30) -> None:
    """Incus once refused to delete a test's bridge just after its containers were deleted, and the next
    test on the same subnet failed on it: tried again until it is gone, for a bounded time."""
    def gone() -> bool:
        return (sh("incus", "network", "delete", name, check=False).returncode == 0
                or sh("incus", "network", "show", name, check=False).returncode != 0)
    assert until(gone, deadline, step=0.5), f"incus network delete {name}: still there after {deadline}s"


def new_incus_project() -> str:
    """An empty Incus project (profiles of its own, default with a root disk; images shared): its tag."""
    tag = f"{INCUS_PREFIX}{RUN}{next(_counter):02d}"
    incus("project", "create", tag, "-c", "features.images=false", "-c", "features.profiles=true",
          "-c", f"{RUN_KEY}={os.getpid()}")
    incus("profile", "device", "add", "default", "root", "disk", "path=/", "pool=default", "--project", tag)
    return tag


def drop_incus_project(tag: str) -> None:
    """The Incus project, and the networks and network ACLs whose names start with its tag."""
    for inst in json.loads(incus("list", "--project", tag, "--format=json")):
        incus("delete", "--force", "--project", tag, inst["name"], check=False)
    for prof in json.loads(incus("profile", "list", "--project", tag, "--format=json")):
        if prof["name"] != "default":
            incus("profile", "delete", "--project", tag, prof["name"], check=False)
    incus("project", "delete", tag, check=False)
    for net in json.loads(incus("network", "list", "--format=json")):
        if net["name"].startswith(tag) and net.get("managed"):
            _delete_incus_network(net["name"])
    for acl in json.loads(incus("network", "acl", "list", "--format=json") or "[]"):
        if acl["name"].startswith(tag):
            incus("network", "acl", "delete", acl["name"], check=False)

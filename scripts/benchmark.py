"""Benchmark the reconciler against plain `lxc`/`incus`: local LXD, over HTTPS, a cluster, local Incus.

What it measures, for each place and each lab size N (tiny busybox containers):

* cold apply     - wall time of `reconcile apply --yes` creating and starting N containers in an
                   empty LXD project (a subprocess: interpreter start and imports included);
* no-op plan     - `reconcile plan` once the lab is applied: the LXD API calls it makes (from
                   RECONCILER_STATS=1) and its wall time, the median of 5 runs (process start included);
* lxc serial     - the same N containers made by a shell loop of `lxc launch` (`incus launch` on
                   Incus), one after another;
* lxc 4-parallel - the same with `xargs -P4`, four launches at a time (what apply's default
                   parallelism of 4 competes with).

The places (--where, default all four, measured in this order):

* local   - the local daemon through its unix socket; sizes 3, 20 and 100;
* remote  - the same daemon as the lxc remote `bench-https` on https://127.0.0.1:8443, set up by
            scripts/remote-local.sh (run first; idempotent) in its own lxc configuration, which
            LXD_CONF names to reconcile and lxc alike; sizes 3 and 20;
* cluster - the three-member cluster of `make cluster`, the lxc remote `labcluster` (default lxc
            configuration); LXD places the containers on its members. Skipped, with a note, when
            that remote does not exist. Sizes 3 and 20.
* incus   - the local Incus through its unix socket ($INCUS_DIR, /var/lib/incus or /run/incus; `make
            incus` starts one beside LXD), with the `incus` client; sizes 3, 20 and 100. Skipped,
            with a note, when there is no incus client or no Incus socket.

Each N gets its own LXD project `benchN` on that place (images from the default project, own
default profile with a root disk on pool `default`); every timed run starts from an empty project.
Leftover bench projects of earlier runs are deleted first, and all of them again at the end, also on
failure or Ctrl-C, on every daemon the run uses (the remote's through the local socket: it is the
same daemon). Needs root (or the lxd group), a running LXD and the `reconciler-tiny` image (`make
image-tiny`; `make cluster` copies it into the cluster). The results table and machine facts are
printed, and written into docs/performance.md between `<!-- bench:start -->` and `<!-- bench:end -->`
with a plot of plan and apply times against N (docs/performance.png; needs matplotlib, which `make
bench` installs into the venv). Each run's results are kept as data in docs/performance.json: the
places a run does not measure keep the rows of the last run that did, and say when that was.

Run:  make bench            (= .venv/bin/python scripts/benchmark.py)
      python3 scripts/benchmark.py --sizes 3 --where local,remote --no-doc   (every place at N=3, only print)
      python3 scripts/benchmark.py --cluster-sizes 3,20,50                    (other sizes on one place)
      python3 scripts/benchmark.py --where incus                              (only Incus; the others' rows kept)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
PLOT = DOC.with_suffix(".png")
DATA = DOC.with_suffix(".json")  # every place's rows, from the last run that measured it
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
IMAGE = "reconciler-tiny"
POOL = "default"
MARK = "user.reconciler-benchmark"  # set on every project this script creates; only those are deleted
PLAN_RUNS = 5
GOAL_PLAN_N, GOAL_PLAN_SECONDS, GOAL_RATIO = 100, 1.0, 1.25
TIMEOUT = 1800
PROBE_TIMEOUT = 30  # is a remote there at all
WHERE = ("local", "remote", "cluster", "incus")  # measured in this order
DEFAULT_SIZES = {"local": [3, 20, 100], "remote": [3, 20], "cluster": [3, 20], "incus": [3, 20, 100]}
HTTPS_REMOTE = "bench-https"  # scripts/remote-local.sh: the local daemon on https://127.0.0.1:8443
CLUSTER_REMOTE = "labcluster"  # scripts/cluster-up.sh
REMOTE_SETUP = ROOT / "scripts" / "remote-local.sh"
INCUS_DIRS = ("/var/lib/incus", "/run/incus")  # where Incus's socket usually is, after $INCUS_DIR


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


# --- processes ------------------------------------------------------------------------------

def run(argv: list[str], env: dict | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{shlex.join(argv)}` took longer than {timeout:.0f} s: stopped") from None
    if proc.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` exited {proc.returncode}:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def timed(argv: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = run(argv, env)
    return time.perf_counter() - start, proc


def reconcile_argv() -> list[str]:
    """The venv's `reconcile` entry point when run from a venv that has one, else `python -m`."""
    script = Path(sys.executable).parent / "reconcile"
    if sys.prefix != sys.base_prefix and script.exists():
        return [str(script)]
    return [sys.executable, "-m", "reconciler.cli"]


# --- places ---------------------------------------------------------------------------------

@dataclass
class Place:
    """Where containers are made: the local socket, or an lxc remote (with its lxc configuration), or
    the local Incus (its client `incus`, its socket's directory in INCUS_DIR)."""

    where: str  # local | remote | cluster | incus
    remote: str | None = None  # the lxc remote; None: the unix socket
    lxd_conf: str | None = None  # LXD_CONF for lxc and reconcile; None: the environment's
    sizes: list[int] = field(default_factory=list)
    facts: str = ""
    incus_dir: str | None = None  # set on Incus: INCUS_DIR for incus and reconcile, LXD_DIR unset

    @property
    def client(self) -> str:
        return "incus" if self.incus_dir else "lxc"

    @property
    def env(self) -> dict:
        if self.incus_dir:
            return {**{k: v for k, v in os.environ.items() if k != "LXD_DIR"}, "INCUS_DIR": self.incus_dir}
        return {**os.environ, "LXD_CONF": self.lxd_conf} if self.lxd_conf else dict(os.environ)

    def at(self, name: str) -> str:
        """An lxc object argument on this place: `remote:name`, or just the name locally."""
        return f"{self.remote}:{name}" if self.remote else name

    def cli(self, *args: str, timeout: float = TIMEOUT) -> str:
        """The place's client (`lxc` or `incus`) with these arguments: its stdout."""
        return run([self.client, *args], self.env, timeout).stdout

    def query(self, path: str, timeout: float = TIMEOUT):
        return json.loads(self.cli("query", self.at(path), timeout=timeout))


LOCAL = Place("local")


def clean_up_place(place: Place) -> Place:
    """The place whose daemon holds `place`'s projects, reached the surest way: the remote
    `bench-https` is the local daemon, so its projects are deleted through the socket."""
    return LOCAL if place.where == "remote" else place


def https_place(sizes: list[int]) -> Place:
    """scripts/remote-local.sh (idempotent) sets up `bench-https`; it prints its lxc configuration."""
    say(f"remote: {REMOTE_SETUP.relative_to(ROOT)}")
    proc = run(["bash", str(REMOTE_SETUP)], timeout=300)
    for line in proc.stderr.strip().splitlines():
        say(f"  {line}")
    lines = proc.stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_dir():
        raise BenchError(f"{REMOTE_SETUP.name} printed no lxc configuration directory:\n{proc.stdout}")
    place = Place("remote", HTTPS_REMOTE, lines[-1], sizes)
    place.query("/1.0", timeout=PROBE_TIMEOUT)
    return place


def cluster_place(sizes: list[int]) -> Place | None:
    """The remote `labcluster` of `make cluster`, or None (and a note) when there is none."""
    names = [line.split(",", 1)[0].removesuffix(" (current)") for line in
             LOCAL.cli("remote", "list", "--format", "csv").splitlines()]
    if CLUSTER_REMOTE not in names:
        say(f"cluster rows skipped: run `make cluster` (no lxc remote {CLUSTER_REMOTE!r})")
        return None
    place = Place("cluster", CLUSTER_REMOTE, None, sizes)
    try:
        place.query("/1.0", timeout=PROBE_TIMEOUT)
    except BenchError as err:
        raise BenchError(f"the cluster (lxc remote {CLUSTER_REMOTE}) does not answer: `make cluster` brings it"
                         f" up\n{err}") from None
    return place


def incus_place(sizes: list[int]) -> Place | None:
    """The local Incus through its socket, or None (and a note) when there is no client or socket."""
    if not shutil.which("incus"):
        say("incus rows skipped: no incus client (`make incus` installs Incus beside LXD)")
        return None
    dirs = [os.environ["INCUS_DIR"]] if os.environ.get("INCUS_DIR") else list(INCUS_DIRS)
    found = next((d for d in dirs if Path(d, "unix.socket").is_socket()), None)
    if found is None:
        say(f"incus rows skipped: no Incus socket ({', '.join(d + '/unix.socket' for d in dirs)}; `make incus`"
            " starts one)")
        return None
    place = Place("incus", sizes=sizes, incus_dir=found)
    try:
        place.query("/1.0", timeout=PROBE_TIMEOUT)
    except BenchError as err:
        raise BenchError(f"Incus ({found}/unix.socket) does not answer: `make incus` starts it\n{err}") from None
    return place


def members(place: Place) -> list[str]:
    """Cluster members' names, or [] when the place is no cluster."""
    if not place.query("/1.0/cluster").get("enabled"):
        return []
    return sorted(m["server_name"] for m in place.query("/1.0/cluster/members?recursion=1"))


def describe(place: Place) -> str:
    """One line of facts about the place, read while it is there."""
    server = place.query("/1.0")
    driver = place.query(f"/1.0/storage-pools/{POOL}")["driver"]
    if place.where == "local":
        return f"LXD {lxd_version()} (`lxd --version`) on the unix socket; pool `{POOL}`, driver `{driver}`"
    if place.where == "incus":
        return (f"Incus {server['environment']['server_version']} on the unix socket {place.incus_dir}/unix.socket,"
                f" client `incus`; pool `{POOL}`, driver `{driver}`")
    url = next((addr for addr in server["environment"].get("addresses", []) if addr), "")
    if place.where == "remote":
        return (f"the same daemon over HTTPS, lxc remote `{place.remote}` (https://{url}, its own lxc"
                f" configuration, scripts/remote-local.sh); pool `{POOL}`, driver `{driver}`")
    names = members(place)
    version = server["environment"]["server_version"]
    return (f"LXD {version} on {len(names)} members ({', '.join(names)}: system containers on this machine,"
            f" `make cluster`), lxc remote `{place.remote}` (https://{url}); pool `{POOL}`, driver `{driver}`"
            " on each member")


def lxd_version() -> str:
    return run(["lxd", "--version"]).stdout.strip()


# --- LXD projects ---------------------------------------------------------------------------

def project_name(n: int) -> str:
    return f"bench{n}"


def bench_projects(place: Place) -> list[str]:
    """Projects an earlier run of this script left behind (they carry MARK)."""
    return [p["name"] for p in place.query("/1.0/projects?recursion=1") if MARK in p.get("config", {})]


def project_exists(place: Place, name: str) -> bool:
    return any(p.rsplit("/", 1)[-1] == name for p in place.query("/1.0/projects"))


def instances(place: Place, project: str) -> list[str]:
    return [url.rsplit("/", 1)[-1].split("?")[0] for url in place.query(f"/1.0/instances?project={project}")]


def running_count(place: Place, project: str) -> int:
    return sum(i["status"] == "Running" for i in place.query(f"/1.0/instances?project={project}&recursion=1"))


def empty_project(place: Place, project: str, attempts: int = 5) -> None:
    """Force-delete every instance, eight `lxc delete` at a time; retry what an interrupted run left busy."""
    cmd = f"xargs -r -P8 -n10 {place.client} delete --force --project {shlex.quote(project)}"
    for attempt in range(attempts):
        names = instances(place, project)
        if not names:
            return
        proc = subprocess.run(["bash", "-c", cmd], input="\n".join(place.at(n) for n in names), text=True,
                              capture_output=True, timeout=TIMEOUT, env=place.env)
        if proc.returncode == 0:
            return
        time.sleep(1 + attempt)
    raise BenchError(f"could not empty project {project} ({place.where}): {proc.stderr.strip()}")


def drop_project(place: Place, project: str) -> None:
    """Its instances, then its profiles but `default` (apply leaves its empty lock profile,
    reconciler-lock-LAB, in the lab's project), then the project itself."""
    empty_project(place, project)
    for url in place.query(f"/1.0/profiles?project={project}"):
        profile = url.rsplit("/", 1)[-1].split("?")[0]
        if profile != "default":
            place.cli("profile", "delete", place.at(profile), "--project", project)
    place.cli("project", "delete", place.at(project))


def make_project(place: Place, project: str) -> None:
    if project_exists(place, project):
        raise BenchError(f"project {project!r} ({place.where}) exists and was not made by this script:"
                         " delete it by hand or pick other sizes")
    place.cli("project", "create", place.at(project), "-c", "features.images=false", "-c",
              "features.profiles=true", "-c", f"{MARK}=true")
    place.cli("profile", "device", "add", place.at("default"), "root", "disk", "path=/", f"pool={POOL}",
              "--project", project)


def cleanup(place: Place, quiet: bool = False) -> bool:
    """Delete every project this script made on the place's daemon; False if one could not be deleted
    (it says which)."""
    clean = True
    try:
        projects = bench_projects(place)
    except BenchError as err:
        print(f"clean-up ({place.where}): cannot list projects: {err}", file=sys.stderr)
        return False
    for project in projects:
        if not quiet:
            print(f"deleting leftover bench project {project} ({place.where})", file=sys.stderr)
        try:
            drop_project(place, project)
        except BenchError as err:
            print(f"clean-up ({place.where}): {err}", file=sys.stderr)
            clean = False
    return clean


# --- the measurements -----------------------------------------------------------------------

def container_names(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"b{i:0{width}d}" for i in range(n)]


def write_lab(directory: Path, place: Place, project: str, names: list[str]) -> Path:
    lxd = f"{{project: {project}, remote: {place.remote}}}" if place.remote else f"{{project: {project}}}"
    if place.incus_dir:
        lxd = f"{{project: {project}, daemon: incus}}"
    lines = [f"lab: {project}", f"lxd: {lxd}", "containers:"]
    lines += [f"  {name}: {{image: {IMAGE}, profiles: [default]}}" for name in names]
    path = directory / f"{place.where}-{project}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def expect_running(place: Place, project: str, n: int, what: str) -> None:
    found = running_count(place, project)
    if found != n:
        raise BenchError(f"{what}: {found} of {n} containers running in project {project} ({place.where})")


def lxc_loop(place: Place, project: str, names: list[str], parallel: int) -> float:
    """Wall time of a shell loop of `lxc launch` (`incus launch`), serial or `parallel` at a time, from empty."""
    launch = f"{place.client} launch {shlex.quote(place.at(IMAGE))} --project {shlex.quote(project)}"
    prefix = f"{place.remote}:" if place.remote else ""
    if parallel == 1:
        script = f"set -e; for i in {' '.join(names)}; do {launch} {prefix}$i; done"
    else:
        script = f"printf '%s\\n' {' '.join(names)} | xargs -P{parallel} -I{{}} {launch} {prefix}{{}}"
    seconds, _ = timed(["bash", "-c", script], place.env)
    expect_running(place, project, len(names), f"lxc loop -P{parallel}")
    empty_project(place, project)
    return seconds


def warm_up(place: Place, project: str) -> None:
    """One launch and delete first (one on each member of a cluster: each has its own image store),
    so the first timed run does not pay for cold caches."""
    on = members(place) if place.where == "cluster" else []
    for member in on or [None]:
        target = ["--target", member] if member else []
        place.cli("launch", place.at(IMAGE), place.at(f"warmup-{member}" if member else "warmup"),
                  "--project", project, *target)
    empty_project(place, project)


def cold_apply(place: Place, lab: Path, project: str, n: int) -> float:
    seconds, _ = timed([*reconcile_argv(), "apply", "-f", str(lab), "--yes"], place.env)
    expect_running(place, project, n, "reconcile apply")
    return seconds


def noop_plan(place: Place, lab: Path) -> tuple[int, float, list[float]]:
    """API calls and median wall time of `reconcile plan` on an applied lab (exit 0: no changes)."""
    env = {**place.env, "RECONCILER_STATS": "1"}
    times, calls = [], set()
    for _ in range(PLAN_RUNS):
        seconds, proc = timed([*reconcile_argv(), "plan", "-f", str(lab), "--detailed-exitcode"], env)
        found = re.findall(r"lxd api calls: (\d+)", proc.stderr)
        if not found:
            raise BenchError(f"no 'lxd api calls' line in plan's stderr:\n{proc.stderr}")
        calls.add(int(found[-1]))
        times.append(seconds)
    if len(calls) != 1:
        raise BenchError(f"no-op plan made a different number of API calls on each run: {sorted(calls)}")
    return calls.pop(), statistics.median(times), times


def bench_size(place: Place, n: int, directory: Path) -> dict:
    """All measurements for one N in its own project (main's clean-up deletes it if this fails)."""
    project = project_name(n)
    names = container_names(n)
    lab = write_lab(directory, place, project, names)
    make_project(place, project)
    warm_up(place, project)
    row = {"where": place.where, "n": n}
    step = f"{place.where} N={n}"
    say(f"{step}: {place.client} serial")
    row["serial"] = lxc_loop(place, project, names, 1)
    say(f"{step}: {place.client} 4-parallel")
    row["parallel4"] = lxc_loop(place, project, names, 4)
    say(f"{step}: reconcile apply")
    row["apply"] = cold_apply(place, lab, project, n)
    say(f"{step}: reconcile plan x{PLAN_RUNS}")
    row["calls"], row["plan"], row["plan_runs"] = noop_plan(place, lab)
    row["ratio"] = row["apply"] / row["parallel4"]
    drop_project(place, project)
    return row


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- reporting ------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    lines = ["| where | N | plan API calls | no-op plan (s) | cold apply (s) | lxc/incus serial (s) |"
             " lxc/incus 4-parallel (s) | apply / 4-parallel ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['where']} | {r['n']} | {r['calls']} | {r['plan']:.2f} | {r['apply']:.2f} |"
                     f" {r['serial']:.2f} | {r['parallel4']:.2f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def by_place(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["where"], []).append(r)
    return out


def goals(rows: list[dict]) -> list[str]:
    places = by_place(rows)
    calls = "; ".join(f"{where}: " + ", ".join(f"{r['calls']} at N={r['n']}" for r in rs)
                      for where, rs in places.items())
    varying = [where for where, rs in places.items() if len({r["calls"] for r in rs}) > 1]
    verdict = f"MISSED on {', '.join(varying)}" if varying else "met"
    out = [f"- Plan API calls independent of N (on each place): **{verdict}** ({calls})."]
    big = [r for r in rows if r["n"] == GOAL_PLAN_N]
    goal = f"No-op plan of {GOAL_PLAN_N} containers under {GOAL_PLAN_SECONDS:.0f} s (process start included)"
    if not big:
        out.append(f"- {goal}: not measured in this run.")
    else:
        slow = [r["where"] for r in big if r["plan"] >= GOAL_PLAN_SECONDS]
        verdict = f"MISSED on {', '.join(slow)}" if slow else "met"
        medians = ", ".join(f"{r['plan']:.2f} s {r['where']}" for r in big)
        out.append(f"- {goal}: **{verdict}** ({medians}, medians).")
    missed = ", ".join(f"{r['where']} N={r['n']}" for r in rows if r["ratio"] > GOAL_RATIO)
    ratios = "; ".join(f"{where}: " + ", ".join(f"{r['ratio']:.2f}x at N={r['n']}" for r in rs)
                       for where, rs in places.items())
    verdict = f"MISSED at {missed}" if missed else "met"
    out.append(f"- Cold apply within {GOAL_RATIO}x of the four-at-a-time lxc (incus) loop: **{verdict}** ({ratios}).")
    return out


def this_run(rows: list[dict], places: list[Place], argv: list[str], load_before: float, when: str) -> dict:
    """One run's results as data (docs/performance.json keeps them)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    how = shlex.join([Path(reconcile_argv()[0]).name, *reconcile_argv()[1:]])
    return {"when": when, "command": shlex.join(argv), "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "nproc": f"{len(os.sched_getaffinity(0))} ({cpu})",
            "system": f"kernel {platform.release()}, Python {platform.python_version()}; reconcile run as `{how}`",
            "places": {place.where: place.facts for place in places if any(r["where"] == place.where for r in rows)},
            "rows": rows}


def earlier_runs(path: Path) -> list[dict]:
    """The runs docs/performance.json holds, newest first ([] when there is none)."""
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["runs"]
    except (ValueError, KeyError, TypeError) as err:
        raise BenchError(f"{path.relative_to(ROOT)} is not the benchmark's results ({err}): fix or delete it") from None


def merged(run: dict, earlier: list[dict]) -> list[dict]:
    """This run first, then what earlier runs measured on the places this one did not (each place's rows
    from the last run that measured it)."""
    runs, covered = [run], set(run["places"])
    for old in earlier:
        kept = {where: facts for where, facts in old["places"].items() if where not in covered}
        if kept:
            runs.append({**old, "places": kept, "rows": [r for r in old["rows"] if r["where"] in kept]})
        covered |= set(kept)
    return runs


def all_rows(runs: list[dict]) -> list[dict]:
    """Every run's rows, by place (WHERE's order), then N."""
    return sorted((r for run in runs for r in run["rows"]), key=lambda r: (WHERE.index(r["where"]), r["n"]))


def provenance(runs: list[dict]) -> str:
    """When and how the rows were measured: one run, or this run and the ones whose rows are kept."""
    first, *kept = runs
    text = f"Measured {first['when']} with `{first['command']}`"
    for run in kept:
        text += f"; the {', '.join(run['places'])} rows kept from {run['when']} (`{run['command']}`)"
    return text + ":"


def machine_facts(runs: list[dict]) -> list[str]:
    places = {where: facts for run in reversed(runs) for where, facts in run["places"].items()}
    lines = [f"- nproc: {runs[0]['nproc']}", *(f"- {where}: {places[where]}" for where in WHERE if where in places)]
    for run in runs:
        label = f"{run['when']} ({', '.join(run['places'])}): " if len(runs) > 1 else ""
        lines.append(f"- {label}{run['system']}; load average (1 min) {run['load'][0]:.2f} before the run,"
                     f" {run['load'][1]:.2f} after it (other work on the machine skews the times)")
    return lines


def report(runs: list[dict], image: str | None) -> str:
    rows = all_rows(runs)
    plans = "; ".join(f"{r['where']} N={r['n']}: " + ", ".join(f"{t:.2f}" for t in r["plan_runs"]) for r in rows)
    picture = [f"![No-op plan and cold apply time against N, one line per place]({image})", ""] if image else []
    return "\n".join([provenance(runs), "", table(rows), "", *picture, "Goals:", "", *goals(rows), "", "Machine:", "",
                      *machine_facts(runs), "", f"No-op plan runs (s): {plans}."])


PLOT_STYLE = {"local": "tab:blue", "remote": "tab:orange", "cluster": "tab:green", "incus": "tab:red"}


def plot_ready() -> None:
    """matplotlib is there (checked before minutes of measuring, not after)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchError("matplotlib is missing, and the plot needs it: `make bench` installs it into the venv"
                         f" ({Path(sys.executable).parent / 'pip'} install matplotlib), or pass --no-doc") from None


def client_of(where: str) -> str:
    return "incus" if where == "incus" else "lxc"


def plot(rows: list[dict], path: Path, when: str) -> None:
    """No-op plan and cold apply time against N (log scale), one line per place; the lxc 4-parallel
    loop dashed beside cold apply, as the ratio goal compares them."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    sizes = sorted({r["n"] for r in rows})
    fig, axes = pyplot.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for ax, key, title in ((axes[0], "plan", f"no-op plan (median of {PLAN_RUNS})"),
                           (axes[1], "apply", "cold apply")):
        for where, rs in by_place(rows).items():
            ns = [r["n"] for r in rs]
            ax.plot(ns, [r[key] for r in rs], marker="o", color=PLOT_STYLE[where], label=where)
            if key == "apply":
                ax.plot(ns, [r["parallel4"] for r in rs], marker=".", linestyle="--", linewidth=1,
                        color=PLOT_STYLE[where], alpha=0.6, label=f"{where}: {client_of(where)} 4-parallel")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("N (containers, log scale)")
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"reconcile against LXD and Incus, by place ({when}; scripts/benchmark.py)", fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(fig)


def write_data(runs: list[dict]) -> None:
    DATA.write_text(json.dumps({"runs": runs}, indent=1) + "\n")


def write_doc(text: str) -> None:
    block = f"{START}\n{text}\n{END}"
    doc = DOC.read_text() if DOC.exists() else ""
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        doc = (doc or "# Performance\n\nWritten by `make bench` (scripts/benchmark.py).\n") + f"\n{block}\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(doc)


# --- main -----------------------------------------------------------------------------------

def sizes_list(parser: argparse.ArgumentParser, flag: str, text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        parser.error(f"{flag} must be integers separated by commas, not {text!r}")
    if not sizes or min(sizes) < 1:
        parser.error(f"{flag} needs at least one size, each 1 or more")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--where", default=",".join(WHERE),
                        help="comma-separated places: local, remote (the local daemon over HTTPS, lxc remote"
                             f" {HTTPS_REMOTE}), cluster (lxc remote {CLUSTER_REMOTE}), incus (the local Incus);"
                             " default all four")
    parser.add_argument("--sizes", help="comma-separated lab sizes for every place (default 3,20,100 local and"
                                         " incus, 3,20 remote and cluster)")
    parser.add_argument("--remote-sizes", help="lab sizes over HTTPS (default --sizes, else 3,20)")
    parser.add_argument("--cluster-sizes", help="lab sizes on the cluster (default --sizes, else 3,20)")
    parser.add_argument("--incus-sizes", help="lab sizes on Incus (default --sizes, else 3,20,100)")
    parser.add_argument("--no-doc", action="store_true",
                        help="print only; leave docs/performance.md, .json and .png alone")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="also write the plot here (with --no-doc: only here)")
    args = parser.parse_args(argv)
    where = [w.strip() for w in args.where.split(",") if w.strip()]
    unknown = sorted(set(where) - set(WHERE))
    if unknown or not where:
        parser.error(f"--where takes {', '.join(WHERE)} (comma-separated), not {args.where!r}")
    args.where = [w for w in WHERE if w in where]
    every = sizes_list(parser, "--sizes", args.sizes)
    args.sizes = {"local": every or DEFAULT_SIZES["local"],
                  "remote": sizes_list(parser, "--remote-sizes", args.remote_sizes) or every or DEFAULT_SIZES["remote"],
                  "cluster": (sizes_list(parser, "--cluster-sizes", args.cluster_sizes) or every
                              or DEFAULT_SIZES["cluster"]),
                  "incus": sizes_list(parser, "--incus-sizes", args.incus_sizes) or every or DEFAULT_SIZES["incus"]}
    return args


def preflight(place: Place) -> None:
    if IMAGE not in [a["name"] for a in place.query("/1.0/images/aliases?recursion=1")]:
        fix = {"cluster": "`make cluster` copies it in", "incus": "`make incus` copies it in"}.get(
            place.where, "run `make image-tiny`")
        raise BenchError(f"image alias {IMAGE!r} missing on {place.where}: {fix}")


def open_place(where: str, sizes: list[int]) -> Place | None:
    if where == "local":
        return Place("local", sizes=sizes)
    if where == "remote":
        return https_place(sizes)
    if where == "incus":
        return incus_place(sizes)
    return cluster_place(sizes)


def measure(args: argparse.Namespace, places: list[Place], rows: list[dict]) -> None:
    """Rows into `rows` as they are measured; `places` gets each place once it is there (main cleans
    up on those)."""
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        for where in args.where:
            place = open_place(where, args.sizes[where])
            if place is None:
                continue
            places.append(place)
            preflight(place)
            if not cleanup(clean_up_place(place)):
                raise BenchError(f"leftover bench projects ({place.where}) could not be deleted")
            place.facts = describe(place)
            rows += [bench_size(place, n, Path(tmp)) for n in place.sizes]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the clean-up too
    load_before = os.getloadavg()[0]
    places: list[Place] = []
    rows: list[dict] = []
    try:
        if not args.no_doc or args.plot:
            plot_ready()
        measure(args, places, rows)
    except BenchError as err:
        say(f"benchmark failed: {err}")
        if rows:
            say(f"measured before it failed:\n{table(rows)}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        daemons = {clean_up_place(p).where: clean_up_place(p) for p in places}
        if not all([cleanup(p, quiet=True) for p in daemons.values()]):
            say("some bench projects are left over (see above): the next run deletes them")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not rows:
        say("nothing measured")
        return 1
    run = this_run(rows, places, ["scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])],
                   load_before, when)
    try:
        runs = [run] if args.no_doc else merged(run, earlier_runs(DATA))
    except BenchError as err:
        say(f"benchmark failed: {err}\nmeasured:\n{table(rows)}")
        return 1
    if args.plot:
        plot(all_rows(runs), args.plot, when)
        say(f"plot written to {args.plot}")
    text = report(runs, None if args.no_doc else PLOT.name)
    print(text)
    if not args.no_doc:
        plot(all_rows(runs), PLOT, when)
        write_doc(text)
        write_data(runs)
        say(f"\nwritten to {DOC.relative_to(ROOT)}, {DATA.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

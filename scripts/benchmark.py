"""Benchmark the reconciler against plain `lxc` on the local LXD daemon.

What it measures, for each lab size N (default 3, 20 and 100 tiny busybox containers):

* cold apply     - wall time of `reconcile apply --yes` creating and starting N containers in an
                   empty LXD project (a subprocess: interpreter start and imports included);
* no-op plan     - `reconcile plan` once the lab is applied: the LXD API calls it makes (from
                   RECONCILER_STATS=1) and its wall time, the median of 5 runs (process start included);
* lxc serial     - the same N containers made by a shell loop of `lxc launch`, one after another;
* lxc 4-parallel - the same with `xargs -P4`, four `lxc launch` at a time (what apply's default
                   parallelism of 4 competes with).

Each N gets its own LXD project `benchN` (images from the default project, own default profile
with a root disk on pool `default`); every timed run starts from an empty project. Leftover bench
projects of earlier runs are deleted first, and all of them again at the end, also on failure or
Ctrl-C. Needs root (or the lxd group), a running LXD and the `reconciler-tiny` image
(`make image-tiny`). The results table and machine facts are printed and written into
docs/performance.md between `<!-- bench:start -->` and `<!-- bench:end -->`.

Run:  make bench            (= .venv/bin/python scripts/benchmark.py)
      python3 scripts/benchmark.py --sizes 3,20      (fewer or other sizes; --no-doc to only print)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
IMAGE = "reconciler-tiny"
POOL = "default"
MARK = "user.reconciler-benchmark"  # set on every project this script creates; only those are deleted
PLAN_RUNS = 5
GOAL_PLAN_N, GOAL_PLAN_SECONDS, GOAL_RATIO = 100, 1.0, 1.25
TIMEOUT = 1800


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


# --- processes ------------------------------------------------------------------------------

def run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` exited {proc.returncode}:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def timed(argv: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = run(argv, env)
    return time.perf_counter() - start, proc


def lxc(*args: str) -> str:
    return run(["lxc", *args]).stdout


def query(path: str):
    return json.loads(lxc("query", path))


def reconcile_argv() -> list[str]:
    """The venv's `reconcile` entry point when run from a venv that has one, else `python -m`."""
    script = Path(sys.executable).parent / "reconcile"
    if sys.prefix != sys.base_prefix and script.exists():
        return [str(script)]
    return [sys.executable, "-m", "reconciler.cli"]


# --- LXD projects ---------------------------------------------------------------------------

def project_name(n: int) -> str:
    return f"bench{n}"


def bench_projects() -> list[str]:
    """Projects an earlier run of this script left behind (they carry MARK)."""
    return [p["name"] for p in query("/1.0/projects?recursion=1") if MARK in p.get("config", {})]


def project_exists(name: str) -> bool:
    return any(p.rsplit("/", 1)[-1] == name for p in query("/1.0/projects"))


def instances(project: str) -> list[str]:
    return [url.rsplit("/", 1)[-1].split("?")[0] for url in query(f"/1.0/instances?project={project}")]


def running_count(project: str) -> int:
    return sum(i["status"] == "Running" for i in query(f"/1.0/instances?project={project}&recursion=1"))


def empty_project(project: str, attempts: int = 5) -> None:
    """Force-delete every instance, eight `lxc delete` at a time; retry what an interrupted run left busy."""
    cmd = f"xargs -r -P8 -n10 lxc delete --force --project {shlex.quote(project)}"
    for attempt in range(attempts):
        names = instances(project)
        if not names:
            return
        proc = subprocess.run(["bash", "-c", cmd], input="\n".join(names), text=True, capture_output=True,
                              timeout=TIMEOUT)
        if proc.returncode == 0:
            return
        time.sleep(1 + attempt)
    raise BenchError(f"could not empty project {project}: {proc.stderr.strip()}")


def drop_project(project: str) -> None:
    empty_project(project)
    lxc("project", "delete", project)


def make_project(project: str) -> None:
    if project_exists(project):
        raise BenchError(f"LXD project {project!r} exists and was not made by this script: delete it"
                         " by hand or pick other --sizes")
    lxc("project", "create", project, "-c", "features.images=false", "-c", "features.profiles=true",
        "-c", f"{MARK}=true")
    lxc("profile", "device", "add", "default", "root", "disk", "path=/", f"pool={POOL}", "--project", project)


def cleanup(quiet: bool = False) -> bool:
    """Delete every project this script made; False if one could not be deleted (it says which)."""
    clean = True
    for project in bench_projects():
        if not quiet:
            print(f"deleting leftover bench project {project}", file=sys.stderr)
        try:
            drop_project(project)
        except BenchError as err:
            print(f"clean-up: {err}", file=sys.stderr)
            clean = False
    return clean


# --- the measurements -----------------------------------------------------------------------

def container_names(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"b{i:0{width}d}" for i in range(n)]


def write_lab(directory: Path, project: str, names: list[str]) -> Path:
    lines = [f"lab: {project}", f"lxd: {{project: {project}}}", "containers:"]
    lines += [f"  {name}: {{image: {IMAGE}, profiles: [default]}}" for name in names]
    path = directory / f"{project}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def expect_running(project: str, n: int, what: str) -> None:
    found = running_count(project)
    if found != n:
        raise BenchError(f"{what}: {found} of {n} containers running in project {project}")


def lxc_loop(project: str, names: list[str], parallel: int) -> float:
    """Wall time of a shell loop of `lxc launch`, serial or `parallel` at a time, from empty."""
    launch = f"lxc launch {IMAGE} --project {shlex.quote(project)}"
    if parallel == 1:
        script = f"set -e; for i in {' '.join(names)}; do {launch} $i; done"
    else:
        script = f"printf '%s\\n' {' '.join(names)} | xargs -P{parallel} -I{{}} {launch} {{}}"
    seconds, _ = timed(["bash", "-c", script])
    expect_running(project, len(names), f"lxc loop -P{parallel}")
    empty_project(project)
    return seconds


def warm_up(project: str) -> None:
    """One launch and delete first, so the first timed run does not pay for cold caches."""
    lxc("launch", IMAGE, "warmup", "--project", project)
    empty_project(project)


def cold_apply(lab: Path, project: str, n: int) -> float:
    seconds, _ = timed([*reconcile_argv(), "apply", "-f", str(lab), "--yes"])
    expect_running(project, n, "reconcile apply")
    return seconds


def noop_plan(lab: Path) -> tuple[int, float, list[float]]:
    """API calls and median wall time of `reconcile plan` on an applied lab (exit 0: no changes)."""
    env = {**os.environ, "RECONCILER_STATS": "1"}
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


def bench_size(n: int, directory: Path) -> dict:
    """All measurements for one N in its own project (main's clean-up deletes it if this fails)."""
    project = project_name(n)
    names = container_names(n)
    lab = write_lab(directory, project, names)
    make_project(project)
    warm_up(project)
    row = {"n": n}
    say(f"N={n}: lxc serial")
    row["serial"] = lxc_loop(project, names, 1)
    say(f"N={n}: lxc 4-parallel")
    row["parallel4"] = lxc_loop(project, names, 4)
    say(f"N={n}: reconcile apply")
    row["apply"] = cold_apply(lab, project, n)
    say(f"N={n}: reconcile plan x{PLAN_RUNS}")
    row["calls"], row["plan"], row["plan_runs"] = noop_plan(lab)
    row["ratio"] = row["apply"] / row["parallel4"]
    drop_project(project)
    return row


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- reporting ------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    lines = ["| N | plan API calls | no-op plan (s) | cold apply (s) | lxc serial (s) | lxc 4-parallel (s) |"
             " apply / lxc-4 ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['calls']} | {r['plan']:.2f} | {r['apply']:.2f} | {r['serial']:.2f} |"
                     f" {r['parallel4']:.2f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[str]:
    calls = ", ".join(f"{r['calls']} at N={r['n']}" for r in rows)
    same = len({r["calls"] for r in rows}) == 1
    out = [f"- Plan API calls independent of N: **{'met' if same else 'MISSED'}** ({calls})."]
    big = next((r for r in rows if r["n"] == GOAL_PLAN_N), None)
    goal = f"No-op plan of {GOAL_PLAN_N} containers under {GOAL_PLAN_SECONDS:.0f} s (process start included)"
    if big is None:
        out.append(f"- {goal}: not measured in this run.")
    else:
        verdict = "met" if big["plan"] < GOAL_PLAN_SECONDS else "MISSED"
        out.append(f"- {goal}: **{verdict}** ({big['plan']:.2f} s median).")
    missed = ", ".join(str(r["n"]) for r in rows if r["ratio"] > GOAL_RATIO)
    ratios = ", ".join(f"{r['ratio']:.2f}x at N={r['n']}" for r in rows)
    verdict = f"MISSED at N={missed}" if missed else "met"
    out.append(f"- Cold apply within {GOAL_RATIO}x of the four-at-a-time lxc loop: **{verdict}** ({ratios}).")
    return out


def machine_facts(load_before: float) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    driver = query(f"/1.0/storage-pools/{POOL}")["driver"]
    how = shlex.join([Path(reconcile_argv()[0]).name, *reconcile_argv()[1:]])
    return [f"- nproc: {len(os.sched_getaffinity(0))} ({cpu})",
            f"- LXD: {lxc_version()} (`lxd --version`); storage pool `{POOL}`, driver `{driver}`",
            f"- kernel {platform.release()}, Python {platform.python_version()}; reconcile run as `{how}`",
            f"- load average (1 min) {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after it"
            " (other work on the machine skews the times)"]


def lxc_version() -> str:
    return run(["lxd", "--version"]).stdout.strip()


def report(rows: list[dict], argv: list[str], load_before: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs = "; ".join(f"N={r['n']}: " + ", ".join(f"{t:.2f}" for t in r["plan_runs"]) for r in rows)
    return "\n".join([f"Measured {when} with `{shlex.join(argv)}`:", "", table(rows), "",
                      "Goals:", "", *goals(rows), "", "Machine:", "", *machine_facts(load_before), "",
                      f"No-op plan runs (s): {runs}."])


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

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="3,20,100", help="comma-separated lab sizes (default 3,20,100)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas, not {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes needs at least one size, each 1 or more")
    return args


def preflight() -> None:
    if IMAGE not in [a["name"] for a in query("/1.0/images/aliases?recursion=1")]:
        raise BenchError(f"image alias {IMAGE!r} missing: run `make image-tiny`")


def measure(sizes: list[int]) -> list[dict]:
    preflight()
    if not cleanup():
        raise BenchError("leftover bench projects could not be deleted")
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        return [bench_size(n, Path(tmp)) for n in sizes]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the clean-up too
    load_before = os.getloadavg()[0]
    try:
        rows = measure(args.sizes)
    except BenchError as err:
        say(f"benchmark failed: {err}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if not cleanup(quiet=True):
            say("some bench projects are left over (see above): the next run deletes them")
    text = report(rows, ["scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])], load_before)
    print(text)
    if not args.no_doc:
        write_doc(text)
        say(f"\nwritten to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

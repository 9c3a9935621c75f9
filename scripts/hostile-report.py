"""Run the hostile-input corpus (tests/test_hostile_loader.py) and report how each class ended.

For every case: `reconcile validate -f FILE` in a child limited to 1 GiB of address space and
10 s, checked as the test checks it (exit 1, no traceback, only FILE:LINE:COL lines, the
expected fragment).  Printed: per class the number of cases, how many ended as they must, the
worst wall time and the worst maximum RSS; then the worst case overall, and any failures.

Also measured: loading a good lab file right at the 4 MiB cap (as many values as the node
budget allows, the rest a long string) with the parser in use, in a child as well.

Run:  .venv/bin/python scripts/hostile-report.py            (add -v to list every case)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_hostile_loader as corpus

CAP_PROBE = r"""
import resource, sys, time
from pathlib import Path
from reconciler import source
from reconciler.spec import load_lab
path = Path(sys.argv[1])
start = time.perf_counter()
doc = source.load_document(path, {})
loaded = time.perf_counter() - start
start = time.perf_counter()
load_lab(path, {})
validated = time.perf_counter() - start
print(f"{path.stat().st_size} bytes, parser {source.PARSER.__name__}: load_document {loaded:.2f} s,"
      f" load_lab (with validation) {validated:.2f} s,"
      f" max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
"""


def cap_file(path: Path) -> None:
    """A valid lab of exactly MAX_BYTES: small pairs up to 95% of the node budget, then padding."""
    pairs = int(corpus.MAX_NODES * 0.95) // 2
    head = corpus.LAB + "x-many:\n" + "".join(f"  k{i:06d}: {'v' * 24}\n" for i in range(pairs))
    pad = corpus.MAX_BYTES - len(head) - len('x-pad: ""\n')
    path.write_text(head + 'x-pad: "' + "p" * pad + '"\n')
    assert path.stat().st_size == corpus.MAX_BYTES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per case")
    args = parser.parse_args()

    by_class: dict[str, list[tuple[corpus.Case, corpus.Outcome, list[str]]]] = defaultdict(list)
    started = time.monotonic()
    for item in corpus.CASES:
        with tempfile.TemporaryDirectory(prefix="hostile-") as directory:
            outcome = corpus.run_case(item, Path(directory))
        wrong = corpus.failures(item, outcome)
        by_class[item.klass].append((item, outcome, wrong))
        if args.verbose:
            print(f"{'ok  ' if not wrong else 'FAIL'} {item.klass:10} {item.case_id:40} {outcome.seconds:6.2f} s"
                  f" {outcome.cpu_seconds or 0:6.2f} s CPU {outcome.max_rss_kib / 1024:7.1f} MiB")

    print(f"{'class':14} {'cases':>5} {'ok':>4} {'worst wall':>11} {'worst CPU':>10} {'worst max RSS':>14}")
    everything = []
    for klass, runs in by_class.items():
        everything += runs
        ok = sum(1 for _, _, wrong in runs if not wrong)
        print(f"{klass:14} {len(runs):5} {ok:4} {max(o.seconds for _, o, _ in runs):9.2f} s"
              f" {max(o.cpu_seconds or 0 for _, o, _ in runs):8.2f} s"
              f" {max(o.max_rss_kib for _, o, _ in runs) / 1024:10.1f} MiB")
    ok = sum(1 for _, _, wrong in everything if not wrong)
    print(f"{'all':14} {len(everything):5} {ok:4}   (corpus ran in {time.monotonic() - started:.1f} s)")
    slowest = max(everything, key=lambda run: run[1].seconds)
    largest = max(everything, key=lambda run: run[1].max_rss_kib)
    print(f"slowest case: {slowest[0].case_id} ({slowest[0].klass}) {slowest[1].seconds:.2f} s wall,"
          f" {slowest[1].cpu_seconds or 0:.2f} s CPU")
    print(f"largest case: {largest[0].case_id} ({largest[0].klass}) {largest[1].max_rss_kib / 1024:.1f} MiB max RSS")
    for item, outcome, wrong in everything:
        if wrong:
            print(f"FAILED {item.case_id}: {wrong}\n  {outcome.stderr[:500]!r}")

    with tempfile.TemporaryDirectory(prefix="hostile-cap-") as directory:
        path = Path(directory) / "lab.yaml"
        cap_file(path)
        probe = subprocess.run([sys.executable, "-c", CAP_PROBE, str(path)], capture_output=True, text=True,
                               check=False)
        print("a good file at the cap:", probe.stdout.strip() or probe.stderr.strip()[-2000:])
    return 0 if ok == len(everything) and probe.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

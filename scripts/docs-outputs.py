"""Write the command outputs in docs/tutorial.md from a real run of the guide's lab.

Brings the repository's lab.yaml up from nothing (`reconcile destroy --yes` first), runs the
tutorial's steps (tests/docs_scenario.py) and replaces each `<!-- output: NAME -->` block with
what the commands printed.  tests/test_guide_lab.py runs the same steps and fails when the
documented outputs no longer match.  Needs what `make lab` needs: run `make docs-outputs`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from docs_scenario import TUTORIAL, rewritten, run_scenario  # noqa: E402

RECONCILE = str(ROOT / ".venv" / "bin" / "reconcile")


def reconcile(argv: list[str]) -> str:
    done = subprocess.run([RECONCILE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"reconcile {' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr}")
    return done.stdout


def shell(command: str) -> None:
    subprocess.run(command, shell=True, cwd=ROOT, check=True, timeout=120)


def serving() -> None:
    deadline = time.monotonic() + 60
    while subprocess.run([RECONCILE, "check"], cwd=ROOT, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            sys.exit("the lab does not pass `reconcile check` after 60 s")
        time.sleep(2)


def main() -> None:
    subprocess.run([RECONCILE, "destroy", "--yes"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    outputs = run_scenario(reconcile, shell, serving)
    TUTORIAL.write_text(rewritten(TUTORIAL.read_text(), outputs))
    print(f"wrote {len(outputs)} blocks into {TUTORIAL.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

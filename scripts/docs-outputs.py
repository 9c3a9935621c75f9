"""Write the command outputs shown in README.md and docs/*.md from real runs.

Brings the repository's lab.yaml up from nothing (`reconcile destroy --yes` first), runs the guide's
steps (tests/docs_scenario.py: GUIDE) and the steps that need no LXD (OFFLINE, in a scratch folder
holding a copy of lab.yaml), and replaces each `<!-- output: NAME -->` block with what the commands
printed.  Each step must end with the exit code the docs give it, or nothing is written.
`--offline` writes only the outputs that need no LXD.
tests/test_guide_lab.py and tests/test_docs_agree.py run the same steps and fail when the documented
outputs no longer match.  Needs what `make lab` needs: run `make docs-outputs` (and `reconcile destroy
--yes` afterwards: the lab is left up).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from docs_scenario import DOCS, GUIDE, OFFLINE, Step, rewritten, run_scenario, wrong_exit_codes  # noqa: E402

RECONCILE = str(ROOT / ".venv" / "bin" / "reconcile")


def runner(cwd: Path):
    def reconcile(argv: list[str]) -> tuple[int, str]:
        done = subprocess.run([RECONCILE, *argv], cwd=cwd, capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout + done.stderr
    return reconcile


def shell(cwd: Path):
    def run(command: str) -> None:
        subprocess.run(command, shell=True, cwd=cwd, check=True, timeout=120)
    return run


def serving() -> None:
    deadline = time.monotonic() + 60
    while subprocess.run([RECONCILE, "check"], cwd=ROOT, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            sys.exit("the lab does not pass `reconcile check` after 60 s")
        time.sleep(2)


def main(offline_only: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(ROOT / "lab.yaml", scratch)
        ran = run_scenario(OFFLINE, runner(Path(scratch)), shell(Path(scratch)))
    steps: tuple[Step, ...] = OFFLINE
    if not offline_only:
        subprocess.run([RECONCILE, "destroy", "--yes"], cwd=ROOT, check=True, capture_output=True, timeout=600)
        ran |= run_scenario(GUIDE, runner(ROOT), shell(ROOT), serving)
        steps += GUIDE
    wrong = wrong_exit_codes(steps, ran)
    if wrong:
        sys.exit("docs-outputs: nothing written; " + "\n".join(wrong))
    outputs = {name: r.text for name, r in ran.items()}
    for doc in DOCS:
        doc.write_text(rewritten(doc.read_text(), outputs, steps))
    shown = [s.name for s in steps if s.doc]
    print(f"wrote {len(shown)} blocks into {', '.join(str(d.relative_to(ROOT)) for d in DOCS)}")


if __name__ == "__main__":
    main(offline_only=sys.argv[1:] == ["--offline"])  # --offline: only the outputs that need no LXD

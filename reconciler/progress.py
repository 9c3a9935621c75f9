"""Progress people can follow on long work: apply's steps and the image build's debootstrap stages.

On a terminal, a live status line (rich) says what runs now, how much is done of how much, and the
time elapsed, while finished steps scroll above it as before; NO_COLOR (non-empty) keeps it
colourless.  Anywhere else (CI logs, pipes) the plain lines are exactly what they always were: one
per finished step.  rich is imported only on a terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .render import progress_line, safe

if TYPE_CHECKING:
    from .plan import Plan


Callback = Callable[[str, Any, Any, Any], None]


@contextlib.contextmanager
def apply_progress(plan: Plan, colour: bool, stream: TextIO | None = None) -> Iterator[Callback]:
    """The callback apply reports each step's start and end to, live on a terminal."""
    stream = stream or sys.stdout
    if not stream.isatty():
        def plain(event: str, step: Any, change: Any, outcome: Any) -> None:
            if event == "end":
                print(progress_line(event, outcome, str(step.address), step.action, colour), file=stream, flush=True)
        yield plain
        return
    total = sum(len(c.actions) for c in plan.changes)
    with _live(stream, "Applying", total) as (progress, task, console):
        from rich.text import Text
        running: dict[Any, float] = {}

        def live(event: str, step: Any, change: Any, outcome: Any) -> None:
            if event == "start":
                running[step] = time.monotonic()
            else:
                running.pop(step, None)
                console.print(Text.from_ansi(progress_line(event, outcome, str(step.address), step.action, colour)))
                progress.advance(task)
            progress.update(task, description=_running_text(running))

        yield live


def _running_text(running: dict[Any, float]) -> str:
    if not running:
        return "Applying"
    now = time.monotonic()
    shown = [f"{safe(str(step.address))} ({step.action.word}, {now - start:.0f}s)" for step, start in
             sorted(running.items(), key=lambda kv: kv[1])[:3]]
    more = f" +{len(running) - 3}" if len(running) > 3 else ""
    return "Running " + ", ".join(shown) + more


@contextlib.contextmanager
def _live(stream: TextIO, what: str, total: int | None) -> Iterator[tuple[Any, Any, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    console = Console(file=stream, no_color=bool(os.environ.get("NO_COLOR")) or None, highlight=False)
    columns = [SpinnerColumn(), TimeElapsedColumn(), BarColumn(bar_width=20), MofNCompleteColumn(),
               TextColumn("{task.description}", markup=False)]
    with Progress(*columns, console=console, transient=True, refresh_per_second=4) as progress:
        yield progress, progress.add_task(what, total=total), console


# --- The image build -------------------------------------------------------------------------------

STAGES = ("Retrieving", "Extracting", "Unpacking", "Configuring")


def debootstrap(lines: TextIO, stream: TextIO) -> None:
    """debootstrap's output as a live display: the stage (of four), packages done in it (of how many,
    once Retrieving has counted them), the package now, time elapsed; warnings and errors kept."""
    from rich.text import Text
    packages = 0
    with _live(stream, "debootstrap: resolving", None) as (progress, task, console):
        stage, count, started = "", 0, time.monotonic()
        for line in lines:
            word, _, rest = line.removeprefix("I: ").partition(" ")
            if line.startswith(("W: ", "E: ")):
                console.print(Text("  " + line.rstrip()))
                continue
            if not line.startswith("I: ") or word not in STAGES:
                continue
            if word != stage:
                if stage:
                    console.print(Text(f"  {stage:<11} {count:4d}  ({time.monotonic() - started:.0f}s)"))
                packages = max(packages, count if stage == "Retrieving" else 0)
                stage, count, started = word, 0, time.monotonic()
                progress.reset(task, total=packages or None)
            count += 1
            progress.update(task, completed=count, description=f"debootstrap stage {STAGES.index(word) + 1}/4:"
                            f" {word.lower()} {rest.strip().split(' ')[0]}")
        if stage:
            console.print(Text(f"  {stage:<11} {count:4d}  ({time.monotonic() - started:.0f}s)"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["debootstrap"]:
        debootstrap(sys.stdin, sys.stdout)
        return 0
    print("usage: python -m reconciler.progress debootstrap < debootstrap's output", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Plans and apply reports as text for people (colour on a terminal) and JSON for programs.

Everything printed passes through `safe`: a control character from a file, a name or LXD's
own messages is shown escaped, never sent to the terminal.
"""

from __future__ import annotations

import difflib
import json
import os
import unicodedata
from typing import Any, TextIO

from .kinds import data_lost
from .kinds.file import UNKNOWN
from .outcome import Outcome, Report, Status
from .plan import SECRET, SECRET_CHANGED, Action, Change, Code, Origin, Plan, Step, redact
from .source import field_path

COLOURS = {Action.ADOPT: "35", Action.CREATE: "32", Action.UPDATE: "33", Action.REPLACE: "35", Action.DELETE: "31",
           Action.RENAME: "35", Action.MOVE: "35", Action.START: "36", Action.STOP: "36", Action.RESTART: "36",
           Action.RELOAD: "36", Action.CONVERGE: "34"}
REDACTED = "(sensitive: not shown)"
MAX_DIFF_LINES = 80


def use_colour(stream: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR is set to something (no-color.org) or TERM=dumb."""
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def safe(text: str, keep_newlines: bool = False) -> str:
    """`text` with every control and format character escaped (\\x1b, \\u2028, ...)."""
    out = []
    for ch in text:
        if (ch == "\n" and keep_newlines) or ch == "\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


class Painter:
    def __init__(self, colour: bool):
        self.colour = colour

    def __call__(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text


def plan_text(plan: Plan, colour: bool = False, lab_file: str = "lab.yaml", destroy: bool = False) -> str:
    paint = Painter(colour)
    head = f"Daemon: {safe(str(plan.daemon))}\n" if plan.daemon else ""
    notes = "".join(f"Warning: {safe(w)}\n" for w in plan.warnings) + "".join(f"Note: {safe(n)}\n" for n in plan.notes)
    if plan.empty and destroy:
        return head + notes + f"Nothing to destroy: lab {plan.lab!r} owns nothing in LXD.\n"
    if plan.empty:
        return head + notes + f"No changes. Lab {plan.lab!r} matches {safe(lab_file)}.\n"
    blocks = [_change_text(c, paint, lab_file, plan) for c in plan.changes]
    return head + "\n".join(blocks) + "\n" + notes + summary_line(plan, paint) + "\n"


def summary_line(plan: Plan, paint: Painter | None = None) -> str:
    paint = paint or Painter(False)
    counts = plan.summary()
    parts = [f"{n} to {word}" for word, n in counts.items() if n]
    if plan.unchanged:  # what needs nothing is collapsed into its count
        parts.append(f"and {plan.unchanged} unchanged")
    return paint("1", "Plan: " + ", ".join(parts) + ".") + f" (fingerprint {plan.fingerprint()})"


def _change_text(change: Change, paint: Painter, lab_file: str, plan: Plan) -> str:
    lines = []
    for i, action in enumerate(change.actions):
        reason = change.reasons[i].text
        # Escaped before it is painted: the colour's own codes must reach the terminal intact.
        head = paint(COLOURS[action], safe(f"{action.symbol:>3} {change.address}"))
        tag = _origin_tag(change, action) if i == 0 else ""
        cost = f" [cost: {plan.cost(change)}]" if i == len(change.actions) - 1 else ""
        lines.append(f"{head} {action.phrase}" + safe((f" ({reason})" if reason else "") + tag + cost))
        drains = plan.drains.get(Step(change.address, action), ())
        if drains:
            lines.append(safe(f"      drains {', '.join(map(str, drains))} first"))
        live = plan.runtime.get(Step(change.address, action), ())
        if live:
            lines.append(safe(f"      through HAProxy's runtime API, no reload: {', '.join(map(str, live))}"))
        if i == 0:
            lines += _details(change, action, paint, lab_file)
    return "\n".join(lines)


def _origin_tag(change: Change, action: Action) -> str:
    if change.reasons[0].code == Code.DESTROY:  # nobody moved: the lab goes
        return ""
    if change.origin in (Origin.OUTSIDE, Origin.BOTH) or (
            change.origin == Origin.LAB and action in (Action.UPDATE, Action.REPLACE, Action.START, Action.STOP)):
        return f" [{change.origin.phrase}]"
    return ""


def _details(change: Change, action: Action, paint: Painter, lab_file: str) -> list[str]:
    after = redact(change.after, change.secret) or {}
    lines = []
    if action in (Action.CREATE, Action.CONVERGE) and change.after:
        lines += [safe(f"      {k}: {_short(v)}") for k, v in _flat(after) if k != "content"]
        lines += _content_lines(None, after.get("content"), paint, after, lab_file)
    if action == Action.DELETE and (change.before or {}).get("state") == "running":
        renamed = change.reasons[0].code == Code.NOT_IN_LAB  # gone from lab.yaml: perhaps only renamed there
        lines.append(paint("31;1", "      it is RUNNING: its root filesystem is lost" + (
            ". If it was renamed in lab.yaml, declare renamed_from on the new name instead" if renamed else "")))
    lost = data_lost(change, action)
    if lost:
        lines.append(paint("31;1", f"      {lost}"))
    for field in change.diff:
        if field.path == "content":
            lines += _content_lines(field.before, after.get("content"), paint, after, lab_file)
        elif field.path == "sha256" and change.secret:
            lines.append(f"      content: {SECRET_CHANGED}")
        elif field.path != "sha256":
            lines.append(safe(f"      {field.path}: {_short(field.before)} -> {_short(field.after)}"))
    return lines


def _flat(body: dict, prefix: tuple = ()) -> list[tuple[str, Any]]:
    out = []
    for key, value in body.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out += _flat(value, path)
        elif value not in ({}, [], "", None) and key != "sha256":
            out.append((field_path(path), value))
    return out


def _content_lines(before: Any, after: Any, paint: Painter, body: dict, lab_file: str) -> list[str]:
    if after == SECRET:
        return [f"      content: {SECRET}"]
    if after is None and body.get("sha256"):
        return [f"      content: {REDACTED}"] if body.get("type") == "file" else []
    if not isinstance(after, str):
        return []
    if after == UNKNOWN:
        return [f"      content: {UNKNOWN}"]
    before_lines = before.splitlines() if isinstance(before, str) and before != UNKNOWN else []
    lines = list(difflib.unified_diff(before_lines, after.splitlines(), "live", lab_file, lineterm="", n=2))
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... {len(lines) - MAX_DIFF_LINES} more diff lines"]
    return [f"      {_diff_colour(safe(line), paint)}" for line in lines]


def _diff_colour(line: str, paint: Painter) -> str:
    if line.startswith("+") and not line.startswith("+++"):
        return paint("32", line)
    if line.startswith("-") and not line.startswith("---"):
        return paint("31", line)
    return line


def _short(value: Any) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def plan_json(plan: Plan) -> str:
    """One entry per address, secrets redacted (content and digest alike)."""
    return json.dumps(plan.as_json(), indent=2) + "\n"


# --- Apply progress and report -----------------------------------------------------------------

PAST = {Action.ADOPT: "adopted", Action.CREATE: "created", Action.UPDATE: "updated", Action.REPLACE: "replaced",
        Action.DELETE: "deleted", Action.RENAME: "renamed", Action.MOVE: "moved", Action.START: "started", Action.STOP: "stopped",
        Action.RESTART: "restarted", Action.RELOAD: "reloaded", Action.CONVERGE: "converged"}


def progress_line(event: str, outcome: Outcome | None, step_text: str, action: Action, colour: bool) -> str:
    paint = Painter(colour)
    step_text = safe(step_text)
    if event == "start" or outcome is None:
        return f"{step_text}: {action.word} ..."
    if outcome.status == Status.DONE:
        return paint("32", f"{step_text}: {PAST[action]}") + f" [{outcome.seconds:.1f}s]"
    if outcome.status == Status.UNCHANGED:
        return f"{step_text}: already as lab.yaml says [{outcome.seconds:.1f}s]"
    return paint("31", f"{step_text}: {action.word} FAILED") + f" [{outcome.seconds:.1f}s]"


def report_text(report: Report, colour: bool = False, verb: str = "Apply") -> str:
    paint = Painter(colour)
    done, unchanged = report.with_status(Status.DONE), report.with_status(Status.UNCHANGED)
    failed, skipped, waiting = (report.with_status(s) for s in (Status.FAILED, Status.SKIPPED, Status.NOT_STARTED))
    lines = []
    for o in failed:
        lines.append(paint("31", safe(f"Error: {o.step.address} ({o.step.action.word}): ")) + safe(o.message, True))
    for o in skipped:
        lines.append(safe(f"Skipped: {o.step.address} ({o.step.action.word}): {o.message}"))
    for o in waiting:
        lines.append(safe(f"Not started: {o.step.address} ({o.step.action.word})"))
    lines += [safe(f"Warning: {w}") for w in report.warnings]
    if report.interrupted:
        verdict = f"{verb} interrupted."
    else:
        verdict = f"{verb} complete!" if report.ok else f"{verb} failed."
    counts = f"{len(done)} done, " + (f"{len(unchanged)} unchanged, " if unchanged else "")
    counts += f"{len(failed)} failed, {len(skipped)} skipped" + (f", {len(waiting)} not started" if waiting else "")
    lines.append(paint("1", f"{verdict} {counts}."))
    if not report.ok:
        lines.append(f"What was done stays done; fix the cause and run {verb.lower()} again to finish.")
    return "\n".join(lines) + "\n"

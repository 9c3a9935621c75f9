"""Plans and apply reports as text for people (colour on a terminal) and JSON for programs."""

from __future__ import annotations

import difflib
import json
import os
from typing import TYPE_CHECKING, Any, TextIO

from .desired import UNKNOWN
from .plan import Action, Change, Plan

if TYPE_CHECKING:  # apply is only needed when applying: plan starts faster without it
    from .apply import Outcome, Report

COLOURS = {Action.CREATE: "32", Action.UPDATE: "33", Action.REPLACE: "35", Action.DELETE: "31",
           Action.START: "36", Action.STOP: "36", Action.RESTART: "36", Action.RELOAD: "36"}
REDACTED = "(sensitive: not shown)"


def use_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Painter:
    def __init__(self, colour: bool):
        self.colour = colour

    def __call__(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text


def plan_text(plan: Plan, colour: bool = False) -> str:
    paint = Painter(colour)
    if plan.empty:
        return f"No changes. Lab {plan.lab!r} matches its lab.yaml.\n"
    blocks = [_change_text(c, paint) for c in plan.changes]
    return "\n".join(blocks) + "\n" + summary_line(plan, paint) + "\n"


def summary_line(plan: Plan, paint: Painter = Painter(False)) -> str:
    counts = plan.summary()
    parts = [f"{n} to {word}" for word, n in counts.items() if n]
    return paint("1", "Plan: " + ", ".join(parts) + ".") + f" (fingerprint {plan.fingerprint()})"


def _change_text(change: Change, paint: Painter) -> str:
    head = paint(COLOURS[change.action], f"{change.action.symbol:>3} {change.address}")
    lines = [f"{head} {change.action.phrase}" + (f" ({change.reason})" if change.reason else "")]
    if change.action == Action.CREATE and change.after:
        lines += [f"      {k}: {_short(v)}" for k, v in _flat(change.after) if k != "content"]
        lines += _content_lines(None, change.after.get("content"), paint, change.after)
    for field in change.diff:
        if field.path == "content":
            lines += _content_lines(field.before, field.after, paint, change.after or {})
        elif field.path != "sha256":
            lines.append(f"      {field.path}: {_short(field.before)} -> {_short(field.after)}")
    return "\n".join(lines)


def _flat(body: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in body.items():
        path = f"{prefix}{key}" if not prefix else (f'{prefix}["{key}"]' if "." in key else f"{prefix}.{key}")
        if isinstance(value, dict) and value:
            out += _flat(value, path)
        elif value not in ({}, [], "", None) and key != "sha256":
            out.append((path, value))
    return out


def _content_lines(before: Any, after: Any, paint: Painter, body: dict) -> list[str]:
    if after is None and body.get("sha256"):
        return [f"      content: {REDACTED}"] if body.get("type") == "file" else []
    if not isinstance(after, str):
        return []
    if after == UNKNOWN:
        return [f"      content: {UNKNOWN}"]
    diff = difflib.unified_diff((before or "").splitlines(), after.splitlines(), "live", "lab.yaml", lineterm="", n=2)
    lines = list(diff)
    if len(lines) > 80:
        lines = lines[:80] + [f"... {len(lines) - 80} more diff lines"]
    return [f"      {_diff_colour(line, paint)}" for line in lines]


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
    # Secret file content is never in a plan: desired and live bodies both carry None for it.
    return json.dumps(plan.as_json(), indent=2) + "\n"


# --- Apply progress and report -----------------------------------------------------------------

PAST = {Action.CREATE: "created", Action.UPDATE: "updated", Action.REPLACE: "replaced",
        Action.DELETE: "deleted", Action.START: "started", Action.STOP: "stopped",
        Action.RESTART: "restarted", Action.RELOAD: "reloaded"}


def progress_line(event: str, outcome: Outcome | None, change: Change, colour: bool) -> str:
    paint = Painter(colour)
    if event == "start":
        return f"{change.address}: {change.action.word} ..."
    if outcome.status == "done":
        return paint("32", f"{change.address}: {PAST[change.action]}") + f" [{outcome.seconds:.1f}s]"
    return paint("31", f"{change.address}: {change.action.word} FAILED") + f" [{outcome.seconds:.1f}s]"


def report_text(report: Report, colour: bool = False) -> str:
    paint = Painter(colour)
    done, failed, skipped = (report.with_status(s) for s in ("done", "failed", "skipped"))
    lines = []
    for o in failed:
        lines.append(paint("31", f"Error: {o.change.address} ({o.change.action.word}): ") + o.message)
    for o in skipped:
        lines.append(f"Skipped: {o.change.address} ({o.change.action.word}): {o.message}")
    verdict = "Apply complete!" if report.ok else "Apply failed."
    lines.append(paint("1", f"{verdict} {len(done)} done, {len(failed)} failed, {len(skipped)} skipped."))
    if not report.ok:
        lines.append("What was done stays done; fix the cause and run apply again to finish.")
    return "\n".join(lines) + "\n"

"""The plan as GitHub-flavoured markdown, for a pull-request comment (`reconcile plan --markdown`).

As Terraform's plan comments and octoDNS's markdown plan: a summary table (action, address, why,
who moved), then each change's details as a fenced `diff` block (a file's content as a unified
diff), unchanged objects as a count, and the fingerprint to apply exactly what was reviewed.

Everything shown comes from `Change.as_json()`, where a secret's content and digest are already
replaced by a marker.  Whatever a name or a file holds is shown, never obeyed: control characters
are escaped, table cells and code spans cannot be broken out of, and a fence is always longer than
any run of backticks inside it.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from .kinds.file import UNKNOWN
from .plan import SECRET, Action, Change, Origin, Plan, Step
from .render import safe
from .source import field_path

MAX_DIFF_LINES = 80  # per change, as in the text plan
MAX_CHARS = 60_000  # GitHub refuses a comment over 65 536 characters
ORIGIN_TEXT = {Origin.LAB: "lab.yaml (your change)", Origin.OUTSIDE: "outside lab.yaml",
               Origin.BOTH: "both", Origin.UNKNOWN: "unknown"}
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]<>|~#!])")


def plan_markdown(plan: Plan, lab_file: str = "lab.yaml") -> str:
    """The whole comment; details left out past GitHub's size limit, and said so."""
    head = [f"### reconcile plan: lab {_code(plan.lab)}", ""]
    if plan.empty:
        head.append(f"No changes: lab {_code(plan.lab)} matches {_text(lab_file)}"
                    + (f" ({plan.unchanged} objects)." if plan.unchanged else "."))
        return "\n".join(head + _notes(plan) + ["", _fingerprint_line(plan)]) + "\n"
    head += [_summary(plan), "", *_table(plan), ""]
    tail = _notes(plan) + ["", _fingerprint_line(plan)]
    details, left_out = [], 0
    budget = MAX_CHARS - len("\n".join(head + tail))
    for change in plan.changes:
        block = _details(change, lab_file)
        if not block:
            continue
        if len(block) + 2 > budget:
            left_out += 1
            continue
        details.append(block)
        budget -= len(block) + 2
    if left_out:
        details.append(f"*{left_out} changes' details left out (GitHub's comment size limit):"
                       " `reconcile plan` shows them all.*")
    return "\n".join(head + ["\n\n".join(details)] + tail) + "\n"


def _summary(plan: Plan) -> str:
    parts = [f"{n} to {word}" for word, n in plan.summary().items() if n]
    return f"**{', '.join(parts)}**" + (f", and {plan.unchanged} unchanged." if plan.unchanged else ".")


def _table(plan: Plan) -> list[str]:
    rows = ["| | action | address | why | who moved | cost |", "| --- | --- | --- | --- | --- | --- |"]
    for change in plan.changes:
        for i, action in enumerate(change.actions):
            who = _text(ORIGIN_TEXT[change.origin]) if i == 0 else ""
            cost = plan.cost(change).value if i == 0 else ""
            drains = plan.drains.get(Step(change.address, action), ())
            live = plan.runtime.get(Step(change.address, action), ())
            why = change.reasons[i].text + (f"; drains {', '.join(map(str, drains))} first" if drains else "") \
                + (f"; through HAProxy's runtime API, no reload: {', '.join(map(str, live))}" if live else "")
            rows.append(f"| {_code(action.symbol)} | {action.word} | {_code(str(change.address))} |"
                        f" {_text(why)} | {who} | {cost} |")
    if plan.unchanged:
        rows.append(f"| | | *and {plan.unchanged} unchanged* | | | |")
    return rows


def _notes(plan: Plan) -> list[str]:
    lines = [f"> **Warning:** {_text(w)}" for w in plan.warnings] + [f"> **Note:** {_text(n)}" for n in plan.notes]
    return [""] + lines if lines else []


def _fingerprint_line(plan: Plan) -> str:
    fingerprint = plan.fingerprint()
    return (f"Fingerprint `{fingerprint}`: `reconcile apply --fingerprint {fingerprint}` applies this plan only"
            " if LXD and lab.yaml are still as reviewed.")


# --- details ---------------------------------------------------------------------------------------

def _details(change: Change, lab_file: str) -> str:
    """One change's lines as a collapsed `diff` block, or "" when it has nothing more to show."""
    data = change.as_json()  # secrets redacted: content and digest alike
    lines = _content_diff(data, change.secret, lab_file) if change.address.kind.value == "file" else []
    lines = _field_lines(change, data) + lines
    if not lines:
        return ""
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... {len(lines) - MAX_DIFF_LINES} more lines"]
    body = "\n".join(safe(line) for line in lines)
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    actions = ", ".join(a.word for a in change.actions)
    return (f"<details><summary><code>{_html(str(change.address))}</code>: {actions}</summary>\n\n"
            f"{fence}diff\n{body}\n{fence}\n\n</details>")


def _field_lines(change: Change, data: dict[str, Any]) -> list[str]:
    """Settings as `-old` / `+new` lines: every field of what is created, the differing ones otherwise."""
    if change.actions[0] in (Action.CREATE, Action.CONVERGE) and data["after"]:
        return [f"+{path}: {_value(v)}" for path, v in _flat(data["after"]) if path not in ("content", "sha256")]
    out = []
    for field in data["diff"]:
        if field["path"] == "content" or (field["path"] == "sha256" and not change.secret):
            continue
        if field["path"] == "sha256":
            out.append(f"~content: {field['after']}")  # (secret changed)
            continue
        out += [f"-{field['path']}: {_value(field['before'])}", f"+{field['path']}: {_value(field['after'])}"]
    return out


def _content_diff(data: dict[str, Any], secret: bool, lab_file: str) -> list[str]:
    before, after = (data["before"] or {}).get("content"), (data["after"] or {}).get("content")
    if secret:
        return [f"+content: {SECRET}"] if data["before"] is None else []  # an update says "(secret changed)"
    if not isinstance(after, str) or not (before != after or data["before"] is None):
        return []
    if after == UNKNOWN:
        return [f"+content: {UNKNOWN}"]
    old = before.splitlines() if isinstance(before, str) and before not in (SECRET, UNKNOWN) else []
    return list(difflib.unified_diff(old, after.splitlines(), "live", lab_file, lineterm="", n=2))


def _flat(body: dict[str, Any], prefix: tuple = ()) -> list[tuple[str, Any]]:
    """Every setting of a body that has a value, by its field path."""
    out = []
    for key, value in body.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out += _flat(value, path)
        elif value not in ({}, [], "", None):
            out.append((field_path(path), value))
    return out


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."


# --- escaping -------------------------------------------------------------------------------------

def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _code(text: str) -> str:
    """An inline code span that holds any text: a fence longer than its backticks, `|` escaped for tables."""
    text = safe(text).replace("|", "\\|")
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _html(text: str) -> str:
    """Text inside an HTML block (no markdown there): shown literally."""
    return safe(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text(text: str) -> str:
    """Prose from names and messages: shown literally, markdown and HTML escaped, one line."""
    text = safe(text).replace("&", "&amp;")
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)

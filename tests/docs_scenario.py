"""The commands the docs show, as code: run by scripts/docs-outputs.py to write their outputs into
README.md and docs/*.md, and by the tests to fail when a command no longer prints, or no longer exits
with, what the docs say.

Two scenarios.  GUIDE walks the guide's lab on a real LXD (docs/tutorial.md, and the plan, apply,
destroy and check examples of docs/cli.md): tests/test_guide_lab.py runs it.  OFFLINE needs no LXD
(validate, graph, usage errors), in a folder holding a copy of the repository's lab.yaml:
tests/test_docs_agree.py runs it.  Every step says the exit code it must end with; together they
cover each cell of docs/cli.md's exit-code table (tests/test_docs_agree.py holds them to it).

Outputs are compared after masking what changes from run to run (addresses, timings,
fingerprints, the order of parallel steps, where round robin starts)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
CLI = ROOT / "docs" / "cli.md"
README = ROOT / "README.md"
DOCS = (README, TUTORIAL, CLI)  # the files whose output blocks are generated
BLOCK = re.compile(r"(<!-- output: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end output -->)", re.S)

Excerpt = Callable[[str], str]


@dataclass(frozen=True)
class Step:
    """One command the docs show (or whose exit code the exit-code table states)."""

    name: str  # its block, `<!-- output: NAME -->` in `doc`
    argv: tuple[str, ...]  # reconcile's arguments
    doc: Path | None = None  # where the block is; None: run for its exit code only
    before: tuple[str, ...] = ()  # shell commands, shown and run first
    code: int = 0  # the exit code it must end with
    fence: str = "```console"  # the block's opening fence; "console" blocks show what was typed
    excerpt: Excerpt | None = None  # what of the output the docs show (default: all of it)

    @property
    def typed(self) -> bool:
        return self.fence.endswith("console")

    def shown(self, printed: str) -> str:
        text = self.excerpt(printed) if self.excerpt else printed
        typed = "".join(f"$ {c}\n" for c in self.before) + f"$ reconcile {' '.join(self.argv)}\n"
        return (typed if self.typed else "") + text


# --- excerpts ---------------------------------------------------------------------------------------

def _lines(printed: str) -> list[str]:
    return printed.splitlines()


def _joined(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def head_and_tail(head: int, tail: int) -> Excerpt:
    def excerpt(printed: str) -> str:
        lines = _lines(printed)
        return _joined(lines[:head] + ["..."] + lines[-tail:]) if len(lines) > head + tail + 1 else printed
    return excerpt


def report_only(printed: str) -> str:
    return _joined(["..."] + [line for line in _lines(printed) if line.startswith(("Apply", "What was done"))])


def plan_end(printed: str) -> str:
    """A refused apply: the plan's summary line and the refusal."""
    lines = _lines(printed)
    return _joined(["..."] + [line for line in lines if line.startswith(("Plan:", "Error:"))])


def snapshots_sorted(printed: str) -> str:
    """Containers are snapshotted and restored four at a time, in any order: their lines sorted where they
    stand, as a block."""
    lines = _lines(printed)
    parallel = [i for i, line in enumerate(lines) if re.match(r"^(snapshot|restore|start|stop) ", line)]
    if parallel:
        first, last = parallel[0], parallel[-1]
        lines[first:last + 1] = sorted(lines[first:last + 1])
    return _joined(lines)


def json_excerpt(printed: str) -> str:
    """`plan --json`, its first change whole but for the bodies, the rest elided with `…`."""
    data = json.loads(printed)
    first = {**data["changes"][0], "before": ..., "after": ..., "meta": ...}
    graph = next(((step, waits) for step, waits in data["graph"].items() if waits), None)
    top = [f'"format_version": {data["format_version"]}', f'"lab": {_j(data["lab"])}',
           f'"fingerprint": {_j(data["fingerprint"])}', f'"daemon": {_j(data["daemon"])}']
    lines = ["{" + ", ".join(top) + ","]
    change = [f'"{k}": {_j(v)}' for k, v in first.items()]
    lines.append(' "changes": [{' + ",\n              ".join(_paired(change)) + "}, …],")
    summary = {k: v for k, v in data["summary"].items() if v}
    lines.append(f' "summary": {_j(summary)[:-1]}, …}}, "unchanged": {data["unchanged"]}, "notes": {_j(data["notes"])},')
    lines.append(f' "objects": {data["objects"]}, "frontends": {_j(data["frontends"])}, "graph": '
                 + (f"{{{_j(graph[0])}: {_j(graph[1])}, …}}}}" if graph else "{}}"))
    return _joined(lines)


def _j(value) -> str:
    return "{…}" if value is ... else json.dumps(value)


def _paired(parts: list[str]) -> list[str]:
    """Short fields two to a line, as a person would lay them out."""
    out: list[str] = []
    for part in parts:
        if out and len(out[-1]) + len(part) < 60:
            out[-1] += ", " + part
        else:
            out.append(part)
    return out


def markdown_excerpt(printed: str) -> str:
    """`plan --markdown`: the heading, the table and the first two changes' details, then its end."""
    lines = _lines(printed)
    ends = [i for i, line in enumerate(lines) if line == "</details>"]
    if len(ends) <= 2:
        return printed
    return _joined(lines[:ends[1] + 1] + ["", "…", ""] + lines[-1:])


# --- the scenarios --------------------------------------------------------------------------------

DRIFT = (
    "lxc exec proxyha -- sed -i 's/roundrobin/leastconn/' /etc/haproxy/haproxy.cfg",
    "lxc exec web2 -- sed -i 's/SITE2/SITE7/' /var/www/html/index.html",
    "lxc config device remove proxyha https",
    "lxc exec proxyha -- systemctl stop haproxy",
)
EXERCISE = (  # what a class breaks between two exercises
    "lxc exec proxyha -- sed -i 's/roundrobin/leastconn/' /etc/haproxy/haproxy.cfg",
    "lxc exec web1 -- systemctl stop apache2",
    "lxc exec web2 -- sh -c 'echo scribbled > /var/www/html/index.html'",
)
GUIDE = (
    Step("destroy-nothing", ("destroy", "--yes")),
    Step("plan-from-nothing", ("plan",), TUTORIAL, excerpt=head_and_tail(24, 2)),
    Step("apply-from-nothing", ("apply", "--yes"), TUTORIAL, excerpt=report_only),
    Step("check", ("check",), TUTORIAL),
    Step("plan-again", ("plan",), TUTORIAL),
    Step("check-too-few", ("check", "--requests", "1"), CLI, code=1),
    Step("plan-drift", ("plan",), TUTORIAL, before=DRIFT),
    Step("plan-drift-exit-code", ("plan", "--detailed-exitcode"), code=2),
    Step("plan-json", ("plan", "--json"), CLI, fence="```json", excerpt=json_excerpt),
    Step("plan-markdown", ("plan", "--markdown"), CLI, fence="````markdown", excerpt=markdown_excerpt),
    Step("apply-unconfirmed", ("apply",), CLI, code=1, excerpt=plan_end),
    Step("plan-target-typo", ("plan", "--target", "instance.web3"), CLI, code=1),
    Step("apply-drift", ("apply", "--yes"), TUTORIAL),
    Step("plan-after-drift", ("plan",), TUTORIAL),
    Step("checkpoint-pristine", ("checkpoint", "pristine"), TUTORIAL, excerpt=snapshots_sorted),
    Step("checkpoint-taken", ("checkpoint", "pristine"), code=1),
    Step("rollback-unconfirmed", ("rollback", "pristine"), code=1),
    Step("rollback-pristine", ("rollback", "pristine", "--yes"), TUTORIAL, before=EXERCISE,
         excerpt=snapshots_sorted),
    Step("plan-after-rollback", ("plan",), TUTORIAL),
    Step("checkpoint-delete", ("checkpoint", "--delete", "pristine")),
    Step("destroy-unconfirmed", ("destroy",), CLI, code=1),
)

BROKEN = (  # three mistakes in a copy of the repository's lab.yaml
    "sed -i 's/vars.marker }}/vars.markr }}/' lab.yaml",
    "sed -i 's/^    description: Apache, page marked SITE1$/&\\n    imgae: reconciler-debian/' lab.yaml",
    "sed -i 's/profiles: \\[default, macvlan\\]/profiles: [default, macvlam]/' lab.yaml",
)
OFFLINE = (
    Step("validate", ("validate",), CLI),
    Step("graph", ("graph",)),
    Step("check-too-many", ("check", "--requests", "100000"), CLI, code=1),
    Step("validate-problems", ("validate",), CLI, before=BROKEN, code=1),
    Step("plan-invalid", ("plan",), code=1),
    Step("graph-invalid", ("graph",), code=1),
)

Run = Callable[[list[str]], tuple[int, str]]  # runs `reconcile ARGV` in the lab: exit code, what it printed
Shell = Callable[[str], None]  # runs one of the shell commands above in the lab


@dataclass(frozen=True)
class Ran:
    code: int  # the exit code
    text: str  # as the docs show it: the commands as typed, then what reconcile printed


def run_scenario(steps: tuple[Step, ...], reconcile: Run, shell: Shell,
                 wait_until_serving: Callable[[], object] = lambda: None) -> dict[str, Ran]:
    """Every step, run in order."""
    out = {}
    for step in steps:
        for command in step.before:
            shell(command)
        if step.argv[0] == "check" and step.code == 0:
            wait_until_serving()
        code, printed = reconcile(list(step.argv))
        out[step.name] = Ran(code, step.shown(printed))
    return out


def wrong_exit_codes(steps: tuple[Step, ...], ran: dict[str, Ran]) -> list[str]:
    """Each step that ended with another exit code than the one the docs give it, with its output."""
    return [f"`reconcile {' '.join(s.argv)}` (step {s.name}) exited {ran[s.name].code}, not {s.code}:\n"
            f"{ran[s.name].text[-3000:]}" for s in steps if ran[s.name].code != s.code]


def exit_codes(steps: tuple[Step, ...]) -> set[tuple[str, int]]:
    """(command, exit code) pairs the steps prove."""
    return {(step.argv[0], step.code) for step in steps}


# --- comparing ---------------------------------------------------------------------------------------

MASKS = [
    (re.compile(r"\b10\.203\.\d+\.\d+\b"), "10.203.N.N"),
    (re.compile(r"\[\d+\.\ds\]"), "[N.Ns]"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "F"),  # fingerprints
    (re.compile(r"@@ -\d+,\d+ \+\d+,\d+ @@"), "@@ hunk @@"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\b"), "TIME"),  # when a checkpoint was taken
    (re.compile(r"(lab\.yaml digest )[0-9a-f]{12}\b"), r"\1D"),  # the test's lab.yaml has its own override
]
SERVED = re.compile(r"(-> backend \S+: )(.*)")


def masked(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    text = SERVED.sub(lambda m: m.group(1) + _from_first(m.group(2)), text)
    return _progress_sorted(text)


def _from_first(answers: str) -> str:
    """Round robin's sequence rotated to start at its smallest server: where it starts is chance."""
    parts = answers.split(", ")
    start = parts.index(min(parts))
    return ", ".join(parts[start:] + parts[:start])


def _progress_sorted(text: str) -> str:
    """Parallel steps finish in any order: progress lines compared as a sorted block."""
    lines = text.splitlines()
    progress = [i for i, line in enumerate(lines) if re.match(r"^\S+: \S.* \[N\.Ns\]$", line)]
    if progress:
        first, last = progress[0], progress[-1]
        lines[first:last + 1] = sorted(lines[first:last + 1])
    return "\n".join(lines)


def documented(steps: tuple[Step, ...] | None = None) -> dict[str, str]:
    """The output blocks in the docs (of these steps' files), without their fences."""
    files = DOCS if steps is None else tuple(dict.fromkeys(s.doc for s in steps if s.doc))
    out: dict[str, str] = {}
    for doc in files:
        for m in BLOCK.finditer(doc.read_text()):
            assert m["name"] not in out, f"two output blocks named {m['name']!r}"
            out[m["name"]] = _unfenced(m["body"])
    return out


def shown_in_docs(steps: tuple[Step, ...]) -> dict[str, Step]:
    return {s.name: s for s in steps if s.doc}


def _unfenced(body: str) -> str:
    lines = body.strip("\n").splitlines()
    return "\n".join(lines[1:-1]) + "\n" if lines and lines[0].startswith("```") else body


def rewritten(text: str, outputs: dict[str, str], steps: tuple[Step, ...]) -> str:
    """A doc's text with each of these steps' blocks replaced by the given output."""
    by_name = shown_in_docs(steps)

    def one(m: re.Match) -> str:
        body, step = outputs.get(m["name"]), by_name.get(m["name"])
        if body is None or step is None:
            return m.group(0)
        closing = "`" * (len(step.fence) - len(step.fence.lstrip("`")))
        return m.group(1) + step.fence + "\n" + body + closing + "\n" + m.group(4)
    return BLOCK.sub(one, text)

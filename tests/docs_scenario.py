"""The tutorial's walk through the guide's lab, as code: run by scripts/docs-outputs.py to write the
command outputs into docs/tutorial.md, and by tests/test_guide_lab.py to fail when they no longer
match.  Outputs are compared after masking what changes from run to run (addresses, timings,
fingerprints, the order of parallel steps, where round robin starts)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"(<!-- output: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end output -->)", re.S)

# What the tutorial runs, in order: (block name, shell commands shown first, reconcile argv).
DRIFT = [
    "lxc exec proxyha -- sed -i 's/roundrobin/leastconn/' /etc/haproxy/haproxy.cfg",
    "lxc exec web2 -- sed -i 's/SITE2/SITE7/' /var/www/html/index.html",
    "lxc config device remove proxyha https",
    "lxc exec proxyha -- systemctl stop haproxy",
]
STEPS: list[tuple[str, list[str], list[str]]] = [
    ("plan-from-nothing", [], ["plan"]),
    ("apply-from-nothing", [], ["apply", "--yes"]),
    ("check", [], ["check"]),
    ("plan-again", [], ["plan"]),
    ("plan-drift", DRIFT, ["plan"]),
    ("apply-drift", [], ["apply", "--yes"]),
    ("plan-after-drift", [], ["plan"]),
]

Run = Callable[[list[str]], str]  # runs `reconcile ARGV` in the lab, returns what it printed
Shell = Callable[[str], None]  # runs one of the shell commands above in the lab


def run_scenario(reconcile: Run, shell: Shell, wait_until_serving: Callable[[], None]) -> dict[str, str]:
    """Every block's text: the commands as typed, then what reconcile printed."""
    out = {}
    for name, commands, argv in STEPS:
        for command in commands:
            shell(command)
        if name == "check":
            wait_until_serving()
        printed = reconcile(argv)
        typed = "".join(f"$ {c}\n" for c in commands) + f"$ reconcile {' '.join(argv)}\n"
        out[name] = typed + shorten(name, printed)
    return out


def shorten(name: str, printed: str) -> str:
    """Long outputs as the tutorial shows them: from nothing, the plan's first blocks and its end."""
    lines = printed.splitlines()
    if name == "plan-from-nothing" and len(lines) > 40:
        lines = lines[:24] + ["..."] + lines[-2:]
    if name == "apply-from-nothing":
        lines = ["..."] + [line for line in lines if line.startswith(("Apply", "What was done"))]
    return "\n".join(lines) + "\n"


# --- comparing ---------------------------------------------------------------------------------------

MASKS = [
    (re.compile(r"\b10\.203\.\d+\.\d+\b"), "10.203.N.N"),
    (re.compile(r"\[\d+\.\ds\]"), "[N.Ns]"),
    (re.compile(r"fingerprint [0-9a-f]{16}"), "fingerprint F"),
    (re.compile(r"@@ -\d+,\d+ \+\d+,\d+ @@"), "@@ hunk @@"),
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


def documented(text: str | None = None) -> dict[str, str]:
    """The blocks in docs/tutorial.md, without their ```console fences."""
    text = TUTORIAL.read_text() if text is None else text
    return {m["name"]: _unfenced(m["body"]) for m in BLOCK.finditer(text)}


def _unfenced(body: str) -> str:
    lines = body.strip("\n").splitlines()
    return "\n".join(lines[1:-1]) + "\n" if lines and lines[0].startswith("```") else body


def rewritten(text: str, outputs: dict[str, str]) -> str:
    """docs/tutorial.md with each block's body replaced by the given output."""
    def one(m: re.Match) -> str:
        body = outputs.get(m["name"])
        if body is None:
            return m.group(0)
        return m.group(1) + "```console\n" + body + "```\n" + m.group(4)
    return BLOCK.sub(one, text)

"""Progress people can follow: live on a terminal (what runs now, done of total, time elapsed), with
NO_COLOR honoured; exactly the old plain lines anywhere else.  Apply on a real LXD (tiny containers)
under a real pseudo-terminal; debootstrap's stages from its own kind of output."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

from terminal import run_in_terminal, run_in_tmux

from reconciler.address import instance
from reconciler.outcome import Outcome, Status
from reconciler.plan import Action, Change, Code, Reason, Step, make_plan
from reconciler.progress import apply_progress

ROOT = Path(__file__).resolve().parent.parent
COLOUR = re.compile(rb"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)[0-9;]*m")  # a foreground colour, not bold or cursor moves
LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@}
networks:
  @TAG@b:
    config: {ipv4.address: 10.203.73.1/24, ipv4.nat: false, ipv6.address: none}
profiles:
  net:
    devices:
      eth0: {type: nic, network: @TAG@b, name: eth0}
containers:
""" + "".join(f"  c{i}:\n    image: reconciler-tiny\n    profiles: [default, net]\n" for i in range(1, 6))
DEBOOTSTRAP = ["I: Retrieving InRelease", "I: Checking Release signature", "I: Resolving dependencies of required packages..."]
DEBOOTSTRAP += [line for p in ("base-files", "bash", "coreutils")
                for line in (f"I: Retrieving {p} 1.0", f"I: Validating {p} 1.0")]
DEBOOTSTRAP += ["I: Extracting base-files...", "I: Extracting bash...", "W: a warning kept as it was",
                "I: Unpacking base-files...", "I: Configuring bash...", "I: Base system installed successfully."]


def test_away_from_a_terminal_apply_prints_the_same_plain_lines_as_ever():
    change = Change(instance("c1"), (Action.CREATE,), (Reason(Code.ABSENT, "absent"),), None, {"state": "running"})
    plan = make_plan("l", [change], {})
    step = Step(change.address, Action.CREATE)
    out = io.StringIO()
    with apply_progress(plan, colour=False, stream=out) as progress:
        progress("start", step, change, None)
        progress("end", step, change, Outcome(step, change, Status.DONE, 1.25))
    assert out.getvalue() == "instance.c1: created [1.2s]\n"


def test_an_escape_in_an_address_is_shown_never_obeyed_in_the_live_line_and_the_step_lines():
    from reconciler.address import file
    from reconciler.progress import _running_text
    step = Step(file("c1", "/srv/a\x1b[2J"), Action.CREATE)
    assert _running_text({step: 0.0}).startswith("Running file.c1:/srv/a\\x1b[2J (create, ")
    change = Change(step.address, (Action.CREATE,), (Reason(Code.ABSENT, "absent"),), None, {})
    out = io.StringIO()
    with apply_progress(make_plan("l", [change], {}), colour=True, stream=out) as progress:
        progress("end", step, change, Outcome(step, change, Status.DONE, 0.5))
    assert out.getvalue() == "\x1b[32mfile.c1:/srv/a\\x1b[2J: created\x1b[0m [0.5s]\n"


def reconcile(lab, *argv: str, no_color: bool) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | ({"NO_COLOR": "1"} if no_color else {})
    code, out = run_in_terminal([sys.executable, "-m", "reconciler.cli", *argv, "-f", str(lab.file)], env)
    return code, out


def test_apply_on_a_terminal_shows_what_runs_done_of_total_and_time(lab):
    lab.write(LAB)
    code, raw = reconcile(lab, "apply", "--yes", no_color=False)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode())  # what the terminal shows, without its codes
    assert code == 0, text[-2000:]
    assert re.search(r"0:00:\d\d .* [0-6]/7 Running instance\.c\d \(create, \d+s\)", text), text[-2000:]
    assert "instance.c5: created [" in text and "Apply complete! 7 done, 0 failed, 0 skipped." in text
    assert COLOUR.search(raw) and "\\x1b" not in text  # coloured, and no code shown as text

    lab.lxc("config", "set", "c1", "user.x", "1")
    code, raw = reconcile(lab, "apply", "--yes", no_color=True)
    assert code == 0 and b"1/1 " in raw and b"instance.c1: updated [" in raw
    assert not COLOUR.search(raw), raw[-500:]


def test_debootstraps_stages_live_on_a_terminal(tmp_path):
    log = tmp_path / "debootstrap.log"
    log.write_text("\n".join(DEBOOTSTRAP) + "\n")
    for no_color in (False, True):
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | ({"NO_COLOR": "1"} if no_color else {})
        code, raw = run_in_terminal(["sh", "-c", f'{sys.executable} -m reconciler.progress debootstrap < "{log}"'], env)
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode())  # what the terminal shows, without its codes
        assert code == 0, text
        assert "debootstrap stage 1/4: retrieving" in text and "debootstrap stage 2/4: extracting" in text
        assert re.search(r"0:00:0\d .* 1/4 debootstrap stage 4/4: configuring bash", text), text  # of the 4 retrieved
        lines = [line.strip() for line in text.replace("\r", "\n").splitlines()]
        for summary in (r"Retrieving\s+4  \(\d+s\)", r"Extracting\s+2  \(\d+s\)", r"Unpacking\s+1  \(\d+s\)",
                        r"Configuring\s+1  \(\d+s\)"):
            assert any(re.fullmatch(summary, line) for line in lines), (summary, lines)
        assert "W: a warning kept as it was" in text
        assert bool(COLOUR.search(raw)) != no_color



MOTD = """\
lab: @TAG@
lxd: {project: @PROJECT@}
containers:
  c1:
    image: reconciler-tiny
    files:
      /etc/motd: {content: "hello\\n"}
"""
SGR_YELLOW = re.compile(r"\x1b\[(?:[0-9;]*;)?33(?:;[0-9;]*)?m")


def test_a_plan_on_a_real_terminal_is_coloured_and_shows_no_escape_code_but_those_it_was_sent(lab):
    """tmux is the terminal: what it displays, not the bytes sent to it.  The plan's colours are
    displayed as colours; an escape sequence inside a container's file is shown as text, not obeyed."""
    lab.write(MOTD)
    assert lab.run("apply", "--yes").code == 0
    lab.lxc("exec", "c1", "--", "sh", "-c", r"printf 'bye\033[2J\033]0;pwned\007\n' > /etc/motd")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TMUX")}
    screen = run_in_tmux([sys.executable, "-m", "reconciler.cli", "plan", "-f", str(lab.file)], env)
    lines = screen.text.splitlines()
    assert screen.code == 0, screen.text
    first = "  ~ file.c1:/etc/motd will be updated in place (differs: content) [changed outside lab.yaml] [cost: live]"
    assert lines[0].startswith("Daemon: LXD ") and lines[1] == first, screen.text
    assert [line for line in lines if "\\x" in line] == ["      -bye\\x1b[2J\\x1b]0;pwned\\x07"], screen.text
    assert "      +hello" in lines and lines[-1].startswith("Plan: 1 to update, and 1 unchanged.")  # the screen was never cleared
    styled = screen.styled.splitlines()
    assert SGR_YELLOW.match(styled[1]) and "~ file.c1:/etc/motd" in styled[1], styled[1]  # colour is really on

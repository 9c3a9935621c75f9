"""Run a command on a real pseudo-terminal, as a person at a terminal would, and read what it drew: the
bytes it wrote (`run_in_terminal`), the screen a real terminal emulator shows (`run_in_tmux`), or a
conversation with it (`Terminal`: read until it shows something, answer)."""

from __future__ import annotations

import fcntl
import itertools
import os
import select
import shlex
import struct
import subprocess
import tempfile
import termios
import time
from dataclasses import dataclass
from pathlib import Path


def run_in_terminal(argv: list[str], env: dict[str, str], stdin_data: bytes = b"", timeout: float = 300,
                    columns: int = 140) -> tuple[int, bytes]:
    """The exit code and every byte written to the terminal (stdout and stderr), bounded in time."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin_data else slave, stdout=slave, stderr=slave,
                            env={**env, "TERM": "xterm-256color", "COLUMNS": str(columns)}, close_fds=True)
    os.close(slave)
    if stdin_data:
        assert proc.stdin is not None
        proc.stdin.write(stdin_data)
        proc.stdin.close()
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
    os.close(master)
    return proc.wait(timeout=30), bytes(out)


@dataclass(frozen=True)
class Screen:
    """What a real terminal (tmux) shows once a command has ended."""

    code: int
    text: str  # the characters on the screen and in its scrollback, one line per row (no blank rows at the end)
    styled: str  # the same, with the terminal's own SGR sequences for the colours it displays


_sessions = itertools.count(1)


def run_in_tmux(argv: list[str], env: dict[str, str], timeout: float = 300, columns: int = 200,
                rows: int = 50) -> Screen:
    """Run `argv` in a tmux of its own (a real terminal emulator) and read its screen back.

    The pane's shell signals a tmux channel once the command has ended, then waits on another that
    nobody signals, so the pane stays open until it is read; the test waits on the first channel
    (bounded), never for a time."""
    tmux = ["tmux", "-L", f"reconciler-test-{os.getpid()}-{next(_sessions)}", "-f", "/dev/null"]
    with tempfile.TemporaryDirectory() as tmp:
        code_file = Path(tmp) / "code"
        script = (f"{shlex.join(argv)}; echo $? > {shlex.quote(str(code_file))};"
                  f" {shlex.join(tmux)} wait-for -S ended; {shlex.join(tmux)} wait-for never")
        subprocess.run(tmux + ["new-session", "-d", "-x", str(columns), "-y", str(rows), "sh", "-c", script],
                       env=env, check=True, timeout=30)
        try:
            subprocess.run(tmux + ["wait-for", "ended"], check=True, timeout=timeout)
            capture = tmux + ["capture-pane", "-p", "-J", "-S", "-", "-E", "-"]
            text = subprocess.run(capture, check=True, capture_output=True, text=True, timeout=30).stdout
            styled = subprocess.run(capture + ["-e"], check=True, capture_output=True, text=True, timeout=30).stdout
            return Screen(int(code_file.read_text()), text.rstrip("\n") + "\n", styled.rstrip("\n") + "\n")
        finally:
            subprocess.run(tmux + ["kill-server"], check=False, capture_output=True, timeout=30)
class Terminal:
    """A command on a pseudo-terminal that a test talks to: read until it shows something, answer."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, columns: int = 140):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                     env={**(env or os.environ), "TERM": "xterm-256color", "COLUMNS": str(columns)})
        os.close(slave)
        self.out = bytearray()

    def read_until(self, marker: bytes, timeout: float = 120) -> bytes:
        """Everything drawn so far, once `marker` is among it; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while marker not in self.out:
            assert time.monotonic() < deadline, f"no {marker!r} after {timeout}s:\n{self.out[-2000:]!r}"
            if not self._read(0.5) and self.proc.poll() is not None:
                raise AssertionError(f"exited ({self.proc.returncode}) without {marker!r}:\n{self.out[-2000:]!r}")
        return bytes(self.out)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 300) -> tuple[int, bytes]:
        """Its exit code and all it drew, once it ends (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.5) is not None:
            pass
        os.close(self.master)
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic())), bytes(self.out)

    def _read(self, wait: float) -> bytes | None:
        """What arrived within `wait` (b"" if nothing yet); None once the terminal's other end closed."""
        if not select.select([self.master], [], [], wait)[0]:
            return b""
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other end closed
            return None
        self.out += chunk
        return chunk or None

"""Run a command on a real pseudo-terminal, as a person at a terminal would, and read what it drew."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time


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

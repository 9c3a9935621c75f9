"""HAProxy's admin socket, asked from apply: one command at a time, and a reload that is done only once
the socket is answered by the new worker alone.

`systemctl reload haproxy` returns as soon as HAProxy's master has been signalled.  The master then starts
a new worker, which takes the old one's listening sockets (the admin socket's among them), and only then
tells the old worker to stop.  Until it has gone, the old worker may still answer the socket with the
runtime state it had before the reload: the next plan would read it and see drift that is not there.

HAProxy is reached by an exec in its container (the socket is a Unix socket there).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .haproxy.runtime import RELOAD, SERVICE, SHOW_INFO, UnsafeValue, client_argv, worker_pid
from .journal import log_of

if TYPE_CHECKING:
    from .kinds.runner import Runner

RELOAD_TIMEOUT = 15.0  # seconds for a new worker to answer and the old one to go
POLL = 0.25  # seconds between two looks at the admin socket


class NotAsked(Exception):
    """HAProxy's admin socket could not be asked."""


def ask(run: Runner, proxy: str, socket: str, command: str) -> str:
    """HAProxy's answer to one command on its admin socket."""
    try:
        code, out, err = run.lxd.execute(proxy, client_argv(socket, command))
    except UnsafeValue as bad:
        raise NotAsked(str(bad)) from None
    if code != 0:
        raise NotAsked(f"asking {socket} in {proxy} failed (exit {code}): {run.last_lines(out, err)}")
    return out


def answering_worker(run: Runner, proxy: str, socket: str) -> int | None:
    """The pid of the worker that answered `show info`, or None if none did."""
    try:
        return worker_pid(ask(run, proxy, socket, SHOW_INFO))
    except NotAsked:
        return None


def running(run: Runner, proxy: str, pid: int) -> bool:
    code, _, _ = run.lxd.execute(proxy, ["test", "-e", f"/proc/{pid}"])
    return code == 0


def reload_haproxy(run: Runner, proxy: str, socket: str) -> None:
    """`systemctl reload haproxy`, done once a new worker answers the admin socket alone."""
    old = answering_worker(run, proxy, socket)
    run.exec(proxy, RELOAD, "reloading HAProxy")
    if old is not None:  # nothing answered before the reload: there is no old worker to wait out
        wait_for_new_worker(run, proxy, socket, old)


def wait_for_new_worker(run: Runner, proxy: str, socket: str, old: int) -> None:
    """Wait (bounded) until a worker other than `old` answers the admin socket and `old` has gone.  An old
    worker still finishing long connections at the bound is said, not fatal: it no longer answers.  No new
    worker at the bound fails the step with HAProxy's log."""
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while True:
        new = answering_worker(run, proxy, socket)
        if new not in (None, old) and not running(run, proxy, old):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(POLL)
    if new in (None, old):
        raise run.step_error(f"HAProxy's admin socket {socket} is still answered by its old worker (pid {old})"
                             f" {RELOAD_TIMEOUT:.0f}s after the reload: no new worker took over; its log:\n  "
                             + "\n  ".join(log_of(run, proxy, SERVICE)))
    run.warn(f"{proxy}: HAProxy's old worker (pid {old}) still runs {RELOAD_TIMEOUT:.0f}s after the reload,"
             f" finishing its connections; worker {new} answers")

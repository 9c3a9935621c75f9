"""One apply at a time, per lab, through a lock kept in LXD itself.

The lock is a profile named `reconciler-lock-LAB` in the lab's project (in the default project when the
lab owns its own, which may not exist yet and which destroy deletes), there only while an apply holds
it: its `user.reconciler.lock.*` keys say who (host, process, start time, a heartbeat refreshed while
the apply runs).  Creating it is atomic in LXD and taking over a stale one goes through its ETag, so
two machines pointing at one LXD exclude each other; releasing it deletes it.  A lock left by a killed
run is taken over: at once when its process is gone on this host, or when its heartbeat is older than
the lease.  `plan` takes no lock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .errors import LxdError, LxdNotFound, StaleState

if TYPE_CHECKING:
    from .lxd import Lxd

PREFIX = "reconciler-lock-"  # spec.LOCK_PREFIX: lab profiles cannot take such names
MARK = "user.reconciler.lock"
HOLDER, STARTED, BEAT, COMMAND = (f"{MARK}.{k}" for k in ("holder", "started", "heartbeat", "command"))
LEASE = 90.0  # seconds without a heartbeat before another host may take the lock over
BEAT_EVERY = 15.0


class LockHeld(Exception):
    """Another apply holds the lab's lock."""


def lock_name(lab: str) -> str:
    return PREFIX + lab


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str
    heartbeat: float
    command: str

    @classmethod
    def of(cls, config: dict) -> Holder | None:
        host, _, pid = (config.get(HOLDER) or "").rpartition(":")
        if not host or not pid.isdigit():
            return None
        return cls(host, int(pid), config.get(STARTED, "?"), float(config.get(BEAT) or 0), config.get(COMMAND, "?"))

    def describe(self) -> str:
        age = time.time() - self.heartbeat
        return (f"{self.command} by process {self.pid} on {self.host}, started {self.started},"
                f" last heartbeat {age:.0f}s ago")

    def stale(self) -> bool:
        """Its process is gone (on this host), or it stopped beating."""
        if self.host == socket.gethostname() and not _alive(self.pid):
            return True
        return time.time() - self.heartbeat > LEASE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Lock:
    """`with Lock(lxd, lab, timeout, "apply"):` holds the lab's lock, or raises LockHeld naming the holder."""

    def __init__(self, lxd: Lxd, lab: str, timeout: float, command: str, said=print):
        self.lxd, self.name, self.timeout, self.command, self.said = lxd, lock_name(lab), timeout, command, said
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.lab = lab
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.taken_over: Holder | None = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _mine(self) -> dict[str, str]:
        return {MARK: self.lab, HOLDER: self.me, STARTED: datetime.now(UTC).isoformat(timespec="seconds"),
                BEAT: f"{time.time():.0f}", COMMAND: self.command}

    def acquire(self) -> None:
        deadline, waited = time.monotonic() + self.timeout, False
        while True:
            holder = self._try()
            if holder is None:
                self._beat = threading.Thread(target=self._heartbeat, daemon=True)
                self._beat.start()
                return
            if time.monotonic() >= deadline:
                raise LockHeld(f"lab {self.lab!r} is locked: {holder.describe()} (lock: LXD profile {self.name});"
                               " wait for it (--lock-timeout SECONDS), or, if that run is gone, its lease ends"
                               f" {LEASE:.0f}s after its last heartbeat")
            if not waited:
                self.said(f"Waiting for the lock of lab {self.lab!r}: {holder.describe()} ...")
                waited = True
            time.sleep(1.0)

    def _try(self) -> Holder | None:
        """None when the lock is now ours; else who holds it."""
        try:
            raw, etag = self.lxd.get("profile", self.name)
        except LxdNotFound:
            try:
                self.lxd.create("profile", {"name": self.name, "config": self._mine(), "description":
                                            f"reconciler's apply lock for lab {self.lab} (do not edit)"})
                return None
            except LxdError:
                return self._try_again()  # someone created it first
        config = raw.get("config") or {}
        holder = Holder.of(config)
        if holder is not None and not holder.stale():
            return holder
        try:
            self.lxd.put("profile", self.name, {**_body(raw), "config": {**config, **self._mine()}}, etag)
        except StaleState:
            return self._try_again()
        self.taken_over = holder
        if holder is not None:
            self.said(f"Took over the lock of lab {self.lab!r} left by {holder.describe()}")
        return None

    def _try_again(self) -> Holder | None:
        raw, _ = self.lxd.get("profile", self.name)
        return Holder.of(raw.get("config") or {}) or Holder("?", 0, "?", time.time(), "?")

    def _heartbeat(self) -> None:
        while not self._stop.wait(BEAT_EVERY):
            try:
                raw, etag = self.lxd.get("profile", self.name)
                if (raw.get("config") or {}).get(HOLDER) != self.me:
                    return  # taken over: nothing more to refresh
                config = {**raw["config"], BEAT: f"{time.time():.0f}"}
                self.lxd.put("profile", self.name, {**_body(raw), "config": config}, etag)
            except LxdError:
                continue  # the next beat tries again; a lost daemon ends the apply anyway

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)  # a beat in flight would make the release's If-Match stale
        try:
            raw, _ = self.lxd.get("profile", self.name)
            if (raw.get("config") or {}).get(HOLDER) == self.me:
                self.lxd.delete("profile", self.name)  # free: nothing of it stays behind in the project
        except LxdError:
            pass  # left held by a process that is gone: the next run takes it over


def _body(raw: dict) -> dict:
    return {"description": raw.get("description", ""), "devices": raw.get("devices") or {}}

"""A small recording stand-in for apply's Runner around HAProxy's reload (admin_socket.reload_haproxy):
before `systemctl reload` the admin socket is answered by the worker `old`; after it, each `show info`
takes the next of `looks` (the pid that answers, None for no answer, and whether the old worker still
runs), the last one repeating.  It is not HAProxy: what HAProxy does on a reload is tested against a
real one (tests/test_no_downtime.py)."""

from __future__ import annotations

from types import SimpleNamespace


class ReloadingHaproxy:
    def __init__(self, old: int | None = 1, looks: tuple[tuple[int | None, bool], ...] = ((2, False),)):
        self.old, self.looks, self.reloaded = old, list(looks), False
        self.look: tuple[int | None, bool] = (old, True)
        self.said: list[str] = []  # in order: `ask show info`, `alive? /proc/1`, `exec systemctl reload -- haproxy`
        self.warnings: list[str] = []
        self.lxd = SimpleNamespace(execute=self._execute)

    def _execute(self, container: str, argv: list[str]) -> tuple[int, str, str]:
        if argv[0] == "test":
            self.said.append(f"alive? {argv[-1]}")
            return (0 if self.look[1] else 1), "", ""
        if argv[0] == "journalctl":
            self.said.append(f"log of {argv[2]}")
            return 0, "Proxy subdomain1 started.\n[ALERT]    (412) : Starting frontend extra: cannot bind socket\n", ""
        self.said.append(f"ask {argv[-1]}")
        assert argv[0] == "perl" and argv[-1] == "show info", argv
        if self.reloaded:
            self.look = self.looks.pop(0) if len(self.looks) > 1 else self.looks[0]
        pid = self.look[0]
        return (0, f"Name: HAProxy\nVersion: 2.6.12\nPid: {pid}\nUptime_sec: 3\n", "") if pid else \
            (2, "", "cannot connect to /run/haproxy/admin.sock: No such file or directory\n")

    def exec(self, container: str, argv: list[str], what: str) -> str:
        self.said.append(f"exec {' '.join(argv)}")
        self.reloaded = self.reloaded or argv[:2] == ["systemctl", "reload"]
        return ""

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    step_error = staticmethod(RuntimeError)
    last_lines = staticmethod(lambda out, err: (out + err).strip())

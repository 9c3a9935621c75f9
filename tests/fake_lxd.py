"""A small recording fake of OUR LXD client (reconciler.lxd.Lxd's surface that apply uses), for unit
tests of orchestration: scheduling, skips, interrupts, ordering, record steps.  It keeps objects as
plain dicts and records every call; a call can be made to fail or to wait for a gate.  It is not LXD:
what the daemon does is tested against the real one (the tests marked lxd)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import LxdError, LxdNotFound
from reconciler.facts import BOOTED_ARGV, FACTS_SCRIPT


@dataclass
class Call:
    verb: str
    kind: str
    name: str
    body: Any = None


@dataclass
class FakeLxd:
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)  # (kind, name) -> raw JSON
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (container, path) -> bytes
    calls: list[Call] = field(default_factory=list)
    fail: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (verb, kind, name) -> LXD's message
    gates: dict[tuple[str, str, str], threading.Event] = field(default_factory=dict)  # wait before answering
    on_call: Callable[[Call], None] | None = None
    running: int = 0
    most_at_once: int = 0
    project: str = "default"
    where: str = "fake"
    local: bool = True
    clustered: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- bookkeeping ----------------------------------------------------------------------

    def _enter(self, verb: str, kind: str, name: str, body: Any = None) -> None:
        call = Call(verb, kind, name, body)
        with self._lock:
            self.calls.append(call)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.on_call:
                self.on_call(call)
            gate = self.gates.get((verb, kind, name))
            if gate is not None:
                assert gate.wait(10), f"gate {verb} {kind} {name} never opened"
            message = self.fail.get((verb, kind, name))
            if message:
                raise LxdError(message)
        finally:
            with self._lock:
                self.running -= 1

    def did(self, verb: str | None = None, kind: str | None = None) -> list[str]:
        """`verb kind name` of each call, in order, filtered."""
        return [f"{c.verb} {c.kind} {c.name}" for c in self.calls
                if (verb is None or c.verb == verb) and (kind is None or c.kind == kind)]

    # --- LXD objects ----------------------------------------------------------------------

    def get(self, kind: str, name: str) -> tuple[dict, str]:
        self._enter("get", kind, name)
        if (kind, name) not in self.objects:
            raise LxdNotFound(f"{kind} {name} not found")
        raw = self.objects[(kind, name)]
        return raw, f"etag-{len(str(raw))}"

    def create(self, kind: str, body: dict, target: str | None = None) -> None:
        self._enter("create", kind, body["name"], body)
        raw = {**body, "config": dict(body.get("config") or {})}
        if kind == "instance":
            raw.update(status="Stopped", architecture="x86_64", ephemeral=False, expanded_config={},
                       expanded_devices={})
        if kind == "network":
            raw["managed"] = True
        self.objects[(kind, body["name"])] = raw

    def put(self, kind: str, name: str, body: dict, etag: str) -> None:
        self._enter("put", kind, name, body)
        self.objects[(kind, name)] = {**self.objects.get((kind, name), {}), **body}

    def patch(self, kind: str, name: str, body: dict) -> None:
        self._enter("patch", kind, name, body)
        raw = self.objects.setdefault((kind, name), {"name": name, "config": {}})
        raw["config"] = {**(raw.get("config") or {}), **(body.get("config") or {})}

    def delete(self, kind: str, name: str) -> None:
        self._enter("delete", kind, name)
        self.objects.pop((kind, name), None)

    def rename(self, kind: str, old: str, new: str) -> None:
        self._enter("rename", kind, old, new)
        self.objects[(kind, new)] = {**self.objects.pop((kind, old)), "name": new}

    def set_state(self, name: str, action: str, force: bool = False, timeout: int = 30) -> None:
        self._enter(action, "instance", name)
        self.objects[("instance", name)]["status"] = "Running" if action in ("start", "restart") else "Stopped"

    def addresses(self, name: str) -> dict[str, str]:
        self._enter("addresses", "instance", name)
        return {"eth0": "10.203.99.2"}

    # --- inside containers ----------------------------------------------------------------

    def push_file(self, name: str, path: str, data: bytes, mode: str, uid: int, gid: int,
                  directory: bool = False) -> None:
        self._enter("push", "file", f"{name}:{path}", data)
        self.files[(name, path)] = data

    def read_file(self, name: str, path: str) -> bytes | None:
        self._enter("read", "file", f"{name}:{path}")
        return self.files.get((name, path))

    def execute(self, name: str, argv: list[str], timeout: int = 600) -> tuple[int, str, str]:
        """The facts script gets a minimal true answer (root, the record if one was pushed); `mv` and
        `rm` act on the fake's files; anything else succeeds silently."""
        if argv == BOOTED_ARGV:
            return 0, "", ""
        if argv[:3] == ["sh", "-c", FACTS_SCRIPT]:
            self._enter("exec", "facts", name)
            return 0, self._facts_answer(name, argv[4]), ""
        self._enter("exec", " ".join(argv[:1]), name, argv)
        if argv[:3] == ["mv", "-f", "--"]:
            self.files[(name, argv[4])] = self.files.pop((name, argv[3]))
        elif argv[:3] == ["rm", "-f", "--"]:
            self.files.pop((name, argv[3]), None)
        return 0, "", ""

    def _facts_answer(self, name: str, record_path: str) -> str:
        fields = ["os", "debian", "pm", "apt-get", "user", "root", "0", "group", "root", "0"]
        record = self.files.get((name, record_path)) if record_path else None
        if record is not None:
            fields += ["record", base64.b64encode(record).decode()]
        return "\0".join(fields + ["end"]) + "\0"

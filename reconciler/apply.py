"""Carries a Plan out through lxd.py: dependency order, bounded parallelism, a clear report.

A failed step stops its dependants only; everything else goes on.  Each step re-reads what
it changes and refuses if it moved since the plan, so a re-run always converges.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Callable

from . import provision
from .desired import MissingAddress, Provisioning
from .engine import Context, container_facts
from .lxd import Lxd, LxdError, StaleState, wait_for_address
from .plan import Action, Change, Plan
from .spec import REMOTES
from .state import IMAGE_KEY, NETWORK_DEFAULTED_KEYS, OWNER_KEY, instance_from_lxd, network_from_lxd, \
    profile_from_lxd, split_address, without_lxd_defaults

ADDRESS_TIMEOUT = 90.0
PORT_TIMEOUT = 15.0


@dataclass
class Outcome:
    change: Change
    status: str  # done | failed | skipped
    seconds: float = 0.0
    message: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def with_status(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        return not self.with_status("failed") and not self.with_status("skipped")


class StepError(Exception):
    """A step failed; the message says why in the user's terms."""


def apply_plan(plan: Plan, ctx: Context, lxd: Lxd, parallelism: int = 4,
               progress: Callable[[str, Outcome | None, Change], None] | None = None) -> Report:
    """Run every change as soon as what it waits for is done; at most `parallelism` at once."""
    steps = Steps(ctx, lxd)
    by_id = plan.by_id()
    sorter = TopologicalSorter(plan.graph)
    sorter.prepare()
    report, failed = Report(), set()
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max(1, parallelism)) as pool:
        while sorter.is_active():
            for cid in sorted(sorter.get_ready()):
                blocked = [d for d in plan.graph[cid] if d in failed]
                if blocked:
                    failed.add(cid)
                    report.outcomes.append(Outcome(by_id[cid], "skipped", message=f"{blocked[0]} did not succeed"))
                    sorter.done(cid)
                    continue
                if progress:
                    progress("start", None, by_id[cid])
                running[pool.submit(_timed, steps.run, by_id[cid])] = cid
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cid = running.pop(future)
                outcome = future.result()
                report.outcomes.append(outcome)
                if outcome.status != "done":
                    failed.add(cid)
                if progress:
                    progress("end", outcome, outcome.change)
                sorter.done(cid)
    return report


def _timed(run: Callable[[Change], None], change: Change) -> Outcome:
    start = time.monotonic()
    try:
        run(change)
        return Outcome(change, "done", time.monotonic() - start)
    except (LxdError, StepError, MissingAddress, OSError, ValueError) as err:
        return Outcome(change, "failed", time.monotonic() - start, str(err) or type(err).__name__)


class Steps:
    """One method per kind of change; each safe to run again after a failure."""

    def __init__(self, ctx: Context, lxd: Lxd):
        self.ctx, self.lxd = ctx, lxd
        self._facts: dict[str, provision.Facts] = {}
        self._lock = threading.Lock()

    def run(self, change: Change) -> None:
        kind, name = split_address(change.address)
        getattr(self, f"_{kind}")(change, name)

    # --- LXD objects --------------------------------------------------------------------

    def _network(self, change: Change, name: str) -> None:
        want = change.after
        if change.action == Action.DELETE:
            return self.lxd.delete("network", name)
        config = {**want["config"], OWNER_KEY: self.ctx.lab.lab}
        if change.action == Action.CREATE:
            return self.lxd.create("network", {"name": name, "type": want["type"],
                                               "description": want["description"], "config": config})
        raw, etag = self._fresh("network", name, change, network_from_lxd)
        kept = {k: v for k, v in raw["config"].items() if k in NETWORK_DEFAULTED_KEYS and k not in config}
        self.lxd.put("network", name, {"description": want["description"], "config": {**kept, **config}}, etag)

    def _profile(self, change: Change, name: str) -> None:
        want = change.after
        if change.action == Action.DELETE:
            return self.lxd.delete("profile", name)
        body = {"description": want["description"], "devices": want["devices"],
                "config": {**want["config"], OWNER_KEY: self.ctx.lab.lab}}
        if change.action == Action.CREATE:
            return self.lxd.create("profile", {"name": name, **body})
        _, etag = self._fresh("profile", name, change, profile_from_lxd)
        self.lxd.put("profile", name, body, etag)

    def _instance(self, change: Change, name: str) -> None:
        action = change.action
        if action in (Action.DELETE, Action.REPLACE):
            self._remove_instance(name)
        if action in (Action.CREATE, Action.REPLACE):
            self._create_instance(name, change.after)
        elif action == Action.UPDATE:
            self._update_instance(name, change)
        elif action == Action.START:
            self.lxd.set_state(name, "start")
        elif action == Action.STOP:
            self._stop(name)
        elif action == Action.RESTART:
            self._stop(name)
            self.lxd.set_state(name, "start")

    def _create_instance(self, name: str, want: dict) -> None:
        config = {**want["config"], OWNER_KEY: self.ctx.lab.lab, IMAGE_KEY: want["image"]}
        self.lxd.create("instance", {"name": name, "type": want["type"], "source": image_source(want["image"]),
                                     "profiles": want["profiles"], "config": config,
                                     "devices": want["devices"], "description": want["description"]})
        if want["state"] == "running":
            self.lxd.set_state(name, "start")

    def _update_instance(self, name: str, change: Change) -> None:
        raw, etag = self._fresh("instance", name, change, instance_from_lxd)
        want = change.after
        lxd_keys = {k: v for k, v in raw["config"].items() if k.startswith(("volatile.", "image."))}
        body = {"architecture": raw["architecture"], "ephemeral": raw["ephemeral"],
                "profiles": want["profiles"], "devices": want["devices"], "description": want["description"],
                "config": {**lxd_keys, **want["config"], OWNER_KEY: self.ctx.lab.lab, IMAGE_KEY: want["image"]}}
        self.lxd.put("instance", name, body, etag)

    def _remove_instance(self, name: str) -> None:
        raw, _ = self.lxd.get("instance", name)
        if raw.get("status") == "Running":
            self.lxd.set_state(name, "stop", force=True)
        self.lxd.delete("instance", name)

    def _stop(self, name: str) -> None:
        try:
            self.lxd.set_state(name, "stop", timeout=30)
        except LxdError:
            self.lxd.set_state(name, "stop", force=True)  # it did not shut down cleanly in time

    def _fresh(self, kind: str, name: str, change: Change, normalise) -> tuple[dict, str]:
        """The object as LXD has it now, with its ETag; refuse if it moved since the plan."""
        raw, etag = self.lxd.get(kind, name)
        now = normalise(raw).body
        compared = {k: v for k, v in now.items() if k != "state"}
        planned = {k: v for k, v in (change.before or {}).items() if k != "state"}
        if kind == "network":  # as the plan saw it: without the keys LXD filled in
            compared["config"] = without_lxd_defaults(now["config"], planned.get("config", {}))
        if compared != planned:
            raise StaleState(f"{change.address} changed since the plan was made; run plan again")
        return raw, etag

    # --- inside containers ----------------------------------------------------------------

    def _facts_of(self, cname: str, fresh: bool = False) -> provision.Facts:
        with self._lock:
            known = None if fresh else self._facts.get(cname)
        if known is None:
            self._exec(cname, provision.BOOTED_ARGV, "waiting for the container to finish booting")
            known = container_facts(self.lxd, cname, Provisioning())
            with self._lock:
                self._facts[cname] = known
        return known

    def _exec(self, cname: str, argv: list[str], what: str) -> str:
        code, out, err = self.lxd.execute(cname, argv)
        if code != 0:
            raise StepError(f"{what} failed (exit {code}):\n  " + _last_lines(out, err))
        return out

    def _package(self, change: Change, name: str) -> None:
        cname, package = name.split(":", 1)
        manager = self._facts_of(cname).package_manager
        self._exec(cname, provision.install_argv(manager, [package]), f"installing {package}")
        self._facts_of(cname, fresh=True)  # a package may add users and groups files need

    def _file(self, change: Change, name: str) -> None:
        cname, path = name.split(":", 1)
        if change.action == Action.DELETE:
            return self._delete_file(cname, path, change.before["type"])
        want = change.after
        facts = self._facts_of(cname)
        uid, gid = _id(facts.users, want["owner"], "user"), _id(facts.groups, want["group"], "group")
        if want["type"] == "directory":
            # "0" + mode: GNU chmod keeps a directory's setgid bit unless given five digits.
            argv = ["sh", "-c", 'mkdir -p "$1" && chmod "$2" "$1" && chown "$3" "$1"', "mkdir",
                    path, "0" + want["mode"], f"{uid}:{gid}"]
            return self._exec(cname, argv, f"creating directory {path}")
        self._write_file(cname, path, want, uid, gid)

    def _delete_file(self, cname: str, path: str, kind: str) -> None:
        if kind == "directory":  # only if empty: it may hold things that are not the lab's
            self._exec(cname, ["sh", "-c", 'rmdir "$1" 2>/dev/null || true', "rmdir", path], f"removing {path}")
        else:
            self._exec(cname, ["rm", "-f", "--", path], f"removing {path}")

    def _write_file(self, cname: str, path: str, want: dict, uid: int, gid: int) -> None:
        resource = self.ctx.desired[f"file.{cname}:{path}"]
        data = resource.deferred(self._addresses_for(resource))
        temp = f"{path}.reconciler-new"
        self._exec(cname, ["mkdir", "-p", path.rsplit("/", 1)[0] or "/"], f"creating the parent of {path}")
        self.lxd.push_file(cname, temp, data, want["mode"], uid, gid)
        check = resource.meta.get("check")
        if check:
            code, out, err = self.lxd.execute(cname, [a.replace("{}", temp) for a in check])
            if code != 0:
                self.lxd.execute(cname, ["rm", "-f", temp])
                raise StepError(f"{path}: `{' '.join(check)}` rejected the new file (exit {code}); the old one"
                                " stays live:\n  " + _last_lines(out, err))
        self._exec(cname, ["mv", "-f", temp, path], f"moving {path} into place")

    def _addresses_for(self, resource) -> dict[str, str]:
        """Live addresses of every container (waiting per NIC for those just started)."""
        known = dict(self.ctx.live.addresses())
        try:
            resource.deferred(known)
            return known
        except MissingAddress as missing:
            for cname in missing.containers:
                known[cname] = wait_for_address(self.lxd, cname, "eth0", ADDRESS_TIMEOUT)
            return known

    def _service(self, change: Change, name: str) -> None:
        cname, service = name.split(":", 1)
        resource = self.ctx.desired[change.address]
        want, ports = resource.body, resource.body.get("listening", [])
        have = self._service_state(cname, service, ports)
        trigger = change.action.word if change.action in (Action.RELOAD, Action.RESTART) else None
        if have and have.get("running") and have.get("listening", ports) != ports:
            trigger = trigger or resource.meta.get("on_change", "restart")  # running, but not on its ports
        for argv in provision.service_argvs(service, want, have, trigger):
            self._exec(cname, argv, " ".join(argv))
        if ports:
            self._wait_for_ports(cname, service, ports)

    def _service_state(self, cname: str, service: str, ports: list[int]) -> dict | None:
        self._facts_of(cname)  # waits for the boot to finish, once per container
        spec = provision.ServiceSpec(listens=ports)
        found = container_facts(self.lxd, cname, Provisioning(services={service: spec}))
        if service not in found.services:
            return None
        return {**found.services[service], "listening": sorted(found.listening.get(service, []))}

    def _log_of(self, cname: str, service: str) -> list[str]:
        """The service's recent log lines, its alerts and errors first among them."""
        _, log, _ = self.lxd.execute(cname, ["journalctl", "-u", service, "-n", "30", "--no-pager", "-o", "cat"])
        lines = log.strip().splitlines()
        alerts = [line for line in lines if any(w in line for w in ("ALERT", "rror", "ailed"))]
        return (alerts or lines)[-8:]

    def _wait_for_ports(self, cname: str, service: str, ports: list[int]) -> None:
        """A reload returns before the new processes bind: wait, bounded, for the ports to be theirs."""
        deadline = time.monotonic() + PORT_TIMEOUT
        while (self._service_state(cname, service, ports) or {}).get("listening") != ports:
            if time.monotonic() > deadline:
                raise StepError(f"{service} does not hold port(s) {', '.join(map(str, ports))} after"
                                f" {PORT_TIMEOUT:.0f}s; its log:\n  " + "\n  ".join(self._log_of(cname, service)))
            time.sleep(0.5)


def _last_lines(out: str, err: str) -> str:
    """What a failed command said (its stderr, else its stdout), last lines, indented."""
    return "\n  ".join((err.strip() or out.strip()).splitlines()[-12:])


def _id(table: dict[str, int], name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    if name not in table:
        raise StepError(f"no {what} {name!r} in the container")
    return table[name]


def image_source(image: str) -> dict:
    """lab.yaml's image -> LXD's `source`: a local alias, or remote:alias pulled by simplestreams."""
    remote, sep, alias = image.partition(":")
    if not sep:
        return {"type": "image", "alias": image}
    return {"type": "image", "mode": "pull", "server": REMOTES[remote], "protocol": "simplestreams",
            "alias": alias}

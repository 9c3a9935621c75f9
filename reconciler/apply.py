"""Carries a Plan out through lxd.py: dependency order, bounded parallelism, a clear report.

A failed step stops its dependants only; everything else goes on.  Steps that change an object
re-read it first and refuse if it moved since the plan, so a re-run always converges.  Inside a
container, a record of what was applied is written last (even after a failure), so the next plan
knows which files are the lab's and who moved what.

RECONCILER_SHUFFLE=SEED picks among ready steps in a seeded random order: with --parallelism 1,
a missing edge in the graph fails deterministically instead of hiding behind timing.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any

from .address import Address, Kind
from .admin_socket import NotAsked
from .context import Context
from .draining import drained, made_live
from .facts import BOOTED_ARGV, Facts, record_path, record_text
from .haproxy.runtime import RUNTIME_FIELDS, server_deltas
from .inside import MissingAddress, Provisioning, container_facts, record_key, render_file
from .kinds import REGISTRY, object_kind
from .kinds import file as file_kind
from .kinds.runner import Runner
from .lxd import Lxd, LxdError, StaleState, wait_for_address
from .outcome import Outcome, Report, Status
from .plan import Action, Change, Plan, Step, redact
from .state import RECORD_TAG, Body, digest

ADDRESS_TIMEOUT = 90.0


class StepError(Exception):
    """A step failed; the message says why in the user's terms."""


Progress = Callable[[str, Step, Change, "Outcome | None"], None]


@dataclass(frozen=True)
class RecordStep:
    """The last step inside a container: write down what was applied there."""

    container: str


def apply_plan(plan: Plan, ctx: Context, lxd: Lxd, parallelism: int = 4, progress: Progress | None = None,
               shuffle: random.Random | None = None) -> Report:
    """Run every step as soon as what it waits for is done; at most `parallelism` at once.
    Ctrl-C stops starting steps and waits for the running ones; a second Ctrl-C abandons them."""
    runner = StepRunner(ctx, lxd, plan)
    report = Scheduler(plan, runner, max(1, parallelism), progress, shuffle).run()
    report.warnings = runner.warnings + report.warnings
    return report


class Scheduler:
    def __init__(self, plan: Plan, runner: StepRunner, parallelism: int, progress: Progress | None,
                 shuffle: random.Random | None):
        self.plan, self.runner, self.parallelism = plan, runner, parallelism
        self.progress, self.shuffle = progress, shuffle
        self.changes = plan.steps()
        self.graph: dict[Hashable, frozenset] = {**_record_steps(plan)}
        for step, waits in plan.graph.items():
            self.graph[step] = waits
        self.report = Report()
        self.failed: set[Hashable] = set()
        self.succeeded: set[Hashable] = set()
        self.recorded: set[RecordStep] = set()

    def run(self) -> Report:
        with first_interrupt_only_stops_starting(self._interrupted):
            return self._run()

    def _interrupted(self) -> None:
        self.report.interrupted = True

    def _run(self) -> Report:
        sorter = TopologicalSorter(self.graph)
        sorter.prepare()
        ready: list[Hashable] = []
        running: dict[Future, Hashable] = {}
        pool = ThreadPoolExecutor(self.parallelism)
        try:
            while sorter.is_active() or running:
                if not self.report.interrupted:
                    ready += sorted(sorter.get_ready(), key=_key)
                    while ready and len(running) < self.parallelism:
                        item = ready.pop(self.shuffle.randrange(len(ready)) if self.shuffle else 0)
                        future = self._start(pool, item, sorter)
                        if future is not None:
                            running[future] = item
                if not running:
                    if self.report.interrupted or not sorter.is_active():
                        break
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)  # a first Ctrl-C lets it go on
                for future in finished:
                    item = running.pop(future)
                    sorter.done(item)
                    self._finish(item, future.result())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if self.report.interrupted:
            self._not_started(set(self.graph) - self.succeeded - self.failed - self.recorded)
            for item in self.graph:  # what was done inside a container is still written down
                if isinstance(item, RecordStep) and item not in self.recorded and self.graph[item] & self.succeeded:
                    self._finish(item, self._record(item))
        return self.report

    def _start(self, pool: ThreadPoolExecutor, item: Hashable, sorter: TopologicalSorter) -> Future | None:
        if isinstance(item, RecordStep):
            if not self.graph[item] & self.succeeded:
                sorter.done(item)  # nothing was done inside: nothing to record
                return None
            return pool.submit(self._record, item)
        step: Step = item  # type: ignore[assignment]
        blocked = [d for d in self.graph[step] if d in self.failed]
        if blocked:
            self.failed.add(step)
            self.report.outcomes.append(Outcome(step, self.changes[step], Status.SKIPPED,
                                                message=f"{blocked[0]} did not succeed"))
            sorter.done(step)
            return None
        if self.progress:
            self.progress("start", step, self.changes[step], None)
        return pool.submit(self.runner.timed, step, self.changes[step])

    def _finish(self, item: Hashable, outcome: Outcome | str | None) -> None:
        if isinstance(item, RecordStep):
            self.recorded.add(item)
            if outcome:
                self.report.warnings.append(str(outcome))
            return
        assert isinstance(outcome, Outcome)
        self.report.outcomes.append(outcome)
        (self.succeeded if outcome.status.succeeded else self.failed).add(item)
        if self.progress:
            self.progress("end", outcome.step, outcome.change, outcome)

    def _record(self, item: RecordStep) -> str | None:
        steps = [s for s in self.graph[item] if isinstance(s, Step)]
        try:
            self.runner.write_record(item.container, [(self.changes[s], s in self.succeeded) for s in steps])
            return None
        except (LxdError, StepError, OSError) as err:
            return f"{item.container}: the record of what was applied could not be written: {err}"

    def _not_started(self, items: Iterable[Hashable]) -> None:
        for item in sorted((i for i in items if isinstance(i, Step)), key=_key):
            self.report.outcomes.append(Outcome(item, self.changes[item], Status.NOT_STARTED,
                                                message="apply was interrupted"))


@contextmanager
def first_interrupt_only_stops_starting(on_first: Callable[[], None]) -> Iterator[None]:
    """While apply runs, a first Ctrl-C (SIGINT) only marks the run interrupted, wherever it lands: the
    scheduler starts nothing more and waits for the running steps.  A second one abandons them
    (KeyboardInterrupt).  Only the main thread can own the handler; elsewhere Python's stays.  A run
    started with SIGINT ignored (a background job of a script, `nohup`) keeps ignoring it, as it was asked."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    seen: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if seen:
            raise KeyboardInterrupt
        seen.append(signum)
        on_first()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _key(item: Hashable) -> tuple:
    if isinstance(item, RecordStep):
        return (99, item.container)
    assert isinstance(item, Step)
    return item.sort_key()


def _record_steps(plan: Plan) -> dict[Hashable, frozenset]:
    """One record step per container that has steps inside it, after all of them (an HAProxy server's
    runtime state lives in HAProxy, not in the record)."""
    inside: dict[str, set[Step]] = {}
    for step in plan.graph:
        if step.address.kind.inside and step.address.kind != Kind.SERVER:
            inside.setdefault(step.address.name, set()).add(step)
    return {RecordStep(c): frozenset(steps) for c, steps in inside.items()}


class StepRunner:
    """Runs one step through its kind's apply function, and is what that function may use (the
    `Runner` of kinds/runner.py): LXD, the container's facts, the lab's file contents."""

    def __init__(self, ctx: Context, lxd: Lxd, plan: Plan):
        self.ctx, self.lxd, self.plan = ctx, lxd, plan
        self.lab_name = ctx.lab.lab
        self.changed: set[Address] = set()  # inside things this run wrote
        self.applied: dict[Address, Body] = {}  # what was applied, when it differs from the plan's after
        self._facts: dict[str, Facts] = {}
        self._snapshots: dict[str, Facts] = {}
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def timed(self, step: Step, change: Change) -> Outcome:
        start = time.monotonic()
        try:
            run: Runner = self  # mypy holds StepRunner to what kinds may use
            with drained(run, step, self.plan.drains.get(step, ()), self.address):
                changed = REGISTRY[step.address.kind].apply(run, change, step.action)
            if step in self.plan.runtime:
                written = (self.applied.get(change.address) or change.after or {}).get("content")
                made_live(run, self.plan.runtime[step], self.address, str(written or ""))
            if changed and step.address.kind.inside:
                with self._lock:
                    self.changed.add(step.address)
            status = Status.UNCHANGED if changed is False and step.action == Action.CONVERGE else Status.DONE
            return Outcome(step, change, status, time.monotonic() - start)
        except (LxdError, StepError, MissingAddress, NotAsked, OSError, ValueError) as err:
            return Outcome(step, change, Status.FAILED, time.monotonic() - start, str(err) or type(err).__name__)

    # --- LXD objects ----------------------------------------------------------------------------

    def fresh(self, change: Change) -> tuple[dict, str]:
        """The object as LXD has it now, with its ETag; refuse if it moved since the plan."""
        kind = change.address.kind
        raw, etag = self.lxd.get(kind.value, change.address.name)
        rules = object_kind(kind)
        found = rules.from_lxd(raw)
        if found is None:
            raise StaleState(f"{change.address} is no longer an object the lab can own; run plan again")
        now = rules.comparable(found, _as_resource(change))  # as the plan saw it
        untagged = ("image",) if not now.body.get("image") else ()  # an instance being adopted records none yet
        moved = _moved(change.before or {}, now.body, ignore=("state",) + untagged)
        if moved:
            raise StaleState(f"{change.address} changed since the plan was made ({moved}); run plan again")
        return raw, etag

    # --- inside containers ------------------------------------------------------------------------

    def exec(self, container: str, argv: list[str], what: str) -> str:
        code, out, err = self.lxd.execute(container, argv)
        if code != 0:
            raise StepError(f"{what} failed (exit {code}):\n  " + self.last_lines(out, err))
        return out

    def facts(self, container: str, fresh: bool = False) -> Facts:
        """Users, groups and the package manager, read once the container has finished booting."""
        with self._lock:
            known = None if fresh else self._facts.get(container)
        if known is None:
            self.exec(container, BOOTED_ARGV, "waiting for the container to finish booting")
            known = container_facts(self.lxd, container, _EMPTY, files=())
            with self._lock:
                self._facts[container] = known
        return known

    def read(self, container: str, **only: Any) -> Facts:
        """A fresh read of just these files, packages or services."""
        return container_facts(self.lxd, container, _EMPTY, **only)

    def ids(self, container: str, owner: str, group: str) -> tuple[int, int]:
        facts = self.facts(container)
        return _id(facts.users, owner, "user"), _id(facts.groups, group, "group")

    def check_unmoved(self, change: Change) -> None:
        """A file to update or delete must still be as the plan saw it."""
        container = change.address.name
        with self._lock:
            snapshot = self._snapshots.get(container)
        if snapshot is None:
            paths = {c.address.key for c in self.plan.changes if c.address.kind == Kind.FILE
                     and c.address.name == container}
            snapshot = self.read(container, files=sorted(paths))
            with self._lock:
                self._snapshots[container] = snapshot
        found = snapshot.files.get(change.address.key)
        now = redact(file_kind.found_body(found, snapshot, True), change.secret) if found else None
        before = redact(change.before, change.secret) or {}
        how = "it is gone" if now is None else _moved(before, now, ignore=("content",))  # sha256 covers it
        if how:
            raise StaleState(f"{change.address} changed since the plan was made ({how}); run plan again")

    def file_bytes(self, change: Change) -> bytes:
        """The bytes to write: from the plan when it carries them, else rendered from the lab (secrets;
        contents that needed live addresses, which are read now, waiting for new containers)."""
        after = change.after or {}
        content = after.get("content")
        if isinstance(content, str) and content != file_kind.UNKNOWN and not change.secret:
            return content.encode()
        waits = change.meta.waits_for
        data = render_file(self.ctx.lab, self.ctx.base_dir, change.address.name, change.address.key,
                           self.addresses(waits))
        planned = after.get("sha256")
        if not waits and planned not in (None, file_kind.UNKNOWN) and file_kind.sha256(data) != planned:
            raise StaleState(f"{change.address}: the lab's files changed since the plan was made; run plan again")
        self._only_planned_servers(change, data)
        self.applied[change.address] = {**after, "sha256": file_kind.sha256(data),
                                        "content": file_kind.shown(data, change.secret)}
        return data

    def _only_planned_servers(self, change: Change, data: bytes) -> None:
        """A haproxy.cfg whose server changes the plan makes live without a reload (with addresses only apply
        knows) must differ from the live file in nothing else: what else differs would need the reload the
        plan dropped.  Refused, before it is written, rather than reloaded: the plan a reviewer approved said
        `runtime`."""
        sets = self.plan.runtime.get(Step(change.address, Action.UPDATE), ())
        if not sets:
            return
        before = (change.before or {}).get("content")
        found = server_deltas(before, data.decode("utf-8", "replace")) if isinstance(before, str) else None
        planned = {(r.backend, r.server, r.field) for r in sets}
        values = {(r.backend, r.server, r.field): r.value for r in sets if r.field in RUNTIME_FIELDS}
        beyond = sorted({f"{d.backend}/{d.server} {d.field}" for d in found or ()
                         if (d.backend, d.server, d.field) not in planned
                         or values.get((d.backend, d.server, d.field), d.value) != d.value})
        if found is None or beyond:
            what = "other lines" if found is None else ", ".join(beyond)
            raise StaleState(f"{change.address}: the file to write differs from the live one in {what}, beyond what"
                             f" the plan makes live without reloading HAProxy ({', '.join(map(str, sets))});"
                             " nothing was written: run plan again")

    def address(self, container: str) -> str:
        return self.addresses([container])[container]

    def nic_address(self, container: str, nic: str) -> str:
        return wait_for_address(self.lxd, container, nic, ADDRESS_TIMEOUT)

    def addresses(self, containers: Iterable[str]) -> dict[str, str]:
        """The live address of each container, waiting (bounded, per NIC) for one just started."""
        return {c: wait_for_address(self.lxd, c, "eth0", ADDRESS_TIMEOUT) for c in containers}

    def write_record(self, container: str, steps: list[tuple[Change, bool]]) -> None:
        """The record inside a container: what was applied there, by digest; what failed keeps its old entry."""
        path = record_path(self.lab_name)
        record = dict(self.read(container, record=path).record or {})
        for change, succeeded in steps:
            key = record_key(change.address)
            if not succeeded:
                continue
            if Action.DELETE in change.actions or change.after is None:  # deleted, or converged away
                record.pop(key, None)
            elif change.after is not None:
                record[key] = digest(self.applied.get(change.address, change.after))
        self.exec(container, ["mkdir", "-p", "--", path.rsplit("/", 1)[0]], "creating the record's folder")
        self.lxd.push_file(container, path, record_text(self.lab_name, record).encode(), "0600", 0, 0)
        if container not in self.ctx.recorded:
            raw, _ = self.lxd.get("instance", container)
            self.lxd.patch("instance", container, {"config": {RECORD_TAG: "true"},
                                                   "description": raw.get("description", "")})

    def warn(self, message: str) -> None:
        """Said in the report: something apply did beyond the plan, and why."""
        with self._lock:
            self.warnings.append(message)

    @staticmethod
    def step_error(message: str) -> StepError:
        return StepError(message)

    @staticmethod
    def last_lines(out: str, err: str) -> str:
        """What a failed command said (its stderr, else its stdout), last lines, indented."""
        return "\n  ".join((err.strip() or out.strip()).splitlines()[-12:])


def _as_resource(change: Change):
    from .state import Resource
    return Resource(change.address, change.after or {}) if change.after is not None else None


def _moved(before: Mapping[str, Any], now: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """'' if equal, else which fields differ (for the refusal message)."""
    fields = sorted(k for k in set(before) | set(now) if k not in ignore and before.get(k) != now.get(k))
    return ", ".join(fields)


def _id(table: Mapping[str, int], name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    if name not in table:
        raise StepError(f"no {what} {name!r} in the container")
    return table[name]


_EMPTY = Provisioning()  # reads of only some things name them instead

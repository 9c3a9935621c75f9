"""Apply's side of the drains a plan carries (`Plan.drains`, planned by disruption.py): before a step that
takes a container away, its HAProxy servers are set to `drain` through HAProxy's admin socket and apply
waits, bounded, for their sessions to end; after the step their health is forced down and they are set
`ready`, and the step is done only once HAProxy's health check has brought them up again (bounded: a
server that stays down fails the step with what HAProxy says about it).  A stopped container's servers
stay drained; a replaced one's are not waited for (later steps provision it: its checks bring it in).

HAProxy is reached by an exec in its container (the socket is a Unix socket there).  A server HAProxy
does not know yet (added by this apply), or an HAProxy that cannot be asked (not running, no perl),
is not drained: the report says so and the step goes on, as it would have without draining.  A server
that was down before the step is set ready after it but not waited for: its checks bring it in if ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from .admin_socket import POLL, NotAsked, ask, reload_haproxy
from .haproxy.runtime import (
    ADD,
    ADDR,
    DEL,
    NAME,
    SHOW_STAT,
    ServerStat,
    UnsafeValue,
    add_server,
    del_server,
    enable_health,
    force_down,
    parse_stat,
    server_words,
    set_address,
    set_field,
    set_state,
)
from .kinds.runner import Runner
from .plan import Action, Drain, RuntimeSet, Step

# How HAProxy says it obeyed `set server B/S addr`, which it answers even then: "IP changed from 'A' to
# 'B' ...", or, when a moved container kept its address, "no need to change the addr, no need to change the
# port by 'stats socket command'".
OBEYED = ("changed from", "no need to change")
ADDED, DELETED = "New server registered.", "Server deleted."  # how HAProxy says it added or removed a server


def order(run: Runner, d: Drain, command: str) -> None:
    """A command HAProxy answers with nothing when it obeys (or, setting an address, with OBEYED's words)."""
    answer = ask(run, d.proxy, d.socket, command).strip()
    if answer and not any(words in answer for words in OBEYED):
        raise run.step_error(f"HAProxy refused `{command}`: {answer}")


def made_live(run: Runner, sets: tuple[RuntimeSet, ...], address: Callable[[str], str], written: str) -> None:
    """haproxy.cfg's new server settings, through the runtime API (the file is written: no reload).
    `address`: a container's live IPv4, which the file was just written with; `written`: the file.  Where
    HAProxy refuses to add or remove a server (a version without dynamic servers), it is reloaded instead:
    the file is written and was checked with `haproxy -c`, and a reload is hitless."""
    for r in sets:
        try:
            if r.field == ADD:
                _add(run, r, written)
            elif r.field == DEL:
                _remove(run, r)
            else:
                command = set_address(r.backend, r.server, address(_container(r)), r.value) if r.field == ADDR \
                    else set_field(r.backend, r.server, r.field, r.value)
                answer = ask(run, r.proxy, r.socket, command).strip()
                if answer and not (r.field == ADDR and any(words in answer for words in OBEYED)):
                    raise run.step_error(f"HAProxy refused `{command}`: {answer}")
        except Refused as why:
            run.warn(f"{r.proxy}: {why}; HAProxy was reloaded instead")
            reload_haproxy(run, r.proxy, r.socket)
            return
        except ValueError as bad:  # UnsafeValue, or an address that is not IPv4
            raise run.step_error(str(bad)) from None


class Refused(Exception):
    """HAProxy would not add or remove a server at runtime: what it said."""


def _add(run: Runner, r: RuntimeSet, written: str) -> None:
    """`add server` with the words of its line in the file just written, then its health checks on and its
    health down, then ready: it serves once its checks pass (a server HAProxy adds starts in maintenance)."""
    words = server_words(written, r.backend, r.server)
    if words is None:
        raise run.step_error(f"{r.backend}/{r.server} is not in the haproxy.cfg just written")
    command = add_server(r.backend, r.server, words)
    answer = ask(run, r.proxy, r.socket, command).strip()
    if ADDED not in answer:
        raise Refused(f"HAProxy refused `{command}`: {answer}")
    then = ([enable_health(r.backend, r.server), force_down(r.backend, r.server)] if "check" in words else []) \
        + [set_state(r.backend, r.server, "ready")]
    for command in then:
        answer = ask(run, r.proxy, r.socket, command).strip()
        if answer:
            raise run.step_error(f"HAProxy refused `{command}`: {answer}")


def _remove(run: Runner, r: RuntimeSet) -> None:
    """Maintenance (no new requests), its sessions ended (bounded: `value` seconds), then `del server`."""
    state = set_state(r.backend, r.server, "maint")
    answer = ask(run, r.proxy, r.socket, state).strip()
    if answer:
        raise Refused(f"HAProxy refused `{state}`: {answer}")
    deadline = time.monotonic() + r.value
    while True:
        answer = ask(run, r.proxy, r.socket, del_server(r.backend, r.server)).strip()
        if DELETED in answer:
            return
        if "connection" not in answer.lower():  # anything but "still has connections": a refusal
            raise Refused(f"HAProxy refused `{del_server(r.backend, r.server)}`: {answer}")
        if time.monotonic() >= deadline:
            raise Refused(f"HAProxy did not remove {r.backend}/{r.server} within {r.value}s: {answer}")
        time.sleep(POLL)  # sessions still open: `del server` is refused until they end


def _container(r: RuntimeSet) -> str:
    if not NAME.fullmatch(r.container):
        raise UnsafeValue(f"container {r.container!r} is not a container's name")
    return r.container


def stats(run: Runner, drains: Iterable[Drain]) -> dict[tuple[str, str], ServerStat]:
    """`show stat` of every HAProxy these servers are in, keyed by (backend, server)."""
    out: dict[tuple[str, str], ServerStat] = {}
    for proxy, socket in dict.fromkeys((d.proxy, d.socket) for d in drains):
        try:
            out.update(parse_stat(ask(run, proxy, socket, SHOW_STAT)))
        except UnsafeValue as bad:
            raise NotAsked(str(bad)) from None
    return out


@contextmanager
def drained(run: Runner, step: Step, drains: tuple[Drain, ...], address: Callable[[str], str]) -> Iterator[None]:
    """Drain before the body, bring back after it (`address`: the container's live IPv4, for a move)."""
    try:
        known = stats(run, drains)
    except NotAsked as why:
        run.warn(f"{step}: its HAProxy servers ({', '.join(map(str, drains))}) were not drained: {why}")
        yield
        return
    present = tuple(d for d in drains if (d.backend, d.server) in known)  # a server this apply adds is not there yet
    for d in present:
        order(run, d, set_state(d.backend, d.server, "drain"))
    _wait_sessions_end(run, step, present)
    try:
        yield
    except BaseException:
        _ready_unchecked(run, [d for d in present if d.then != "away"])  # the health check keeps a broken one out
        raise
    was_up = {d for d in present if known[(d.backend, d.server)].up}  # one down before is not waited for after
    _bring_back(run, step, [d for d in present if d.then != "away"], address, was_up)


def _wait_sessions_end(run: Runner, step: Step, drains: tuple[Drain, ...]) -> None:
    if not drains:
        return
    deadline = time.monotonic() + max(d.drain_seconds for d in drains)
    while True:
        known = stats(run, drains)
        busy = {d: s.sessions for d in drains if (s := known.get((d.backend, d.server))) and s.sessions}
        if not busy:
            return
        if time.monotonic() >= deadline:
            left = ", ".join(f"{d} {n}" for d, n in busy.items())
            run.warn(f"{step}: sessions still open after the drain's wait ({left}); went on")
            return
        time.sleep(POLL)


def _ready_unchecked(run: Runner, drains: list[Drain]) -> None:
    for d in drains:
        try:
            order(run, d, set_state(d.backend, d.server, "ready"))
        except Exception as err:  # noqa: BLE001 - the step's own error is the one to report
            run.warn(f"{d}: could not be set back to ready: {err}")


def _bring_back(run: Runner, step: Step, drains: list[Drain], address: Callable[[str], str],
                was_up: set[Drain]) -> None:
    """Health forced down, state ready: only passing checks, from now on, let requests reach it again.  The
    step waits for those that were up before it (one that was down may well stay so: not the step's doing)."""
    for d in drains:
        if step.action == Action.MOVE:
            order(run, d, set_address(d.backend, d.server, address(step.address.name), d.port))
        if d.checked:
            order(run, d, force_down(d.backend, d.server))
        order(run, d, set_state(d.backend, d.server, "ready"))
    checked = [d for d in drains if d.checked and d.then == "ready" and d in was_up]
    if not checked:
        return
    deadline = time.monotonic() + max(d.ready_seconds for d in checked)
    while True:
        known = stats(run, checked)
        down = [(d, known.get((d.backend, d.server))) for d in checked]
        down = [(d, s) for d, s in down if s is None or not s.up]
        if not down:
            return
        if time.monotonic() >= deadline:
            said = "; ".join(f"{d}: {s.said() if s else 'no longer in HAProxy'}" for d, s in down)
            raise run.step_error(f"not healthy again within {max(d.ready_seconds for d in checked):g}s after the"
                                 f" {step.action.word}; HAProxy says {said}")
        time.sleep(POLL)

"""An HAProxy server's runtime state: its weight and its admin state (ready, drain, maint), as HAProxy's
admin socket reports them (`show servers state`, read at plan time by the HAProxy container's facts exec).

lab.yaml's weight (HAProxy's default 1) and `ready` are what every server should have.  One set otherwise
by hand through the socket is drift: plan shows it as an update of `server.PROXY:BACKEND/SERVER`, and apply
puts it back through the same socket, without a reload.  A server comes and goes with haproxy.cfg (through
the runtime API where it can: disruption.py); one HAProxy runs without although lab.yaml names it (an
apply cut short between the file and the socket, a `del server` by hand), or runs although lab.yaml does
not, is drift put right by a reload (runtime_drift.py decides which servers are compared).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..address import Address, Kind
from ..admin_socket import reload_haproxy
from ..haproxy.runtime import UnsafeValue, client_argv, set_field, set_state
from ..plan import Action, Change

if TYPE_CHECKING:
    from ..lxd import RawState
    from .contract import Chosen
    from .runner import Runner

KIND = Kind.SERVER
RANK = 90  # plan order: after the service (HAProxy's reload) that would put it back anyway
SHAPE = ("octagon", "#d9ead3")
ABSENT = "not in HAProxy's runtime state"
IN_HAPROXY = "in_haproxy"  # a server HAProxy runs without (or with) against lab.yaml: a reload puts it right
REPLACE_FIELDS: tuple[str, ...] = ()


def deletable(address: Address) -> bool:
    """A server leaves with haproxy.cfg's line, never through its runtime state."""
    return False


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    return {}  # HAProxy's runtime state is not read by import


def commands(change: Change) -> list[str]:
    """The runtime API commands that take the server from the plan's `before` to its `after`."""
    backend, _, name = change.address.key.partition("/")
    before, after = change.before or {}, change.after or {}
    out = []
    if "weight" in after and after["weight"] != before.get("weight"):
        out.append(set_field(backend, name, "weight", int(after["weight"])))
    if "state" in after and after["state"] != before.get("state"):
        out.append(set_state(backend, name, str(after["state"])))
    return out


def apply(run: Runner, change: Change, action: Action) -> bool:
    """Each command through HAProxy's admin socket, which answers nothing when it obeys; a server HAProxy
    runs without (or with) against haproxy.cfg, by a reload (haproxy.cfg is as lab.yaml says: the plan
    writes it first)."""
    socket = str(change.meta.payload.get("socket", ""))
    if IN_HAPROXY in (change.after or {}):
        reload_haproxy(run, change.address.name, socket)
        return True
    try:
        sent = [(c, client_argv(socket, c)) for c in commands(change)]
    except UnsafeValue as bad:
        raise run.step_error(str(bad)) from None
    for command, argv in sent:
        answer = run.exec(change.address.name, argv, f"asking HAProxy to `{command}`").strip()
        if answer:
            raise run.step_error(f"HAProxy refused `{command}`: {answer}")
    return bool(sent)

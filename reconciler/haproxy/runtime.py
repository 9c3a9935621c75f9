"""HAProxy's runtime API (the admin socket, `stats socket ... level admin`): the commands apply sends to
drain a server and put it back, what `show stat` says about servers, and what `show servers state` says
(read at plan time, by the facts exec: a server changed by hand through the socket is drift).  Pure: the caller runs the
client argv inside the HAProxy container (the socket is a Unix socket there, reachable from nowhere else).

Every value that reaches the socket is checked here, whatever built it (a saved plan is a file anyone
can edit): a backend or server is a haproxy.cfg name, an address IPv4, a port a number; the command is one
argv item, never shell text.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from dataclasses import dataclass

# Debian's images have no socat, but perl (perl-base is essential); the script takes the socket and the
# command as its arguments.  Where perl is missing, apply says so and goes on without draining.
CLIENT = ("use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0])"
          ' or die "cannot connect to $ARGV[0]: $!\\n"; print $s "$ARGV[1]\\n"; print while <$s>;')
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
PATH = re.compile(r"/[A-Za-z0-9._@+/-]*")
STATES = ("ready", "drain", "maint")


class UnsafeValue(ValueError):
    """A value that may not reach the admin socket."""


def client_argv(socket: str, command: str) -> list[str]:
    """The argv that sends one command to the admin socket and prints HAProxy's answer."""
    if not PATH.fullmatch(socket):
        raise UnsafeValue(f"admin socket {socket!r} is not an absolute path")
    if "\n" in command or ";" in command:  # one command: the CLI splits on ';' and newlines
        raise UnsafeValue(f"{command!r} is not one command")
    return ["perl", "-e", CLIENT, socket, command]


def _server(backend: str, server: str) -> str:
    for what, name in (("backend", backend), ("server", server)):
        if not NAME.fullmatch(name):
            raise UnsafeValue(f"{what} {name!r} is not a haproxy.cfg name")
    return f"{backend}/{server}"


def set_state(backend: str, server: str, state: str) -> str:
    if state not in STATES:
        raise UnsafeValue(f"{state!r} is not one of {STATES}")
    return f"set server {_server(backend, server)} state {state}"


def force_down(backend: str, server: str) -> str:
    """Its health to down: only `rise` passing checks from now on bring it up."""
    return f"set server {_server(backend, server)} health down"


def set_address(backend: str, server: str, address: str, port: int) -> str:
    ip = ipaddress.IPv4Address(address)
    if not 1 <= int(port) <= 65535:
        raise UnsafeValue(f"port {port!r} is not 1-65535")
    return f"set server {_server(backend, server)} addr {ip} port {int(port)}"


SHOW_STAT = "show stat"


@dataclass(frozen=True)
class ServerStat:
    """One server's line of `show stat`, the parts apply reads."""

    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2" (going down), "DOWN 1/2" (going up), no check
    sessions: int  # scur: current sessions
    check_status: str  # L7OK, L4CON, L7STS, ...
    check_desc: str  # HAProxy's words about the last check
    last_check: str  # last_chk: the reply or error of the last check

    @property
    def up(self) -> bool:
        return self.status in ("UP", "no check")

    def said(self) -> str:
        """What HAProxy says about it, in its own words."""
        words = [self.status] + [w for w in (self.check_status, self.check_desc, self.last_check) if w]
        return ", ".join(dict.fromkeys(words))


def parse_stat(text: str) -> dict[tuple[str, str], ServerStat]:
    """`show stat` (CSV, a `# ` header) as {(backend, server): ServerStat}, servers only."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise UnsafeValue("HAProxy's `show stat` answered: " + (" ".join(lines[:3]) or "nothing"))
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:]] + lines[1:])))
    out = {}
    for row in rows:
        if row.get("svname") in (None, "FRONTEND", "BACKEND"):
            continue
        out[(row["pxname"], row["svname"])] = ServerStat(
            row.get("status", ""), int(row.get("scur") or 0), row.get("check_status", ""),
            row.get("check_desc", ""), row.get("last_chk", ""))
    return out


# --- a server's weight and maxconn, without a reload ------------------------------------------------

RUNTIME_FIELDS = ("weight", "maxconn")
_LIMITS = {"weight": (0, 256), "maxconn": (1, 1_000_000)}


def set_field(backend: str, server: str, field: str, value: int) -> str:
    """The command that sets a server's weight or maxconn as haproxy.cfg now says."""
    low, high = _LIMITS.get(field, (1, 0))
    if not low <= int(value) <= high:
        raise UnsafeValue(f"{field} {value!r} is not one HAProxy's runtime API takes ({low}-{high})")
    if field == "weight":
        return f"set weight {_server(backend, server)} {int(value)}"
    return f"set maxconn server {_server(backend, server)} {int(value)}"


def runtime_only(before: str, after: str) -> list[tuple[str, str, str, int]] | None:
    """(backend, server, field, value) that take a running HAProxy from haproxy.cfg `before` to `after`
    through the runtime API, or None when anything else differs (a reload is needed)."""
    changed = changed_lines(before, after)
    if changed is None:
        return None
    out: list[tuple[str, str, str, int]] = []
    for section, a, b in changed:
        found = _server_delta(section, a, b)
        if found is None:
            return None
        out += found
    return out


def changed_lines(before: str, after: str) -> list[tuple[str, str, str]] | None:
    """(section header, old line, new line) of each line that differs between two haproxy.cfg texts of the
    same length; None when their lengths differ (a line added or removed: never a runtime change)."""
    old, new = before.splitlines(), after.splitlines()
    if len(old) != len(new):
        return None
    out = []
    section = ""
    for a, b in zip(old, new):
        if not a.startswith((" ", "\t")):
            section = a
        if a != b:
            out.append((section, a, b))
    return out


def _server_delta(section: str, before: str, after: str) -> list[tuple[str, str, str, int]] | None:
    head = section.split()
    old, new = _server_words(before), _server_words(after)
    if len(head) != 2 or head[0] != "backend" or old is None or new is None:
        return None
    (old_rest, old_fields), (new_rest, new_fields) = old, new
    if old_rest != new_rest or set(old_fields) - set(new_fields) - {"weight"}:
        return None  # more than weight or maxconn moved, or a maxconn was dropped (no runtime value means none)
    name = old_rest[1]
    changed = [(f, new_fields.get(f, 1)) for f in RUNTIME_FIELDS if new_fields.get(f, 1 if f == "weight" else None)
               != old_fields.get(f, 1 if f == "weight" else None)]
    return [(head[1], name, f, int(v)) for f, v in changed]


def _server_words(line: str) -> tuple[list[str], dict[str, int]] | None:
    """A `server` line's words but weight and maxconn, and those two; None for another line."""
    words = line.split()
    if len(words) < 3 or words[0] != "server":
        return None
    rest, fields, i = [], {}, 0
    while i < len(words):
        if words[i] in RUNTIME_FIELDS and i + 1 < len(words) and words[i + 1].isdigit():
            fields[words[i]] = int(words[i + 1])
            i += 2
        else:
            rest.append(words[i])
            i += 1
    return rest, fields


# --- a server's address, without a reload ---------------------------------------------------------

# Where plan does not know a container's new address yet (a replace), it renders haproxy.cfg with a stand-in
# from TEST-NET-1 (RFC 5737: documentation only, never a lab's) and compares that with the live file.
STAND_IN_NET = ipaddress.IPv4Network("192.0.2.0/24")


def stand_ins(containers: list[str]) -> dict[str, str] | None:
    """A stand-in address for each container, in name order; None when there are more than the net holds."""
    hosts = list(STAND_IN_NET.hosts())
    if len(containers) > len(hosts):
        return None
    return {c: str(ip) for c, ip in zip(sorted(containers), hosts)}


def addresses_only(before: str, after: str) -> list[tuple[str, str, str, int]] | None:
    """(backend, server, address, port) of each server whose address is all that differs between haproxy.cfg
    `before` and `after`, or None when anything else differs (a port, a server added, any other line)."""
    changed = changed_lines(before, after)
    if changed is None:
        return None
    out = []
    for section, a, b in changed:
        head, found = section.split(), _address_delta(a, b)
        if len(head) != 2 or head[0] != "backend" or found is None:
            return None
        out.append((head[1], *found))
    return out


def _address_delta(before: str, after: str) -> tuple[str, str, int] | None:
    """(server, new address, port) when two `server` lines differ only in the address of `ADDRESS:PORT`."""
    old, new = before.split(), after.split()
    if len(old) < 3 or len(old) != len(new) or old[0] != "server" or new[0] != "server" \
            or old[:2] + old[3:] != new[:2] + new[3:]:
        return None
    (_, old_port), (address, port) = old[2].rpartition(":")[::2], new[2].rpartition(":")[::2]
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return None
    if old_port != port or not port.isdigit():
        return None
    return new[1], address, int(port)


# --- the runtime state, read at plan time ---------------------------------------------------------

SHOW_SERVERS_STATE = "show servers state"
# srv_admin_state's bits (HAProxy's SRV_ADMF_*): what `set server B/S state maint|drain` sets by hand.  The
# others (maintenance inherited from a tracked server, `disabled` in haproxy.cfg, DNS) are not the runtime
# API's doing.
FORCED_MAINT, FORCED_DRAIN = 0x01, 0x08
_STATE_COLUMNS = ("be_name", "srv_name", "srv_admin_state", "srv_uweight")


@dataclass(frozen=True)
class ServerState:
    """One server's line of `show servers state`, the parts plan compares with lab.yaml."""

    state: str  # ready, drain or maint: the admin state set through the runtime API
    weight: int  # srv_uweight: the weight now (`set weight` changes it; haproxy.cfg's is srv_iweight)


def parse_servers_state(text: str) -> dict[tuple[str, str], ServerState]:
    """`show servers state` (format 1: a version line, a `# ` header, a line per server) as
    {(backend, server): ServerState}; ValueError naming what is wrong when it is not that."""
    lines = text.splitlines()
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise ValueError("HAProxy's `show servers state` answered: " + (" ".join(lines[:2])[:200] or "nothing"))
    header = lines[1][2:].split()
    missing = [c for c in _STATE_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"HAProxy's `show servers state` has no {', '.join(missing)} column")
    at = {c: header.index(c) for c in _STATE_COLUMNS}
    out = {}
    for line in lines[2:]:
        words = line.split()
        if not words:
            continue
        if len(words) != len(header) or not all(words[at[c]].isdigit() for c in _STATE_COLUMNS[2:]):
            raise ValueError(f"HAProxy's `show servers state` has a line it does not describe: {line[:200]!r}")
        admin = int(words[at["srv_admin_state"]])
        state = "maint" if admin & FORCED_MAINT else "drain" if admin & FORCED_DRAIN else "ready"
        out[(words[at["be_name"]], words[at["srv_name"]])] = ServerState(state, int(words[at["srv_uweight"]]))
    return out

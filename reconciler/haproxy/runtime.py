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
SHOW_INFO = "show info"
SERVICE = "haproxy"  # HAProxy's systemd unit
RELOAD = ["systemctl", "reload", "--", SERVICE]  # where the runtime API cannot: haproxy.cfg, hitless


def worker_pid(info: str) -> int | None:
    """The `Pid:` line of `show info`: the worker that answered, which a reload replaces."""
    for line in info.splitlines():
        name, _, value = line.partition(":")
        if name == "Pid" and value.strip().isdigit():
            return int(value)
    return None


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


# --- haproxy.cfg's server lines, compared: what the runtime API can make live without a reload ----------

ADD, DEL, ADDR = "add", "del", "addr"  # a Delta's field beyond RUNTIME_FIELDS
# HAProxy adds a server at runtime only to a backend whose algorithm is dynamic (`source` hashes statically).
DYNAMIC_BALANCE = ("roundrobin", "leastconn")
WORD = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")  # a server line's word that may reach `add server`


@dataclass(frozen=True)
class Delta:
    """A server's change between two haproxy.cfg texts that HAProxy's runtime API makes live."""

    backend: str
    server: str
    field: str  # weight, maxconn, addr (value: the new IPv4), add (value: the line's words after the name), del
    value: int | str = 0


@dataclass(frozen=True)
class _Layout:
    others: list[str]  # every line but the backends' server lines
    servers: dict[str, dict[str, list[str]]]  # backend -> server -> the words after its name, in file order
    balance: dict[str, str]  # backend -> its algorithm


def _layout(text: str) -> _Layout | None:
    """haproxy.cfg as its server lines and the rest; None when a backend names a server twice."""
    others: list[str] = []
    servers: dict[str, dict[str, list[str]]] = {}
    balance: dict[str, str] = {}
    backend = ""
    for line in text.splitlines():
        words = line.split()
        if not line.startswith((" ", "\t")):
            backend = words[1] if len(words) == 2 and words[0] == "backend" else ""
        if backend and len(words) >= 3 and words[0] == "server":
            if words[1] in servers.setdefault(backend, {}):
                return None
            servers[backend][words[1]] = words[2:]
            continue
        if backend and len(words) == 2 and words[0] == "balance":
            balance[backend] = words[1]
        others.append(line)
    return _Layout(others, servers, balance)


def server_deltas(before: str, after: str) -> list[Delta] | None:
    """What takes a running HAProxy from haproxy.cfg `before` to `after` through the runtime API: servers
    removed, servers' addresses, weights and maxconn, servers added (per backend, in that order); None when
    anything else differs (a reload is needed): another line, a port, a server's other words, the order
    of the servers both have, a server added to a backend whose algorithm is not dynamic."""
    old, new = _layout(before), _layout(after)
    if old is None or new is None or old.others != new.others:
        return None
    out: list[Delta] = []
    for backend in dict.fromkeys([*old.servers, *new.servers]):
        was, now = old.servers.get(backend, {}), new.servers.get(backend, {})
        kept = [name for name in was if name in now]
        if kept != [name for name in now if name in was]:
            return None  # reordered: the runtime API cannot
        out += [Delta(backend, name, DEL) for name in was if name not in now]
        for name in kept:
            found = _line_delta(backend, name, was[name], now[name])
            if found is None:
                return None
            out += found
        added = [name for name in now if name not in was]
        if added and new.balance.get(backend) not in DYNAMIC_BALANCE:
            return None
        for name in added:
            if not _addable(now[name]):
                return None
            out.append(Delta(backend, name, ADD, " ".join(now[name])))
    return out


def _line_delta(backend: str, name: str, before: list[str], after: list[str]) -> list[Delta] | None:
    (old_host, old_port), (host, port) = before[0].rpartition(":")[::2], after[0].rpartition(":")[::2]
    (old_rest, old_fields), (new_rest, new_fields) = _runtime_words(before[1:]), _runtime_words(after[1:])
    if old_port != port or old_rest != new_rest or set(old_fields) - set(new_fields) - {"weight"}:
        return None  # a port, another word, or a maxconn dropped (the runtime API has no "no maxconn")
    out = []
    if host != old_host:
        if not _ipv4(host):
            return None
        out.append(Delta(backend, name, ADDR, host))
    defaults = {"weight": 1}  # HAProxy's default weight
    for f in RUNTIME_FIELDS:
        if new_fields.get(f, defaults.get(f)) != old_fields.get(f, defaults.get(f)):
            out.append(Delta(backend, name, f, new_fields.get(f, defaults.get(f, 0))))
    return out


def _runtime_words(words: list[str]) -> tuple[list[str], dict[str, int]]:
    """A server line's words but weight and maxconn, and those two."""
    rest, fields, i = [], {}, 0
    while i < len(words):
        if words[i] in RUNTIME_FIELDS and i + 1 < len(words) and words[i + 1].isdigit():
            fields[words[i]] = int(words[i + 1])
            i += 2
        else:
            rest.append(words[i])
            i += 1
    return rest, fields


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _addable(words: list[str]) -> bool:
    host, _, port = words[0].rpartition(":")
    return _ipv4(host) and port.isdigit() and all(WORD.fullmatch(w) for w in words)


def server_words(config: str, backend: str, server: str) -> list[str] | None:
    """The words after a server's name on its line of haproxy.cfg; None when it has no such line."""
    layout = _layout(config)
    return None if layout is None else layout.servers.get(backend, {}).get(server)


def add_server(backend: str, server: str, words: list[str]) -> str:
    """The command that adds a server as its haproxy.cfg line says (each word checked: data, never syntax)."""
    if not _addable(words):
        raise UnsafeValue(f"server line {' '.join(words)[:120]!r} is not one `add server` may take")
    return f"add server {_server(backend, server)} {' '.join(words)}"


def enable_health(backend: str, server: str) -> str:
    return f"enable health {_server(backend, server)}"


def del_server(backend: str, server: str) -> str:
    return f"del server {_server(backend, server)}"


# Where plan does not know a container's new address yet (a replace), it renders haproxy.cfg with a stand-in
# from TEST-NET-1 (RFC 5737: documentation only, never a lab's) and compares that with the live file.
STAND_IN_NET = ipaddress.IPv4Network("192.0.2.0/24")


def stand_ins(containers: list[str]) -> dict[str, str] | None:
    """A stand-in address for each container, in name order; None when there are more than the net holds."""
    hosts = list(STAND_IN_NET.hosts())
    if len(containers) > len(hosts):
        return None
    return {c: str(ip) for c, ip in zip(sorted(containers), hosts)}


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

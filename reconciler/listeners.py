"""Whether each proxy device of a running container listens where LXD says it does.

LXD starts a proxy device's `forkproxy` after the container itself, from the same start operation.  A
daemon killed between the two leaves the container running with no listener, and nothing in LXD's API
says so; a `forkproxy` killed later (by hand, by the OOM killer) leaves the same.  Where LXD runs in this
process's own network namespace, the host's socket tables (/proc/net) show it: a proxy device whose host
address nobody listens on is drift, put right by plugging the device in again.

Only what listens on the host is judged: a `bind=instance` device listens inside the container, a
`nat=true` one has no process, and a unix socket is not in these tables.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

UNHEARD_KEY = "reconciler.unheard"  # written on a raw instance: its proxy devices nobody listens for
TABLES = {"tcp": ("/proc/net/tcp", "/proc/net/tcp6"), "udp": ("/proc/net/udp", "/proc/net/udp6")}
BOUND = {"tcp": "0A", "udp": "07"}  # LISTEN; an unconnected UDP socket
MAX_PORTS = 64  # of one device: a wider range is judged by its first ports
MAX_TABLE_BYTES = 16 << 20

Socket = tuple[str, str, int]  # (tcp or udp, address, port)
WILDCARDS = ("0.0.0.0", "::")


def daemon_shares_network(socket_path: str) -> bool:
    """The daemon behind this unix socket runs in this process's network namespace (its peer's credentials
    name its pid).  False wherever that cannot be told: another pid namespace, no right to read its
    namespace (not root), no answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(socket_path)
            credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", credentials)[0]
        return pid > 0 and os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return False


def host_sockets(read: Callable[[str], str] | None = None) -> set[Socket]:
    """Every TCP socket listening, and every UDP socket bound, in this network namespace."""
    read = read or _read_table
    found: set[Socket] = set()
    for proto, paths in TABLES.items():
        for path in paths:
            try:
                found |= parse_table(proto, read(path))
            except OSError:
                continue  # no IPv6 in this kernel
    return found


def _read_table(path: str) -> str:
    with Path(path).open("rb") as table:
        return table.read(MAX_TABLE_BYTES).decode("ascii", "replace")


def parse_table(proto: str, text: str) -> set[Socket]:
    """/proc/net/{tcp,udp}[6]: `sl local_address rem_address st ...`, the local address in hex, each 32-bit
    word of it in the kernel's (little-endian) byte order."""
    out: set[Socket] = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 4 or cols[3] != BOUND[proto] or ":" not in cols[1]:
            continue
        address, _, port = cols[1].partition(":")
        try:
            out.add((proto, _address(address), int(port, 16)))
        except ValueError:
            continue
    return out


def _address(hexed: str) -> str:
    if len(hexed) not in (8, 32):
        raise ValueError(hexed)
    raw = b"".join(bytes.fromhex(hexed[i:i + 8])[::-1] for i in range(0, len(hexed), 8))
    return str(ipaddress.ip_address(raw))


def host_listens(listen: str) -> tuple[str, str, list[int]] | None:
    """(tcp or udp, address, ports) of a proxy device's `listen` (`tcp:127.0.0.1:80`, `udp:[::1]:53-55`,
    `tcp:0.0.0.0:80,443`), or None for what the socket tables cannot show (unix sockets, a name)."""
    proto, sep, rest = listen.partition(":")
    host, sep2, ports = rest.rpartition(":")
    if proto not in TABLES or not sep or not sep2:
        return None
    try:
        address = str(ipaddress.ip_address(host.strip("[]")))
        return proto, address, _ports(ports)
    except ValueError:
        return None


def _ports(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        low = int(first)
        high = int(last) if last else low
        out.extend(range(low, min(high, low + MAX_PORTS) + 1))
        if len(out) >= MAX_PORTS:
            break
    return out[:MAX_PORTS]


def unheard(devices: Mapping[str, Mapping[str, Any]], sockets: set[Socket]) -> list[str]:
    """The proxy devices (by name) of which some host port has nobody listening."""
    out = []
    for name, device in sorted(devices.items()):
        if device.get("type") != "proxy" or device.get("bind", "host") != "host" \
                or str(device.get("nat", "false")).lower() == "true":
            continue
        listens = host_listens(str(device.get("listen", "")))
        if listens is None:
            continue
        proto, address, ports = listens
        if any(not _heard(sockets, proto, address, port) for port in ports):
            out.append(name)
    return out


def _heard(sockets: set[Socket], proto: str, address: str, port: int) -> bool:
    return any((proto, a, port) in sockets for a in (address, *WILDCARDS))


def mark(instances: Iterable[dict[str, Any]], sockets: set[Socket], member: str = "") -> None:
    """Write on each running instance (LXD's JSON) its proxy devices nobody listens for; `member`: this
    cluster member's name (an instance on another member listens on another machine)."""
    for raw in instances:
        if raw.get("status") == "Running" and (not member or raw.get("location") == member):
            missing = unheard(raw.get("expanded_devices") or {}, sockets)
            if missing:
                raw[UNHEARD_KEY] = missing

"""One DNS question over UDP, to learn whether a DNS server answers at all (a bridge's dnsmasq after LXD
restarted it).  Any answer with the question's ID counts, whatever its code: the server is serving."""

from __future__ import annotations

import os
import socket
import struct
import time

ATTEMPT = 0.5  # seconds one question waits for its answer


def question(ident: int, name: str) -> bytes:
    """A standard query with recursion desired, for the A record of `name`."""
    labels = b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.strip(".").split(".") if part)
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def answers(server: str, name: str, seconds: float, port: int = 53) -> bool:
    """Whether `server` answers a question for `name` within `seconds` (asked again every ATTEMPT)."""
    deadline = time.monotonic() + seconds
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    while True:
        ident = int.from_bytes(os.urandom(2), "big")
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(ATTEMPT)
            try:
                sock.sendto(question(ident, name), (server, port))
                while True:
                    reply = sock.recv(512)
                    if len(reply) >= 2 and int.from_bytes(reply[:2], "big") == ident:
                        return True
            except OSError:  # no answer in time, or refused (nothing listening yet)
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(ATTEMPT, max(0.0, deadline - time.monotonic())))

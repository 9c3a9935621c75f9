"""The DNS probe a bridge's step waits on (kinds/network.py): any answer to its question, and only that,
means the server is serving; bounded when nothing answers.  A responder of our own on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from reconciler import dns
from reconciler.kinds.network import dnsmasq_address


@contextmanager
def responder(reply_id: bool) -> Iterator[tuple[int, list[bytes]]]:
    """A UDP server on 127.0.0.1 that answers each question with its ID (or with another ID)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    asked: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except OSError:
                continue
            asked.append(data)
            ident = data[:2] if reply_id else bytes([data[0] ^ 0xFF, data[1]])
            sock.sendto(ident + b"\x81\x83" + data[4:], peer)  # a response: NXDOMAIN

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], asked
    finally:
        done.set()
        thread.join()
        sock.close()


def test_a_question_is_a_standard_query_for_the_names_a_record():
    packet = dns.question(0x1234, "_gateway.lxd")
    assert struct.unpack("!HHHHHH", packet[:12]) == (0x1234, 0x0100, 1, 0, 0, 0)
    assert packet[12:] == b"\x08_gateway\x03lxd\x00\x00\x01\x00\x01"


def test_a_server_that_answers_the_question_is_serving():
    with responder(reply_id=True) as (port, asked):
        assert dns.answers("127.0.0.1", "_gateway.lxd", 5, port=port)
    assert len(asked) == 1 and asked[0][12:] == b"\x08_gateway\x03lxd\x00\x00\x01\x00\x01"


def test_an_answer_to_another_question_is_not_an_answer_and_the_wait_is_bounded():
    with responder(reply_id=False) as (port, asked):
        started = time.monotonic()
        assert not dns.answers("127.0.0.1", "_gateway.lxd", 1, port=port)
        assert time.monotonic() - started < 1 + 2 * dns.ATTEMPT
    assert len(asked) >= 2  # asked again until the deadline


def test_nothing_listening_is_not_serving():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert not dns.answers("127.0.0.1", "_gateway.lxd", 0.5, port=port)


def test_a_bridge_is_asked_on_its_ipv4_address_unless_it_has_no_dns():
    assert dnsmasq_address({"ipv4.address": "10.203.62.1/24"}) == "10.203.62.1"
    assert dnsmasq_address({"ipv4.address": "10.203.62.1/24", "dns.mode": "none"}) is None
    assert dnsmasq_address({"ipv4.address": "none"}) is None
    assert dnsmasq_address({}) is None

"""A proxy device nobody listens for (listeners.py): the host's socket tables read on the real kernel, the
plan's update that plugs the device in again, and that update's calls.  No LXD: what LXD does with those
calls is in test_forward_lxd.py's real-daemon test."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fake_lxd import FakeLxd
from test_diff_plan import instance, live, state
from test_scheduler import run

from reconciler import listeners
from reconciler.diff import diff_states
from reconciler.kinds import instance as instance_kind
from reconciler.plan import Action, Code, make_plan
from reconciler.render import plan_text
from reconciler.state import Resource

HTTP = {"type": "proxy", "listen": "tcp:127.0.0.1:18530", "connect": "tcp:127.0.0.1:80"}


def test_a_listening_tcp_socket_and_a_bound_udp_socket_are_in_the_host_tables():
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        bound_only = listeners.host_sockets()
        tcp.listen()
        found = listeners.host_sockets()
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
    assert ("tcp", "127.0.0.1", tcp_port) in found
    assert ("tcp", "127.0.0.1", tcp_port) not in bound_only  # bound is not listening
    assert ("udp", "127.0.0.1", udp_port) in found


def test_the_tables_words_are_read_in_the_kernel_s_byte_order():
    tcp6 = ("  sl  local_address                         remote_address                        st\n"
            "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A\n"
            "   1: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 01\n")
    tcp = ("  sl  local_address rem_address   st\n   0: 0100007F:4862 00000000:0000 0A\n"
           "   1: 00000000:0016 00000000:0000 0A\n   2: garbage\n   3: 0100007F:ZZZZ 00000000:0000 0A\n")
    assert listeners.parse_table("tcp", tcp6) == {("tcp", "::1", 8080)}  # the established one is not
    assert listeners.parse_table("tcp", tcp) == {("tcp", "127.0.0.1", 18530), ("tcp", "0.0.0.0", 22)}


def test_a_proxy_device_is_heard_on_its_address_or_a_wildcard_and_only_host_listeners_are_judged():
    devices = {"http": HTTP,
               "https": {**HTTP, "listen": "tcp:127.0.0.1:18531"},
               "dns": {"type": "proxy", "listen": "udp:[::1]:53-54", "connect": "udp:127.0.0.1:53"},
               "inside": {**HTTP, "bind": "instance"}, "nat": {**HTTP, "nat": "true"},
               "unix": {**HTTP, "listen": "unix:/run/x.sock"}, "eth0": {"type": "nic", "network": "lan"}}
    heard = {("tcp", "127.0.0.1", 18530), ("tcp", "0.0.0.0", 18531), ("udp", "::1", 53)}
    assert listeners.unheard(devices, heard) == ["dns"]  # port 54 of its range has nobody
    assert listeners.host_listens("tcp:127.0.0.1:80,443-445") == ("tcp", "127.0.0.1", [80, 443, 444, 445])
    assert len(listeners.host_listens("tcp:0.0.0.0:1-65535")[2]) == listeners.MAX_PORTS  # bounded
    assert listeners.host_listens("tcp:lan.example:80") is None


def test_only_running_containers_on_this_member_are_marked():
    raw = [{"name": n, "status": s, "location": where, "expanded_devices": {"http": HTTP}}
           for n, s, where in (("up", "Running", "m1"), ("down", "Stopped", "m1"), ("away", "Running", "m2"))]
    listeners.mark(raw, set(), member="m1")
    assert [r.get(listeners.UNHEARD_KEY) for r in raw] == [["http"], None, None]


def test_this_process_shares_its_own_network_namespace_and_a_dead_socket_says_no(tmp_path: Path):
    path = str(tmp_path / "daemon.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        assert listeners.daemon_shares_network(path)  # its peer is this very process
    os.unlink(path)
    assert not listeners.daemon_shares_network(path)


def _unheard_live(**over) -> Resource:
    have = live(instance(devices={"http": HTTP}, **over))
    raw_says = instance_kind.from_lxd({"name": "web1", "status": "Running", "profiles": ["default"],
                                      "config": {}, "devices": {}, listeners.UNHEARD_KEY: ["http"]})
    return Resource(have.address, have.body, have.depends_on, meta=have.meta.with_payload(
        unheard=raw_says.meta.payload["unheard"]))


def test_a_running_container_s_unheard_proxy_device_is_an_update_that_says_why():
    [change] = diff_states(state(instance(devices={"http": HTTP})), state(_unheard_live()))
    assert change.actions == (Action.UPDATE,) and change.reasons[0].code == Code.NOT_LISTENING
    assert change.meta.payload["replug"] == ["http"]
    assert 'devices.http (tcp:127.0.0.1:18530)' in change.reasons[0].text
    assert "nobody listens on this host" in plan_text(make_plan("l", [change], {}))


def test_a_settings_drift_and_an_unheard_device_are_one_update_and_a_restart_needs_no_replug():
    want = instance(devices={"http": HTTP}, config={"user.a": "2"})
    [change] = diff_states(state(want), state(_unheard_live(config={"user.a": "1"})))
    assert change.actions == (Action.UPDATE,) and change.reasons[0].code == Code.DRIFT
    assert "differs: config" in change.reasons[0].text and "nobody listens" in change.reasons[0].text
    restarting = instance(devices={"http": HTTP, "eth0": {"type": "nic", "network": "lan"}})
    [change] = diff_states(state(restarting), state(_unheard_live()))
    assert Action.RESTART in change.actions and Action.UPDATE in change.actions
    assert "replug" not in change.meta.payload  # the restart starts every device again
    [change] = diff_states(state(instance(devices={"http": HTTP}, state="stopped")), state(_unheard_live()))
    assert change.actions == (Action.STOP,)


def test_the_replug_unplugs_the_device_behind_a_mask_then_plugs_it_in_and_puts_nothing_else():
    raw = {"name": "web1", "status": "Running", "architecture": "x86_64", "ephemeral": False,
           "profiles": ["default"], "description": "", "config": {"volatile.eth0.hwaddr": "00:16:3e:00:00:01"},
           "devices": {"http": HTTP}}
    fake = FakeLxd(objects={("instance", "web1"): dict(raw)})
    [change] = diff_states(state(instance(devices={"http": HTTP})), state(_unheard_live()))
    _, report = run([change], fake)
    assert report.ok, report.outcomes
    puts = [c.body["devices"] for c in fake.calls if c.verb == "put"]
    assert puts == [{"http": {"type": "none"}}, {"http": HTTP}]  # no settings update before: nothing drifted
    assert fake.objects[("instance", "web1")]["config"] == raw["config"]  # LXD's own keys kept (the MAC)

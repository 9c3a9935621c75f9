"""HAProxy's reload is done once the admin socket is answered by a new worker and the old one has gone
(admin_socket.reload_haproxy), with the recording stand-in of tests/fake_haproxy.py; the real HAProxy's
side is in tests/test_no_downtime.py."""

from __future__ import annotations

import pytest
from fake_haproxy import ReloadingHaproxy

from reconciler import admin_socket
from reconciler.admin_socket import reload_haproxy
from reconciler.haproxy.runtime import worker_pid

SOCKET = "/run/haproxy/admin.sock"
RELOAD = "exec systemctl reload -- haproxy"


@pytest.fixture
def no_waiting(monkeypatch):
    """Bounds of zero: a look that is not yet right is the last one."""
    monkeypatch.setattr(admin_socket, "RELOAD_TIMEOUT", 0.0)
    monkeypatch.setattr(admin_socket, "POLL", 0.0)


def test_show_info_names_the_worker_that_answered():
    assert worker_pid("Name: HAProxy\nVersion: 2.6.12\nPid: 412\nUptime_sec: 3\n") == 412
    assert worker_pid("Name: HAProxy\nPid: \n") is None
    assert worker_pid("Unknown command\n") is None
    assert worker_pid("Process_num: 1\nPid: 41x\n") is None


def test_a_reload_is_done_once_a_new_worker_answers_and_the_old_one_has_gone(monkeypatch):
    monkeypatch.setattr(admin_socket, "POLL", 0.0)
    # The old worker answers after the reload, then the new one while the old still runs, then the new alone.
    run = ReloadingHaproxy(old=7, looks=((7, True), (8, True), (8, False)))
    reload_haproxy(run, "proxyha", SOCKET)  # type: ignore[arg-type]
    assert run.said == ["ask show info", RELOAD, "ask show info", "ask show info", "alive? /proc/7",
                        "ask show info", "alive? /proc/7"]
    assert run.warnings == []


def test_a_socket_nobody_answered_before_the_reload_has_no_old_worker_to_wait_out():
    run = ReloadingHaproxy(old=None)
    reload_haproxy(run, "proxyha", SOCKET)  # type: ignore[arg-type]
    assert run.said == ["ask show info", RELOAD]


def test_a_socket_still_answered_by_the_old_worker_at_the_bound_fails_the_step_naming_it(no_waiting):
    for look in ((7, True), (None, True)):  # the old worker answers, or nobody does
        run = ReloadingHaproxy(old=7, looks=(look,))
        with pytest.raises(RuntimeError, match=r"admin socket /run/haproxy/admin.sock is still answered by its"
                           r" old worker \(pid 7\) 0s after the reload: no new worker took over; its log:\n"
                           r"  \[ALERT\]    \(412\) : Starting frontend extra: cannot bind socket$"):
            reload_haproxy(run, "proxyha", SOCKET)  # type: ignore[arg-type]
        assert run.said[-1] == "log of haproxy"


def test_an_old_worker_still_finishing_its_connections_at_the_bound_is_said_not_fatal(no_waiting):
    run = ReloadingHaproxy(old=7, looks=((8, True),))
    reload_haproxy(run, "proxyha", SOCKET)  # type: ignore[arg-type]
    assert run.said[-2:] == ["ask show info", "alive? /proc/7"]
    assert run.warnings == ["proxyha: HAProxy's old worker (pid 7) still runs 0s after the reload, finishing"
                            " its connections; worker 8 answers"]


def test_the_haproxy_service_reloads_through_its_admin_socket_and_any_other_service_plainly(monkeypatch):
    from reconciler.address import service
    from reconciler.kinds import service as service_kind
    from reconciler.plan import Action, Change, Code, Reason
    from reconciler.provision import ServiceSpec

    monkeypatch.setattr(service_kind, "state", lambda run, c, n, p: {"enabled": True, "running": True})
    spec = ServiceSpec(on_change="reload")
    for name, meta, said in (
            ("haproxy", service_kind.meta(spec, SOCKET), ["ask show info", RELOAD, "ask show info", "alive? /proc/1"]),
            ("haproxy", service_kind.meta(spec), [RELOAD]),  # a plan saved before the socket was known
            ("apache2", service_kind.meta(spec), ["exec systemctl reload -- apache2"])):
        change = Change(service("proxyha", name), (Action.RELOAD,), (Reason(Code.WATCHED_FILE, "x changed"),),
                        None, service_kind.body(spec), meta=meta)
        run = ReloadingHaproxy(old=1, looks=((2, False),))
        assert service_kind.apply(run, change, Action.RELOAD) is True  # type: ignore[arg-type]
        assert run.said == said, name



def test_a_haproxy_reload_that_cannot_bind_its_ports_says_so_with_its_log_before_any_worker_is_awaited(monkeypatch):
    from reconciler.address import service
    from reconciler.kinds import service as service_kind
    from reconciler.plan import Action, Change, Code, Reason
    from reconciler.provision import ServiceSpec

    monkeypatch.setattr(service_kind, "state", lambda run, c, n, p: {"enabled": True, "running": True, "listening": [80]})
    monkeypatch.setattr(service_kind, "PORT_TIMEOUT", 0.0)
    spec = ServiceSpec(on_change="reload", listens=[80, 81])
    change = Change(service("proxyha", "haproxy"), (Action.RELOAD,), (Reason(Code.WATCHED_FILE, "x changed"),),
                    None, service_kind.body(spec), meta=service_kind.meta(spec, SOCKET))
    run = ReloadingHaproxy(old=1, looks=((1, True),))  # the new worker could not bind: the old one stays
    with pytest.raises(RuntimeError, match=r"^haproxy does not hold port\(s\) 80, 81 after 0s; its log:\n"
                       r"  \[ALERT\]    \(412\) : Starting frontend extra: cannot bind socket$"):
        service_kind.apply(run, change, Action.RELOAD)  # type: ignore[arg-type]
    assert run.said == ["ask show info", RELOAD, "log of haproxy"]


def test_the_shipped_lab_gives_its_haproxy_service_the_admin_socket_and_no_other_service():
    from pathlib import Path

    from reconciler.address import Kind
    from reconciler.desired import desired_state
    from reconciler.spec import load_lab
    root = Path(__file__).resolve().parent.parent
    lab = load_lab(root / "lab.yaml", {})[0]
    services = {str(r.address): r.meta.payload.get("admin_socket") for r in desired_state(lab, root, {}, {}).values()
                if r.address.kind == Kind.SERVICE}
    assert services == {"service.proxyha:haproxy": lab.haproxy["proxyha"].global_.stats_socket,
                        "service.proxyha:rsyslog": None, "service.proxyha:apache2": None,
                        "service.web1:apache2": None, "service.web2:apache2": None}
